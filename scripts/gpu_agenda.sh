#!/usr/bin/env bash
# What a lent GPU runs first, as is, in about 8 minutes, in order of value:
#   1. ResNet-50 seconds per epoch under jax, torch and tensorflow, in float32
#      and mixed_bfloat16: the second (steady) epoch of a 6,400-image subset,
#      test evaluation included, and its projection to CIFAR-10's 50,000;
#   2. the first-steps census of ResNet-50 (flags/census_resnet50.flags, 30
#      steps): all-layer zero_normal under each backend, zero_normal_bn and the
#      paper_code scope under jax;
#   3. Figure 11 (flags/cifar_resnet50.flags and its paper_code twin) with the
#      time left, as groups: finished epochs are kept, and the report marks a
#      figure with fewer epochs than the paper's as partial.
# Each item runs under `timeout`, so one that hangs costs only its own share.
#
#   bash scripts/gpu_agenda.sh [--smoke] [OUTPUT_DIR]
#
# OUTPUT_DIR defaults to runs/gpu_agenda. Results: speed.jsonl (one JSON line per
# backend and precision), census_resnet50*/ and cifar_resnet50/ run directories,
# and one log per item; `python -m kzero.report OUTPUT_DIR` reports them.
# --smoke: tiny sizes (a few examples, a few steps; the CIFAR-10 logistic
# regression for the timings and the figure, the CIFAR-10 CNN, whose batch norms
# erase biases, for the census) so that a CPU tests the script itself in a
# couple of minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
smoke=0
if [ "${1:-}" = "--smoke" ]; then smoke=1; shift; fi
out="${1:-runs/gpu_agenda}"
mkdir -p "$out"
data=()
if [ -n "${KZERO_DATA_DIR:-}" ]; then data=("--data_dir=$KZERO_DATA_DIR"); fi

if [ $smoke = 1 ]; then
  model=logreg; census_model=cnn; speed_examples=64; batch=16; census_steps=2; census_examples=32
  figure_epochs=1; figure_examples=64; budget=(600 500 300)
else
  model=resnet50; census_model=resnet50; speed_examples=6400; batch=128; census_steps=30; census_examples=
  figure_epochs=30; figure_examples=; budget=(120 150 210)
fi
start=$(date +%s)

failures=0
kzero_run() {  # seconds, backend, log name, model, then the runner's flags
  local seconds=$1 backend=$2 log=$3 item_model=$4
  shift 4
  # SIGTERM stops a run at its next batch; its finished epochs are kept.
  KERAS_BACKEND=$backend timeout --signal=TERM --kill-after=30 "$seconds" \
    python -m kzero.run "$@" --model="$item_model" --batch_size=$batch "${data[@]}" \
    >>"$out/$log.log" 2>&1
  local status=$?
  echo "gpu_agenda: $log ($backend) exit $status after $(( $(date +%s) - start )) s"
  # On a GPU a time-out is the plan; in the smoke test every item must finish.
  if [ $status != 0 ] && { [ $smoke = 1 ] || [ $status != 124 ]; }; then
    failures=$((failures + 1))
  fi
}

# 1. Seconds per epoch: the second (steady) epoch of a subset, scaled to 50,000.
: >"$out/speed.jsonl"
share=$(( ${budget[0]} / 6 ))
for backend in jax torch tensorflow; do
  for precision in float32 mixed_bfloat16; do
    name="speed_${backend}_${precision}"
    kzero_run "$share" "$backend" speed "$model" --flagfile=flags/cifar_resnet50.flags \
      --experiment="$name" --output_dir="$out" --scheme=lecun --runs=1 --epochs=2 \
      --max_examples=$speed_examples --precision=$precision --parallel_runs=1 \
      --norecord_gradients --norecord_activations --norecord_symmetry --nosave_model
    python - "$out" "$name" "$backend" "$precision" "$speed_examples" "$model" \
      >>"$out/speed.jsonl" <<'PY'
import csv, glob, json, sys
out, name, backend, precision, examples, model = sys.argv[1:]
rows = [row for path in glob.glob(f"{out}/{name}/*/seed_0/metrics.csv")
        for row in csv.DictReader(open(path))]
steady = [float(row["seconds"]) for row in rows if row["epoch"] == "2"]
# The subset's epoch trains on `examples` images and tests on as many; scaled
# to 50,000 it counts the test images 7.8 times where a full epoch tests
# 10,000, so the projection is an upper bound (by a quarter at most, with a
# test image costing a third of a training one).
print(json.dumps({"model": model, "backend": backend, "precision": precision,
                  "examples": int(examples),
                  "subset_epoch_seconds": steady[0] if steady else None,
                  "projected_epoch_seconds_at_most": steady[0] * 50000 / int(examples)
                  if steady else None}))
PY
  done
done

# 2. The first-steps census of ResNet-50.
census=(--flagfile=flags/census_resnet50.flags --output_dir="$out" --runs=1
        --max_steps=$census_steps --grad_first_steps=$census_steps --parallel_runs=1)
if [ -n "$census_examples" ]; then census+=(--max_examples=$census_examples); fi
share=$(( ${budget[1]} / 5 ))
for backend in jax torch tensorflow; do
  kzero_run "$share" "$backend" census "$census_model" "${census[@]}" --scheme=zero_normal \
    --experiment="census_resnet50_$backend"
done
kzero_run "$share" jax census "$census_model" "${census[@]}" --scheme=zero_normal_bn \
  --experiment=census_resnet50_jax
kzero_run "$share" jax census "$census_model" "${census[@]}" --scheme=zero_normal,zero_normal_bn \
  --init_scope=paper_code --experiment=census_resnet50_jax

# 3. Figure 11 with what is left: the all-layer rows and the batch norm
# variant as groups, then the paper_code scope.
figure=(--output_dir="$out" --epochs=$figure_epochs --parallel_runs=5 --norecord_activations)
if [ -n "$figure_examples" ]; then figure+=(--max_examples=$figure_examples --runs=1); fi
kzero_run "${budget[2]}" jax figure11 "$model" --flagfile=flags/cifar_resnet50.flags \
  --scheme=lecun,zero_normal,zero_normal_bn "${figure[@]}"
echo "gpu_agenda: done in $(( $(date +%s) - start )) s, $failures item(s) failed; results in $out"
[ $failures = 0 ]
