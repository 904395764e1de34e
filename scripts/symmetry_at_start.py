"""A run's symmetry diagnostics before training, from its config alone: the
units that copy another unit of their layer and the dead ones, per conv and
dense layer, as its `symmetry.csv` records them at epoch 0. A run that
recorded symmetry only from a later epoch (one extended with it switched on)
gets those rows added. kzero draws a run's initial weights from its seed
alone, with the same stream under every backend (`INIT_STREAM`, recorded in
the run's provenance), so they are the ones the run started from; a run
whose stream differs is refused in one line.

    python scripts/symmetry_at_start.py RUN_DIR [--data_dir=DIR]

RUN_DIR holds the run's config.json and symmetry.csv. Where the file already
has epoch 0 rows they are compared with the rebuilt ones and left as they
are: the printed JSON line says whether they are equal. Otherwise the rows
are added, and the line says so.
"""

import json
import os
import sys
import tempfile

from absl import app, flags

flags.DEFINE_string("data_dir", None, "Where the dataset files are (default: $KZERO_DATA_DIR, "
                    "else kzero's download cache).")
FLAGS = flags.FLAGS


class CannotRebuild(Exception):
    """A run whose initial weights this kzero does not draw."""


def rows_at_start(workdir, data_dir=None):
    """The epoch 0 rows of `symmetry.csv` for the run in `workdir`: its fresh
    model, rebuilt from its config, measured on its probe batch as the
    run's `SymmetryMonitor` measures it."""
    from kzero.callbacks import SymmetryMonitor
    from kzero.config import RunConfig
    from kzero.datasets import load_dataset
    from kzero.initializers import INIT_STREAM
    from kzero.records import read_rows
    from kzero.train import SYMMETRY_PROBE_SIZE, build_run_model, run_arrays, run_probe

    config = RunConfig.read(os.path.join(workdir, "config.json"))
    if config.provenance.init_stream != INIT_STREAM:
        raise CannotRebuild(f"{workdir}'s initial weights were drawn from init stream "
                            f"{config.provenance.init_stream} and this kzero draws them from "
                            f"{INIT_STREAM}, so it cannot rebuild them")
    arrays = run_arrays(config, load_dataset(config.dataset, data_dir))
    probe_x, _ = run_probe(config, arrays)
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "symmetry.csv")
        monitor = SymmetryMonitor(path, probe_x[:SYMMETRY_PROBE_SIZE])
        monitor.set_model(build_run_model(config))
        monitor.on_train_begin()
        return read_rows(path)


def merge_start(workdir, data_dir=None):
    """Adds the rebuilt epoch 0 rows to `workdir`'s symmetry.csv where it has
    none, else compares them with those it has. Returns the JSON line's
    fields."""
    from kzero.callbacks import SYMMETRY_COLUMNS
    from kzero.io import write_csv
    from kzero.records import read_rows

    path = os.path.join(workdir, "symmetry.csv")
    recorded = read_rows(path)
    rebuilt = rows_at_start(workdir, data_dir)
    summary = {"layers": len(rebuilt),
               "units": sum(row["units"] for row in rebuilt),
               "copies": sum(row["units"] - row["distinct_units"] for row in rebuilt),
               "dead": sum(round(row["dead_fraction"] * row["units"]) for row in rebuilt)}
    had = [row for row in recorded if row["epoch"] == 0]
    if had:
        return {**summary, "symmetry_csv": "had epoch 0", "equal": had == rebuilt}
    write_csv(path, SYMMETRY_COLUMNS, rebuilt + recorded)
    return {**summary, "symmetry_csv": "epoch 0 added"}


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: python scripts/symmetry_at_start.py RUN_DIR [--data_dir=DIR]")
    workdir = argv[1]
    for name in ("config.json", "symmetry.csv"):
        path = os.path.join(workdir, name)
        if not os.path.exists(path):
            sys.exit(f"symmetry_at_start: {path} not found; give the directory of a run that "
                     "recorded symmetry (not --norecord_symmetry)")
    from kzero.datasets import DataError
    from kzero.records import DamagedFile

    try:
        result = merge_start(workdir, FLAGS.data_dir)
    except (DataError, DamagedFile, CannotRebuild) as e:
        sys.exit(f"symmetry_at_start: {e}")
    print(json.dumps({"run": workdir, **result}))


if __name__ == "__main__":
    app.run(main)
