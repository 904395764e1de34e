"""The grid: models x init schemes x bias scales x seeds, each run in its own
directory `<output_dir>/<experiment>/<variant>/seed_<k>/`.

Every function takes its arguments (a `kzero.config.Grid`, and
what to do with it), so the grid can be called and tested without the
command line: `run_grid(config)` is what `python -m kzero.run` calls.
Finished runs are skipped, unfinished ones resume, each run is trained under
a per-run lock (runners and shards can share an output dir), and a SIGINT or
SIGTERM stops the run in progress at its next batch.
"""

import contextlib
import fcntl
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

import keras

from kzero.config import ConfigError
from kzero.datasets import load_dataset
from kzero.io import read_json
from kzero.progress import GridProgress
from kzero.quiet import has_tensorflow
from kzero.records import DamagedFile, check_run_files, read_rows
from kzero.train import CHECKPOINT, MODEL_FILE, train

__all__ = ["STOP_REQUEST", "check_runnable", "expand", "handle_signals", "run_grid"]

# Set by SIGINT or SIGTERM: the run in progress stops at its next batch.
STOP_REQUEST = threading.Event()


def expand(grid):
    """The runs of `grid` (a `kzero.config.Grid`), in order, as `RunConfig`s."""
    return grid.expand()


def check_runnable(grid):
    """What a config cannot know of this machine, checked before anything is
    trained or written: raises `ConfigError`."""
    base = grid.base
    if base.pipeline == "tf" and not has_tensorflow():
        raise ConfigError("pipeline", "tf", "TensorFlow is not installed; use --pipeline=numpy")
    if base.data_dir and not os.path.isdir(base.data_dir):
        raise ConfigError("data_dir", base.data_dir, "no such directory")
    if base.distribution != "none" and keras.backend.backend() != "jax":
        raise ConfigError("distribution", base.distribution,
                          f"needs KERAS_BACKEND=jax (this is {keras.backend.backend()})")
    if base.distribution == "data_parallel":
        devices = len(keras.distribution.list_devices())
        if base.batch_size % devices:
            raise ConfigError("batch_size", base.batch_size,
                              f"must divide evenly over the {devices} devices of "
                              "--distribution=data_parallel")
    _check_writable(grid.output_dir)


def _check_writable(path):
    # Probe the nearest existing ancestor with a real file: permission bits say
    # nothing for root, nor for read-only or virtual file systems.
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    try:
        if not os.path.isdir(probe):
            raise OSError(f"{probe} is not a directory")
        tempfile.TemporaryFile(dir=probe).close()
    except OSError as e:
        raise ConfigError("output_dir", path, f"not a writable directory ({e})") from None


def handle_signals():
    """SIGINT and SIGTERM set `STOP_REQUEST`; a second SIGINT stops at once.
    A `KeyboardInterrupt` raised straight from the handler is not reliable: it
    can fire inside a garbage-collection callback of jax, which swallows it."""
    def request_stop(signum, frame):
        if STOP_REQUEST.is_set():
            raise KeyboardInterrupt
        STOP_REQUEST.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)


def _say(text):
    print(text, flush=True)


def _accuracy(value):
    return "none" if value is None else f"{value:.4f}"


def run_grid(grid, arrays=None, verbose=None, stop_request=STOP_REQUEST):
    """Trains the runs of `grid` (see `expand`) that this shard owns and that
    are not finished, skipping those another runner is training.

    Args:
        grid: a `kzero.config.Grid`.
        arrays: the dataset, loaded from the grid's `dataset` if not given.
        verbose: `model.fit`'s; default a progress bar on a terminal, else a
            line per epoch.
        stop_request: a `threading.Event` that stops the run in progress.

    Returns:
        The configs of the runs this call covered, in order.
    """
    index, count = grid.shard_index()
    runs = expand(grid)[index::count]
    if arrays is None:
        arrays = load_dataset(grid.get("dataset"), grid.get("data_dir"))
    root = os.path.join(grid.output_dir, grid.experiment_name)
    _say(f"kzero: {len(runs)} run{'' if len(runs) == 1 else 's'} of {grid.experiment_name}"
         f"{f' (shard {grid.shard})' if grid.shard else ''} -> {root}")
    asked = grid.get("epochs")
    for model, epochs in sorted({(run.model, run.epochs) for run in runs
                                 if run.epochs != asked}):
        _say(f"kzero: --protocol={grid.get('protocol')} trains {model} on {grid.get('dataset')} "
             f"for {epochs} epochs, not --epochs={asked} (kzero.protocols)")
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    labels = {id(run): f"[{i}/{len(runs)}] {run.variant}/seed_{run.seed}"
              for i, run in enumerate(runs, start=1)}
    progress = GridProgress(runs, _say, epochs_held=lambda run: 0 if grid.overwrite else
                            _epochs_held(_workdir(root, run)))
    if grid.parallel_runs == 1:
        for run in runs:
            _train_alone(run, labels, arrays, root, grid.overwrite, verbose, stop_request,
                         progress)
    else:
        _run_groups(runs, labels, arrays, root, grid, verbose, stop_request, progress)
    return runs


