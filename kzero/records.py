"""What a run records of itself: the columns of `metrics.csv`, reading rows
back, the one rule for divergence, and `summary.json`. Training, parallel
groups and the report all judge a run by these functions."""

import math
import os

from kzero.io import read_csv

__all__ = ["HOLDOUT_COLUMNS", "METRICS_COLUMNS", "diverged_epoch", "is_diverged", "read_rows",
           "run_summary"]

METRICS_COLUMNS = ["epoch", "loss", "accuracy", "test_loss", "test_accuracy", "seconds"]
# A run with a hold-out also evaluates it after every epoch.
HOLDOUT_COLUMNS = ["holdout_loss", "holdout_accuracy"]


def is_diverged(loss, test_loss):
    """A run has diverged once its training or its test loss is not finite
    (the paper's x100 bias scale can do this)."""
    return not (math.isfinite(loss) and math.isfinite(test_loss))


def diverged_epoch(rows):
    """The epoch of the first `metrics.csv` row that `is_diverged`, or None."""
    for row in rows:
        if is_diverged(row["loss"], row["test_loss"]):
            return row["epoch"]
    return None


def _number(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_rows(path, keep=lambda row: True):
    """The rows of a CSV file a run wrote, numbers as numbers, those for
    which `keep(row)` holds; [] when the file does not exist."""
    if not os.path.exists(path):
        return []
    rows = [{k: _number(v) for k, v in row.items()} for row in read_csv(path)]
    return [row for row in rows if keep(row)]


def run_summary(rows, wall_seconds, resumed_from_epoch=None):
    """What `summary.json` says of a run whose `metrics.csv` holds `rows`."""
    last = rows[-1] if rows else {}
    diverged = diverged_epoch(rows)
    return {
        "status": "diverged" if diverged is not None or not rows else "finished",
        "diverged_epoch": diverged,
        "epochs_completed": len(rows),
        "resumed_from_epoch": resumed_from_epoch,
        "final_test_accuracy": last.get("test_accuracy"),
        "final_test_loss": last.get("test_loss"),
        "wall_seconds": round(wall_seconds, 3),
    }
