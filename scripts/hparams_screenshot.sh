#!/usr/bin/env bash
# TensorBoard's HParams tab over a small 3-variant grid, as a browser shows it:
# trains the MNIST FNN grid (lecun, zero_normal, zero_uniform; 2 seeds, 2 epochs
# on 4096 examples), serves it on 127.0.0.1 and screenshots the tab with headless
# Chromium (Debian: apt-get install chromium-headless-shell).
#   bash scripts/hparams_screenshot.sh [OUT.png] [DATA_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-docs/hparams.png}")
data_dir=${2:-${KZERO_DATA_DIR:-../shared/data}}
logdir=$(mktemp -d)
trap 'kill "${tensorboard_pid:-}" 2>/dev/null || true; rm -rf "$logdir"' EXIT
KERAS_BACKEND=${KERAS_BACKEND:-jax} python -m kzero.run --flagfile=mnist_fnn --epochs=2 --runs=2 \
  --max_examples=4096 --data_dir="$data_dir" --output_dir="$logdir" --nosave_model
port=6123
tensorboard --logdir "$logdir" --host 127.0.0.1 --port "$port" >"$logdir/tensorboard.log" 2>&1 &
tensorboard_pid=$!
for _ in $(seq 60); do
  curl -fs "http://127.0.0.1:$port/data/environment" >/dev/null && break
  sleep 1
done
chromium-headless-shell --no-sandbox --disable-gpu --hide-scrollbars --window-size=2560,820 \
  --virtual-time-budget=20000 --screenshot="$out" "http://127.0.0.1:$port/#hparams"
echo "hparams_screenshot: $out"
