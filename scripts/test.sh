#!/usr/bin/env bash
# The whole suite under jax, then the tests marked `backends` under tensorflow
# and torch, so every CI run exercises all three backends.
# Needs the datasets: KZERO_DATA_DIR (default ../shared/data beside the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
export KZERO_DATA_DIR="${KZERO_DATA_DIR:-$(cd .. && pwd)/shared/data}"
KERAS_BACKEND=jax python -m pytest -q "$@"
for backend in tensorflow torch; do
  KERAS_BACKEND=$backend python -m pytest -q -m backends "$@"
done
