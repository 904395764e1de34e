"""Benchmark: what kzero's diagnostics cost on top of a plain kzero run.

    KERAS_BACKEND=jax python scripts/bench.py --dataset=mnist --model=fnn

Trains the same model in one process, alternately with and without gradient
recording and the symmetry monitor, and prints one JSON line with the epoch
time of each and the overhead ratios. Epoch times come from the runs' own
`metrics.csv`. The first epoch (compilation, and the first `grad_first_steps`
records) is reported apart from the steady ones. For the steady epochs both
the minimum and the median are given: on a small shared machine epoch times
jump between two levels whatever the callbacks, so the minimum is the better
estimate of the intrinsic cost and the median shows the spread.
"""

import json
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

flags.DEFINE_string("dataset", "mnist", "mnist or cifar10.")
flags.DEFINE_string("model", "fnn", "Model name.")
flags.DEFINE_string("init", "zero_normal", "Init scheme.")
flags.DEFINE_integer("epochs", 8, "Epochs per measurement; the first is not counted.")
flags.DEFINE_integer("max_examples", None, "First N examples of each split.")
flags.DEFINE_integer("repeats", 3, "Alternating measurements of each setting.")
flags.DEFINE_string("data_dir", None, "Directory holding the npz files.")
FLAGS = flags.FLAGS


def epoch_times(workdir):
    from kzero.io import read_csv

    return [float(row["seconds"]) for row in read_csv(os.path.join(workdir, "metrics.csv"))]


def main(argv):
    import keras
    import numpy as np

    from kzero.data import load_arrays
    from kzero.train import train

    arrays = load_arrays(FLAGS.dataset, FLAGS.data_dir)
    base = dict(dataset=FLAGS.dataset, model=FLAGS.model, init=FLAGS.init, bias_scale=1.0,
                activation="elu", seed=0, epochs=FLAGS.epochs, batch_size=128,
                learning_rate=1e-3, max_examples=FLAGS.max_examples)
    settings = {"plain": dict(record_gradients=False, record_symmetry=False),
                "recording": dict(record_gradients=True, record_symmetry=True)}
    first, steady = {k: [] for k in settings}, {k: [] for k in settings}
    with tempfile.TemporaryDirectory() as tmp:
        # Alternate the settings so that drift of a noisy machine hits both.
        for repeat in range(FLAGS.repeats):
            for name, extra in settings.items():
                workdir = os.path.join(tmp, f"{name}_{repeat}")
                train({**base, **extra}, workdir, arrays, verbose=0)
                times = epoch_times(workdir)
                first[name].append(times[0])
                steady[name].extend(times[1:])
    result = {
        "backend": keras.backend.backend(), "dataset": FLAGS.dataset, "model": FLAGS.model,
        "epochs": FLAGS.epochs, "repeats": FLAGS.repeats,
        "plain_epoch_s": round(float(np.min(steady["plain"])), 4),
        "recording_epoch_s": round(float(np.min(steady["recording"])), 4),
        "plain_epoch_median_s": round(float(np.median(steady["plain"])), 4),
        "recording_epoch_median_s": round(float(np.median(steady["recording"])), 4),
        "plain_first_epoch_s": round(float(np.min(first["plain"])), 4),
        "recording_first_epoch_s": round(float(np.min(first["recording"])), 4),
    }
    result["recording_overhead"] = round(
        result["recording_epoch_s"] / result["plain_epoch_s"] - 1, 4)
    result["recording_median_overhead"] = round(
        result["recording_epoch_median_s"] / result["plain_epoch_median_s"] - 1, 4)
    result["recording_first_epoch_overhead"] = round(
        result["recording_first_epoch_s"] / result["plain_first_epoch_s"] - 1, 4)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    app.run(main)