def _workdir(root, run):
    return os.path.join(root, run.variant, f"seed_{run.seed}")


def _epochs_held(workdir):
    """The epochs a run directory already holds, for the progress estimate:
    the rows of its metrics.csv where a summary or a checkpoint goes with
    them; 0 where none does or the file cannot be read (it then trains anew)."""
    from kzero.parallel import GROUP_CHECKPOINT

    if not any(os.path.exists(os.path.join(workdir, name))
               for name in ("summary.json", CHECKPOINT, GROUP_CHECKPOINT)):
        return 0
    try:
        return len(read_rows(os.path.join(workdir, "metrics.csv")))
    except (OSError, DamagedFile):
        return 0


def _train_alone(run, labels, arrays, root, overwrite, verbose, stop_request, progress):
    workdir = _workdir(root, run)
    if stop_request.is_set():
        raise KeyboardInterrupt
    os.makedirs(os.path.dirname(workdir), exist_ok=True)
    with _run_lock(workdir) as locked:
        if not locked:
            _say(f"{labels[id(run)]}: being trained by another process, skipped")
        else:
            _train_one(labels[id(run)], workdir, arrays, run, overwrite, verbose, stop_request,
                       progress)
    progress.run_finished(run)


def _run_groups(runs, labels, arrays, root, grid, verbose, stop_request, progress):
    """--parallel_runs: the unfinished runs that share an architecture (all
    but their init scheme, bias scale and seed), R at a time, across the
    grid's variants; R measured per architecture under auto. A run with a
    checkpoint of its own, from a run-by-run attempt, resumes alone."""
    from kzero.group_size import AUTO, choose_group_size
    from kzero.parallel import group_key

    if grid.parallel_runs != AUTO:
        _say(f"kzero: --parallel_runs={grid.parallel_runs}: up to {grid.parallel_runs} runs "
             "per model")
    workdirs = {id(run): _workdir(root, run) for run in runs}
    families, todo = {}, {}
    for run in runs:
        os.makedirs(os.path.dirname(workdirs[id(run)]), exist_ok=True)
        families.setdefault(group_key(run), []).append(run)
        if _skip_finished(labels[id(run)], workdirs[id(run)], run, grid.overwrite):
            progress.run_finished(run)
        else:
            todo.setdefault(group_key(run), []).append(run)
    for key, family_todo in todo.items():
        size = grid.parallel_runs
        if size == AUTO:
            size = choose_group_size(families[key], arrays, root, _say)
        alone = [run for run in family_todo if size == 1 or (
            not grid.overwrite and os.path.exists(os.path.join(workdirs[id(run)], CHECKPOINT)))]
        for run in alone:
            _train_alone(run, labels, arrays, root, grid.overwrite, verbose, stop_request,
                         progress)
        alone_ids = {id(run) for run in alone}
        together = [run for run in family_todo if id(run) not in alone_ids]
        for start in range(0, len(together), size):
            if stop_request.is_set():
                raise KeyboardInterrupt
            _train_group(together[start:start + size], labels, workdirs, arrays, grid, verbose,
                         stop_request, progress)


def _train_group(candidates, labels, workdirs, arrays, grid, verbose, stop_request, progress):
    from kzero.parallel import train_parallel

    with contextlib.ExitStack() as locks:
        group = []
        for run in candidates:
            if not locks.enter_context(_run_lock(workdirs[id(run)])):
                _say(f"{labels[id(run)]}: being trained by another process, skipped")
            # Another runner may have finished it since the list was made.
            elif not _skip_finished(labels[id(run)], workdirs[id(run)], run, grid.overwrite):
                group.append(run)
            else:
                progress.run_finished(run)
        if not group:
            return
        members = tuple(f"{run.variant}/seed_{run.seed}" for run in group)
        configs = [run.with_provenance(parallel_group=members) for run in group]
        dirs = [workdirs[id(run)] for run in group]
        resumable = _group_resumable(dirs, members) and not grid.overwrite
        for run in group:
            if not resumable:
                _say(f"{labels[id(run)]}: training (group of {len(group)})")
                # Nothing of an earlier attempt, or of another group, stays.
                _fresh_start(workdirs[id(run)])

        def log(text, group=group):
            for run in group:
                _say(f"{labels[id(run)]}: {text}")

        summaries = train_parallel(configs, dirs, arrays, verbose, stop_request,
                                   callbacks=[progress.callback(group)], log=log)
        for run, summary in zip(group, summaries):
            progress.run_finished(run)
            _say(f"{labels[id(run)]}: {summary['status']} after "
                 f"{summary['epochs_completed']} epochs, test accuracy "
                 f"{_accuracy(summary['final_test_accuracy'])} in "
                 f"{summary['wall_seconds']:.1f} s (group of {len(group)})")


