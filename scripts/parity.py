"""Backend parity: the same MNIST FNN grid under every Keras backend.

    python scripts/parity.py [--data_dir=DIR] [--output_dir=DIR]
    python scripts/parity.py --paired --epochs=1 [--data_dir=DIR]

Trains `lecun` and `zero_normal`, 3 seeds x 3 epochs, once per backend (each
in its own `python -m kzero.run` process, since a process has one backend).

By default it compares each init's mean final test accuracy across backends
and exits with 1 when two backends differ by more than --tolerance (0.5
points). With --paired it compares run for run: a seed draws the same initial
weights and sees the same batches under every backend, so each seed's
epoch-1 loss and accuracy may differ across backends only by the growth of
float rounding (convolution algorithms, reduction order); it exits with 1
when a spread exceeds --loss_tolerance or --accuracy_tolerance. Prints a
Markdown table and one JSON line.
"""

import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile

from absl import app, flags

flags.DEFINE_list("backends", ["jax", "tensorflow", "torch"], "Keras backends to compare.")
flags.DEFINE_list("schemes", ["lecun", "zero_normal"], "Init schemes.")
flags.DEFINE_alias("inits", "schemes")
flags.DEFINE_integer("runs", 3, "Seeds per init.")
flags.DEFINE_integer("epochs", 3, "Epochs per run.")
flags.DEFINE_float("tolerance", 0.005, "Largest allowed spread of the backends' means.")
flags.DEFINE_integer("max_examples", None, "First N examples of each split (quick tries).")
flags.DEFINE_boolean("paired", False, "Compare each seed's epoch-1 metrics across backends.")
# From a measurement on this CPU (docs/testing.md, "Backend parity"): 3 seeds x 2 inits of the MNIST
# FNN, epoch 1, agreed to 6.2e-7 in relative loss and exactly in accuracy across the backends.
flags.DEFINE_float("loss_tolerance", 1e-5, "--paired: largest allowed spread across backends "
                   "of a seed's epoch-1 losses, relative to their mean.")
flags.DEFINE_float("accuracy_tolerance", 3e-4, "--paired: largest allowed spread across "
                   "backends of a seed's epoch-1 accuracies (3e-4: 3 of MNIST's 10,000 test "
                   "images).")
flags.DEFINE_string("data_dir", None, "Directory holding mnist.npz (default: "
                    "$KZERO_DATA_DIR, else tensorflow-datasets).")
flags.DEFINE_string("output_dir", None, "Keep the runs here (default: a temporary dir).")
FLAGS = flags.FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_grid(backend, output_dir):
    command = [sys.executable, "-m", "kzero.run", "--experiment=parity", "--dataset=mnist",
               "--model=fnn", f"--scheme={','.join(FLAGS.schemes)}", f"--runs={FLAGS.runs}",
               f"--epochs={FLAGS.epochs}", f"--output_dir={output_dir}",
               "--norecord_gradients", "--norecord_symmetry", "--nosave_model"]
    if FLAGS.data_dir:
        command.append(f"--data_dir={FLAGS.data_dir}")
    if FLAGS.max_examples:
        command.append(f"--max_examples={FLAGS.max_examples}")
    print(f"parity: {backend}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    env = dict(os.environ, KERAS_BACKEND=backend)
    subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)


def run_dir(output_dir, init, seed):
    # The variant is fnn_<init>, with _x1 for the schemes that take a bias scale.
    experiment = os.path.join(output_dir, "parity")
    (variant,) = [name for name in os.listdir(experiment)
                  if name in (f"fnn_{init}", f"fnn_{init}_x1")]
    return os.path.join(experiment, variant, f"seed_{seed}")


def final_accuracies(output_dir, init):
    accuracies = []
    for seed in range(FLAGS.runs):
        with open(os.path.join(run_dir(output_dir, init, seed), "summary.json")) as f:
            accuracies.append(json.load(f)["final_test_accuracy"])
    return accuracies


def first_epoch(output_dir, init, seed):
    with open(os.path.join(run_dir(output_dir, init, seed), "metrics.csv")) as f:
        row = next(csv.DictReader(f))
    return {name: float(row[name]) for name in PAIRED_METRICS}


PAIRED_METRICS = ("loss", "accuracy", "test_loss", "test_accuracy")


def paired(root):
    """Per init and seed, each epoch-1 metric's spread across backends
    (losses relative to their mean): prints the table, returns the JSON."""
    print(f"| init | seed | metric | {' | '.join(FLAGS.backends)} | spread |")
    print(f"| --- | --- | --- |{' --- |' * len(FLAGS.backends)} --- |")
    spreads, worst = {}, {}
    for init in FLAGS.schemes:
        for seed in range(FLAGS.runs):
            rows = {b: first_epoch(os.path.join(root, b), init, seed) for b in FLAGS.backends}
            for metric in PAIRED_METRICS:
                values = [rows[b][metric] for b in FLAGS.backends]
                spread = max(values) - min(values)
                if "loss" in metric:
                    spread /= statistics.mean(values)
                spreads[f"{init}/seed_{seed}/{metric}"] = spread
                worst[metric] = max(worst.get(metric, 0.0), spread)
                cells = " | ".join(f"{v:.6f}" for v in values)
                print(f"| {init} | {seed} | {metric} | {cells} | {spread:.2e} |")
    ok = all(spread <= (FLAGS.loss_tolerance if "loss" in key else FLAGS.accuracy_tolerance)
             for key, spread in spreads.items())
    return {"paired": True, "runs": FLAGS.runs, "backends": FLAGS.backends,
            "loss_tolerance": FLAGS.loss_tolerance,
            "accuracy_tolerance": FLAGS.accuracy_tolerance,
            "largest_spread": {m: float(f"{s:.3g}") for m, s in worst.items()},
            "test_accuracy_spread": {k.rsplit("/", 1)[0]: round(v, 6) for k, v in spreads.items()
                                     if k.endswith("/test_accuracy")}, "ok": ok}


def main(argv):
    with tempfile.TemporaryDirectory() as tmp:
        root = FLAGS.output_dir or tmp
        means = {}
        for backend in FLAGS.backends:
            output_dir = os.path.join(root, backend)
            train_grid(backend, output_dir)
            for init in FLAGS.schemes:
                means[backend, init] = statistics.mean(final_accuracies(output_dir, init))
        if FLAGS.paired:
            result = paired(root)
            print(json.dumps(result), flush=True)
            return 0 if result["ok"] else 1

    print(f"| init | {' | '.join(FLAGS.backends)} | spread |")
    print(f"| --- |{' --- |' * len(FLAGS.backends)} --- |")
    spreads = {}
    for init in FLAGS.schemes:
        values = [means[b, init] for b in FLAGS.backends]
        spreads[init] = max(values) - min(values)
        cells = " | ".join(f"{v:.4f}" for v in values)
        print(f"| {init} | {cells} | {spreads[init]:.4f} |")
    ok = all(spread <= FLAGS.tolerance for spread in spreads.values())
    print(json.dumps({
        "runs": FLAGS.runs, "epochs": FLAGS.epochs, "tolerance": FLAGS.tolerance,
        "mean_final_test_accuracy": {f"{b}/{i}": round(m, 4) for (b, i), m in means.items()},
        "spread": {i: round(s, 4) for i, s in spreads.items()}, "ok": ok}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    app.run(main)
