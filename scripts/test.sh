#!/usr/bin/env bash
# The whole suite (both tiers) under jax, then the fast tier again under
# tensorflow and torch, less the tests marked `once` (they do not depend on the
# backend: they set their own, or fail before anything is trained). The fast
# tier trains each model family, resumes a run to equality and records every
# diagnostic under each backend; the slow tier's longer runs, signals and
# scripts run once, which keeps CI inside its time.
# The datasets: $KZERO_DATA_DIR, else ../shared/data beside the checkout where
# it exists, else the tests download MNIST and CIFAR-10 once into
# ~/.cache/kzero/data ($KZERO_CACHE_DIR).
set -euo pipefail
# --durations names the slowest tests in the log, where CI's time limit is watched.
cd "$(dirname "$0")/.."
shared="$(cd .. && pwd)/shared/data"
if [ -z "${KZERO_DATA_DIR:-}" ] && [ -f "$shared/mnist.npz" ]; then
  export KZERO_DATA_DIR="$shared"
fi
# Two pytest workers (pytest-xdist; $KZERO_TEST_WORKERS sets how many, 0 for none):
# much of a test's time is compiling and starting processes, which one core does
# while the other trains. worksteal evens out tests of very different lengths.
workers=(-n "${KZERO_TEST_WORKERS:-2}" --dist worksteal)
# setup.cfg leaves the slow tier out of a bare pytest; a later -m takes it back in.
KERAS_BACKEND=jax python -m pytest -q --durations=25 "${workers[@]}" -m "slow or not slow" "$@"
for backend in tensorflow torch; do
  KERAS_BACKEND=$backend python -m pytest -q --durations=25 "${workers[@]}" \
    -m "not once and not slow" "$@"
done
