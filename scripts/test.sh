#!/usr/bin/env bash
# The whole suite under jax, then again under tensorflow and torch, less the
# tests marked `once` (they do not depend on the backend: they set their own,
# or fail before anything is trained), which keeps CI well inside its time.
# Needs the datasets: KZERO_DATA_DIR (default ../shared/data beside the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
export KZERO_DATA_DIR="${KZERO_DATA_DIR:-$(cd .. && pwd)/shared/data}"
KERAS_BACKEND=jax python -m pytest -q "$@"
for backend in tensorflow torch; do
  KERAS_BACKEND=$backend python -m pytest -q -m "not once" "$@"
done