def _group_resumable(workdirs, members):
    """Whether `workdirs` hold an unfinished group of exactly these runs
    (`<variant>/seed_<k>`): its checkpoint in the first, and each run's
    config.json naming the group."""
    from kzero.parallel import GROUP_CHECKPOINT

    if not os.path.exists(os.path.join(workdirs[0], GROUP_CHECKPOINT)):
        return False
    for workdir in workdirs:
        path = os.path.join(workdir, "config.json")
        if not os.path.exists(path) or _parallel_group(path) != members:
            return False
    return True


@contextlib.contextmanager
def _run_lock(workdir):
    """An exclusive lock per run, so that two runners sharing an output dir
    (different variants, shards, or the same command twice) never train the
    same run at once. The OS drops it when the process dies, even by SIGKILL."""
    with open(os.path.join(os.path.dirname(workdir),
                           f".{os.path.basename(workdir)}.lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def _set_aside_damaged(label, workdir):
    """Keeps aside, as `<file>.corrupt`, each of the run's `summary.json`,
    `config.json` and `metrics.csv` that cannot be read, in one line each; such
    a run trains again from epoch 1, and the rest of the grid goes on."""
    from kzero.parallel import GROUP_CHECKPOINT

    while True:
        try:
            check_run_files(workdir, summary_keys=("status", "final_test_accuracy"))
            return
        except DamagedFile as e:
            aside = e.path + ".corrupt"
            os.replace(e.path, aside)
            _say(f"{label}: {e.path} cannot be read ({e.reason[:200]}); kept aside as "
                 f"{aside}, the run trains again from epoch 1")
            for name in ("summary.json", CHECKPOINT, GROUP_CHECKPOINT):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(workdir, name))


def _fresh_start(workdir):
    """Empties a run directory for a run that starts from epoch 1: nothing of an
    earlier attempt stays (stale event files would show in TensorBoard next to
    the new ones), but files kept aside as `.corrupt` do."""
    if not os.path.isdir(workdir):
        return
    for name in os.listdir(workdir):
        if name.endswith(".corrupt"):
            continue
        path = os.path.join(workdir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


def _parallel_group(config_path):
    """The group a run's config.json names; () for a run trained alone."""
    values = read_json(config_path)
    return tuple(values.get("provenance", values).get("parallel_group") or ())


def _skip_finished(label, workdir, run, overwrite):
    """Whether the run in `workdir` has finished all the epochs `run` asks for
    (and `overwrite` is off); says so. A run that finished fewer epochs is
    extended: its kept model, the checkpoint of its last epoch, resumes
    training to `run.epochs`, which gives what a run trained that long from
    the start gives (every epoch's order depends only on the seed and the
    epoch). Where no such model was kept, it says what to run instead."""
    summary_path = os.path.join(workdir, "summary.json")
    if overwrite:
        return False
    _set_aside_damaged(label, workdir)
    if not os.path.exists(summary_path):
        return False
    done = read_json(summary_path)
    held = done.get("epochs_completed") or 0
    if done["status"] == "finished" and held < run.epochs:
        kept = os.path.join(workdir, MODEL_FILE)
        grouped = _parallel_group(os.path.join(workdir, "config.json"))
        if os.path.exists(kept) and not grouped:
            os.replace(kept, os.path.join(workdir, CHECKPOINT))
            os.remove(summary_path)
            _say(f"{label}: finished {held} of the {run.epochs} epochs asked for; "
                 f"extending it from epoch {held}")
            return False
        why = ("it kept no model (--nosave_model)" if not os.path.exists(kept) else
               "it trained in a parallel group, whose kept model has no optimizer state")
        _say(f"{label}: holds {held} of the {run.epochs} epochs asked for, and {why}: "
             f"skipped; --overwrite trains it anew for {run.epochs}")
        return True
    _say(f"{label}: already {done['status']} after {held} epochs (test accuracy "
         f"{_accuracy(done['final_test_accuracy'])}), skipped")
    return True


def _train_one(label, workdir, arrays, config, overwrite, verbose, stop_request, progress):
    if _skip_finished(label, workdir, config, overwrite):
        return
    if not os.path.exists(os.path.join(workdir, CHECKPOINT)) or overwrite:
        _say(f"{label}: training")
        _fresh_start(workdir)
    start = time.perf_counter()
    _, summary = train(config, workdir, arrays, verbose=verbose, stop_request=stop_request,
                       log=lambda text: _say(f"{label}: {text}"),
                       callbacks=[progress.callback([config])])
    _say(f"{label}: {summary['status']} after {summary['epochs_completed']} epochs, "
         f"test accuracy {_accuracy(summary['final_test_accuracy'])} "
         f"in {time.perf_counter() - start:.1f} s")
