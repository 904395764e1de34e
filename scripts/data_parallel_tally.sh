#!/usr/bin/env bash
# How often a data_parallel run on two virtual jax CPU devices finishes:
#
#   bash scripts/data_parallel_tally.sh [TRIES] [DATA_DIR]
#
# Runs the MNIST FNN for one epoch with --distribution=data_parallel TRIES
# times (default 20), one line per try (exit status, seconds, load average),
# then the count that exited 0. docs/running.md gives the tally it measured.
set -uo pipefail
cd "$(dirname "$0")/.."
tries=${1:-20}
data=()
if [ -n "${2:-${KZERO_DATA_DIR:-}}" ]; then data=("--data_dir=${2:-$KZERO_DATA_DIR}"); fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
passed=0
for i in $(seq 1 "$tries"); do
  start=$(date +%s)
  XLA_FLAGS=--xla_force_host_platform_device_count=2 KERAS_BACKEND=jax \
    python -m kzero.run --flagfile=flags/mnist_fnn.flags --epochs=1 --runs=1 --scheme=lecun \
    --distribution=data_parallel --overwrite --output_dir="$out" "${data[@]}" \
    >"$out/log.txt" 2>&1
  status=$?
  [ $status = 0 ] && passed=$((passed + 1))
  echo "try $i: exit $status after $(( $(date +%s) - start )) s, load $(cut -d' ' -f1 /proc/loadavg)"
done
echo "data_parallel: $passed of $tries tries finished"
[ $passed = "$tries" ]
