"""Keras callbacks that record a run: per-epoch metrics to `metrics.csv` and
TensorBoard scalars.

TensorBoard files are written with tensorboardX, which works under every
Keras backend with or without TensorFlow installed (Keras' own TensorBoard
callback needs TensorFlow).
"""

import math
import os
import time

import keras

from kzero.io import write_csv

__all__ = ["METRICS_COLUMNS", "EpochMetricsLogger"]

METRICS_COLUMNS = ["epoch", "loss", "accuracy", "test_loss", "test_accuracy", "seconds"]

# `model.fit` reports the test split (passed as validation data) under `val_*`.
_FROM_KERAS = {"loss": "loss", "accuracy": "accuracy",
               "test_loss": "val_loss", "test_accuracy": "val_accuracy"}


class EpochMetricsLogger(keras.callbacks.Callback):
    """Writes one `metrics.csv` row and one set of TensorBoard scalars per epoch.

    The whole CSV is rewritten atomically each epoch (it is a few hundred
    bytes), so a killed run leaves every finished epoch readable.

    Args:
        workdir: the run's directory; the event file is written there too, so
            `tensorboard --logdir runs` shows one run per seed directory.
        writer: a `tensorboardX.SummaryWriter` for `workdir`, shared with other
            callbacks of the run.
    """

    def __init__(self, workdir, writer):
        super().__init__()
        self.path = os.path.join(workdir, "metrics.csv")
        self.writer = writer
        self.rows = []
        self._epoch_start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {"epoch": epoch + 1,
               "seconds": round(time.perf_counter() - self._epoch_start, 3)}
        for column, key in _FROM_KERAS.items():
            row[column] = float(logs.get(key, math.nan))
        self.rows.append(row)
        write_csv(self.path, METRICS_COLUMNS, self.rows)
        for column in METRICS_COLUMNS[1:]:
            self.writer.add_scalar(f"epoch/{column}", row[column], epoch + 1)
        self.writer.flush()
