"""What a run records of itself: the columns of `metrics.csv`, reading rows
back, the one rule for divergence, and `summary.json`. Training, parallel
groups and the report all judge a run by these functions."""

import csv
import json
import math
import os

from kzero.io import read_csv

__all__ = ["DamagedFile", "HOLDOUT_COLUMNS", "METRICS_COLUMNS", "check_run_files",
           "diverged_epoch", "is_diverged", "read_rows",
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


class DamagedFile(ValueError):
    """A file of a run directory that cannot be read: `path`, and `reason`."""

    def __init__(self, path, reason):
        super().__init__(f"{path} cannot be read ({reason})")
        self.path, self.reason = path, reason


def read_rows(path, keep=lambda row: True):
    """The rows of a CSV file a run wrote, numbers as numbers, those for
    which `keep(row)` holds; [] when the file does not exist. Raises
    `DamagedFile` where a row is cut short or has more fields than the header
    (a write that a crash or a full disk interrupted, in a file kzero did not
    write atomically, or an edit)."""
    if not os.path.exists(path):
        return []
    try:
        raw = read_csv(path)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DamagedFile(path, str(e).splitlines()[0] if str(e) else type(e).__name__)
    for line, row in enumerate(raw, start=2):
        if None in row or None in row.values():
            raise DamagedFile(path, f"line {line} does not have the header's "
                                    f"{len([k for k in row if k is not None])} fields")
    rows = [{k: _number(v) for k, v in row.items()} for row in raw]
    return [row for row in rows if keep(row)]


def _json_object(path, required=()):
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DamagedFile(path, str(e).splitlines()[0] if str(e) else type(e).__name__)
    missing = [key for key in required if not isinstance(value, dict) or key not in value]
    if not isinstance(value, dict) or missing:
        raise DamagedFile(path, f"no {missing[0]!r}" if missing else "not a JSON object")
    return value


def check_run_files(workdir, summary_keys=()):
    """Reads what a run directory holds of `summary.json` (which must have
    `summary_keys`), `config.json` and `metrics.csv`, raising `DamagedFile`
    for the first that cannot be read."""
    for name, required in (("summary.json", summary_keys), ("config.json", ())):
        path = os.path.join(workdir, name)
        if os.path.exists(path):
            _json_object(path, required)
    metrics = os.path.join(workdir, "metrics.csv")
    rows = read_rows(metrics)
    missing = [column for column in METRICS_COLUMNS if rows and column not in rows[0]]
    if missing:
        raise DamagedFile(metrics, f"no column {missing[0]}")


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
