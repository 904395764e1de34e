"""A run's kept model tested three ways: its batch norms normalising with
their moving statistics (Keras' test-time rule, what the run's metrics.csv
measured); with each test batch's own (what `--bn_statistics=batch` and
the authors' code do); and with statistics recomputed exactly from the first
`--recompute_examples` training images with the kept weights
(`kzero.recompute_moving_statistics`). A gap between the first and the
other two says that the moving statistics, not the weights, are what a
test accuracy lacks; the third needs no test batch's statistics.

    python scripts/bn_statistics.py RUN_DIR [--data_dir=DIR] [--recompute_examples=N]

RUN_DIR holds the run's config.json and model.keras (a finished run that kept
its model). Prints one JSON line and writes it to RUN_DIR/bn_statistics.json,
with the epoch the kept model has trained to: the report's family table shows
the recomputed accuracy of runs whose file matches their last epoch.
"""

import json
import os
import sys

from absl import app, flags

flags.DEFINE_string("data_dir", None, "Where the dataset files are (default: $KZERO_DATA_DIR, "
                    "else kzero's download cache).")
flags.DEFINE_integer("recompute_examples", 10000, "How many of the run's training images, "
                     "unaugmented, the recomputed statistics are taken over.", lower_bound=1)
FLAGS = flags.FLAGS


def test_accuracies(workdir, data_dir=None, recompute_examples=10000):
    """{"moving_statistics", "batch_statistics", "recomputed_statistics",
    "metrics_csv"}: the kept model's test accuracy with each normalisation,
    and the last one the run logged."""
    import keras
    import numpy as np

    from kzero.config import RunConfig
    from kzero.datasets import load_dataset
    from kzero.layers import StableBatchNormalization, recompute_moving_statistics
    from kzero.pipelines import probe_batch
    from kzero.records import read_rows
    from kzero.train import input_normalization, run_arrays, run_pipelines

    config = RunConfig.read(os.path.join(workdir, "config.json"))
    arrays = run_arrays(config, load_dataset(config.dataset, data_dir))
    _, _, test = run_pipelines(config, arrays)
    model = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    accuracies = {}
    for statistics in ("moving", "batch", "recomputed"):
        if statistics == "recomputed":
            images, _ = probe_batch(arrays, recompute_examples, input_normalization(config, arrays))
            recompute_moving_statistics(model, images)
        # What --bn_statistics sets: the batch norms' rule outside training.
        for layer in model.layers:
            if isinstance(layer, StableBatchNormalization):
                layer.test_statistics = "batch" if statistics == "batch" else "moving"
        right = seen = 0
        for x, y in test:
            labels = np.asarray(y).reshape(-1)
            logits = keras.ops.convert_to_numpy(model(x, training=False))
            right += int((logits.argmax(-1) == labels).sum())
            seen += len(labels)
        accuracies[f"{statistics}_statistics"] = right / seen
    last = read_rows(os.path.join(workdir, "metrics.csv"))[-1]
    accuracies["metrics_csv"] = last["test_accuracy"]
    accuracies["epoch"] = last["epoch"]
    accuracies["recompute_examples"] = min(recompute_examples, len(arrays["x_train"]))
    return accuracies


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: python scripts/bn_statistics.py RUN_DIR [--data_dir=DIR] "
                 "[--recompute_examples=N]")
    workdir = argv[1]
    for name in ("config.json", "model.keras", "metrics.csv"):
        path = os.path.join(workdir, name)
        if not os.path.exists(path):
            sys.exit(f"bn_statistics: {path} not found; give the directory of a finished run "
                     "that kept its model (not --nosave_model)")
    from kzero.datasets import DataError

    try:
        accuracies = test_accuracies(workdir, FLAGS.data_dir, FLAGS.recompute_examples)
    except DataError as e:
        sys.exit(f"bn_statistics: {e}")
    from kzero.io import write_json

    write_json(os.path.join(workdir, "bn_statistics.json"), accuracies)
    print(json.dumps({"run": workdir, **accuracies}))


if __name__ == "__main__":
    app.run(main)
