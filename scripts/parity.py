"""Backend parity: the same MNIST FNN grid under every Keras backend.

    python scripts/parity.py [--data_dir=DIR] [--output_dir=DIR]

Trains `lecun` and `zero_normal`, 3 seeds x 3 epochs, once per backend (each
in its own `python -m kzero.run` process, since a process has one backend),
then compares each init's mean final test accuracy across backends. Prints a
Markdown table and one JSON line; exits with 1 when two backends differ by
more than --tolerance (0.5 points).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

from absl import app, flags

flags.DEFINE_list("backends", ["jax", "tensorflow", "torch"], "Keras backends to compare.")
flags.DEFINE_list("inits", ["lecun", "zero_normal"], "Init schemes.")
flags.DEFINE_integer("runs", 3, "Seeds per init.")
flags.DEFINE_integer("epochs", 3, "Epochs per run.")
flags.DEFINE_float("tolerance", 0.005, "Largest allowed spread of the backends' means.")
flags.DEFINE_integer("max_examples", None, "First N examples of each split (quick tries).")
flags.DEFINE_string("data_dir", None, "Directory holding mnist.npz (default: "
                    "$KZERO_DATA_DIR, else tensorflow-datasets).")
flags.DEFINE_string("output_dir", None, "Keep the runs here (default: a temporary dir).")
FLAGS = flags.FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_grid(backend, output_dir):
    command = [sys.executable, "-m", "kzero.run", "--experiment=parity", "--dataset=mnist",
               "--model=fnn", f"--inits={','.join(FLAGS.inits)}", f"--runs={FLAGS.runs}",
               f"--epochs={FLAGS.epochs}", f"--output_dir={output_dir}"]
    if FLAGS.data_dir:
        command.append(f"--data_dir={FLAGS.data_dir}")
    if FLAGS.max_examples:
        command.append(f"--max_examples={FLAGS.max_examples}")
    print(f"parity: {backend}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    env = dict(os.environ, KERAS_BACKEND=backend)
    subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)


def final_accuracies(output_dir, init):
    # The variant is fnn_<init>, with _x1 for the schemes that take a bias scale.
    experiment = os.path.join(output_dir, "parity")
    (variant,) = [name for name in os.listdir(experiment)
                  if name in (f"fnn_{init}", f"fnn_{init}_x1")]
    accuracies = []
    for seed in range(FLAGS.runs):
        with open(os.path.join(experiment, variant, f"seed_{seed}", "summary.json")) as f:
            accuracies.append(json.load(f)["final_test_accuracy"])
    return accuracies


def main(argv):
    with tempfile.TemporaryDirectory() as tmp:
        root = FLAGS.output_dir or tmp
        means = {}
        for backend in FLAGS.backends:
            output_dir = os.path.join(root, backend)
            train_grid(backend, output_dir)
            for init in FLAGS.inits:
                means[backend, init] = statistics.mean(final_accuracies(output_dir, init))

    print(f"| init | {' | '.join(FLAGS.backends)} | spread |")
    print(f"| --- |{' --- |' * len(FLAGS.backends)} --- |")
    spreads = {}
    for init in FLAGS.inits:
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
