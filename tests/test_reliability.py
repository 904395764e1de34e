"""Divergence, interruption, determinism and concurrency."""

import glob
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from kzero import io
from kzero.io import read_csv, read_json, write_atomic
from kzero.train import CHECKPOINT, train

from conftest import REPO


def kzero_run(*argv, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "kzero.run", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO, **kwargs)


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_resumes_and_matches_an_uninterrupted_run(tmp_path, data_dir):
    argv = ["--dataset=mnist", "--model=fnn", "--scheme=zero_normal", "--epochs=4", "--runs=1",
            "--max_examples=12000", f"--data_dir={data_dir}"]
    workdir = tmp_path / "killed" / "mnist_fnn" / "fnn_zero_normal_x1" / "seed_0"
    process = kzero_run(*argv, f"--output_dir={tmp_path / 'killed'}")
    deadline = time.time() + 300
    while not (workdir / CHECKPOINT).exists():
        assert process.poll() is None and time.time() < deadline, process.stdout.read()
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    rows_at_kill = read_csv(workdir / "metrics.csv")
    assert 1 <= len(rows_at_kill) < 4 and not (workdir / "summary.json").exists()

    rerun = kzero_run(*argv, f"--output_dir={tmp_path / 'killed'}")
    output = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, output
    summary = read_json(workdir / "summary.json")
    assert summary["status"] == "finished" and summary["resumed_from_epoch"] >= 1
    assert (f"fnn_zero_normal_x1/seed_0: resuming after epoch {summary['resumed_from_epoch']} "
            "of 4") in output
    # Each event file, the resumed run's included, holds summaries: none is empty.
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    for path in glob.glob(str(workdir / "events.out.tfevents.*")):
        assert any(event.HasField("summary") for event in EventFileLoader(path).Load()), path
    assert (workdir / "model.keras").exists()
    rows = read_csv(workdir / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    symmetry_epochs = [int(r["epoch"]) for r in read_csv(workdir / "symmetry.csv")]
    assert sorted(set(symmetry_epochs)) == [0, 1, 2, 3, 4]
    assert len(symmetry_epochs) == 5 * 2  # two layers, each epoch once
    steps = [(r["step"], r["layer"], r["param"]) for r in read_csv(workdir / "gradients.csv")]
    assert len(steps) == len(set(steps))
    assert not (workdir / CHECKPOINT).exists()

    whole = kzero_run(*argv, f"--output_dir={tmp_path / 'whole'}")
    assert whole.wait(timeout=300) == 0
    uninterrupted = read_csv(
        tmp_path / "whole" / "mnist_fnn" / "fnn_zero_normal_x1" / "seed_0" / "metrics.csv")
    assert [r["test_accuracy"] for r in rows] == [r["test_accuracy"] for r in uninterrupted]


@pytest.mark.slow
def test_a_killed_parallel_group_resumes_and_matches_an_uninterrupted_group(tmp_path, data_dir):
    from kzero.parallel import GROUP_CHECKPOINT

    argv = ["--dataset=mnist", "--model=fnn", "--scheme=zero_normal", "--epochs=3", "--runs=2",
            "--parallel_runs=2", "--max_examples=10000", f"--data_dir={data_dir}"]
    variant = tmp_path / "killed" / "mnist_fnn" / "fnn_zero_normal_x1"
    process = kzero_run(*argv, f"--output_dir={tmp_path / 'killed'}")
    deadline = time.time() + 300
    while not (variant / "seed_0" / GROUP_CHECKPOINT).exists():
        assert process.poll() is None and time.time() < deadline, process.stdout.read()
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (variant / "seed_1" / "summary.json").exists()

    rerun = kzero_run(*argv, f"--output_dir={tmp_path / 'killed'}")
    output = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, output
    whole = kzero_run(*argv, f"--output_dir={tmp_path / 'whole'}")
    assert whole.wait(timeout=300) == 0
    for seed in (0, 1):
        workdir = variant / f"seed_{seed}"
        summary = read_json(workdir / "summary.json")
        assert summary["status"] == "finished" and summary["resumed_from_epoch"] >= 1
        assert (f"fnn_zero_normal_x1/seed_{seed}: resuming after epoch "
                f"{summary['resumed_from_epoch']} of 3") in output
        uninterrupted = tmp_path / "whole" / "mnist_fnn" / "fnn_zero_normal_x1" / f"seed_{seed}"
        for name, columns in (("metrics.csv", ("epoch", "loss", "test_accuracy")),
                              ("gradients.csv", ("step", "layer", "param", "std")),
                              ("symmetry.csv", ("epoch", "layer", "distinct_units"))):
            assert [[r[c] for c in columns] for r in read_csv(workdir / name)] == [
                [r[c] for c in columns] for r in read_csv(uninterrupted / name)], name
    assert not (variant / "seed_0" / GROUP_CHECKPOINT).exists()


@pytest.mark.slow
@pytest.mark.once
def test_an_unreadable_group_checkpoint_is_kept_aside_and_the_group_trains_again(
        tmp_path, mnist, capsys):
    from kzero.config import Grid
    from kzero.grid import run_grid
    from kzero.parallel import GROUP_CHECKPOINT

    grid = Grid.make(scheme=("zero_normal",), runs=2, epochs=1, max_examples=2048,
                     parallel_runs=2, output_dir=str(tmp_path / "runs"), experiment="faulty",
                     record_gradients=False, record_symmetry=False, record_activations=False)
    run_grid(grid, arrays=mnist, verbose=0)
    variant = tmp_path / "runs" / "faulty" / "fnn_zero_normal_x1"
    expected = [read_json(variant / f"seed_{seed}" / "summary.json")["final_test_accuracy"]
                for seed in (0, 1)]
    # Unfinished again, with the group's checkpoint truncated as a storage fault leaves it.
    for seed in (0, 1):
        os.remove(variant / f"seed_{seed}" / "summary.json")
    whole = (variant / "seed_0" / "model.keras").read_bytes()
    (variant / "seed_0" / GROUP_CHECKPOINT).write_bytes(whole[:5_000])
    capsys.readouterr()
    run_grid(grid, arrays=mnist, verbose=0)
    output = capsys.readouterr().out
    checkpoint = variant / "seed_0" / GROUP_CHECKPOINT
    assert f"{checkpoint} cannot be read (" in output
    assert "training the group again from epoch 1" in output
    assert (variant / "seed_0" / (GROUP_CHECKPOINT + ".corrupt")).read_bytes() == whole[:5_000]
    assert [read_json(variant / f"seed_{seed}" / "summary.json")["final_test_accuracy"]
            for seed in (0, 1)] == expected


# `python -m kzero.run`, receiving SIGINT as from a terminal. A child inherits
# SIGINT ignored when its shell started the tests in the background (as CI
# does), and blocked when a library in this process blocked it in the forking
# thread; the child undoes both itself, after exec, because a `preexec_fn`
# would run this process's fork handlers, and jax's warns of a deadlock.
KZERO_RUN_AS_FROM_A_TERMINAL = [sys.executable, "-c", (
    "import runpy, signal; "
    "signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT]); "
    "signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('kzero.run', run_name='__main__', alter_sys=True)")]


@pytest.mark.slow
def test_interrupt_exits_cleanly_and_keeps_finished_epochs(tmp_path, data_dir):
    argv = ["--dataset=mnist", "--model=fnn", "--scheme=lecun", "--epochs=20", "--runs=1",
            f"--data_dir={data_dir}", f"--output_dir={tmp_path}"]
    workdir = tmp_path / "mnist_fnn" / "fnn_lecun" / "seed_0"
    process = subprocess.Popen([*KZERO_RUN_AS_FROM_A_TERMINAL, *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=REPO)
    deadline = time.time() + 300
    while not (workdir / CHECKPOINT).exists():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130
    assert "interrupted; finished runs are kept, rerun the same command" in output
    assert "Traceback" not in output
    assert len(read_csv(workdir / "metrics.csv")) >= 1 and (workdir / CHECKPOINT).exists()


def config(**overrides):
    config = dict(dataset="mnist", model="fnn", scheme="zero_normal", bias_scale=1.0,
                  activation="elu", seed=3, epochs=2, batch_size=128, learning_rate=1e-3,
                  max_examples=4096)
    config.update(overrides)
    return config


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(tmp_path, mnist):
    train(config(), str(tmp_path / "a"), mnist)
    train(config(), str(tmp_path / "b"), mnist)
    train(config(seed=4), str(tmp_path / "c"), mnist)
    a, b, c = (read_csv(tmp_path / run / "metrics.csv") for run in "abc")
    for column in ("loss", "test_loss", "test_accuracy"):
        assert [r[column] for r in a] == [r[column] for r in b]
    assert [r["test_loss"] for r in a] != [r["test_loss"] for r in c]


@pytest.mark.slow
def test_a_diverging_run_is_recorded_and_the_grid_goes_on(tmp_path, data_dir):
    # Biases N(0, 1) x 1e38 overflow float32 at once: the loss is NaN from step 1.
    process = kzero_run("--dataset=mnist", "--model=fnn", "--scheme=zero_normal,lecun",
                        "--bias_scales=1e38", "--epochs=3", "--runs=1", "--max_examples=512",
                        f"--data_dir={data_dir}", f"--output_dir={tmp_path}")
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output
    diverged = tmp_path / "mnist_fnn" / "fnn_zero_normal_x1e+38" / "seed_0"
    summary = read_json(diverged / "summary.json")
    assert summary["status"] == "diverged" and summary["diverged_epoch"] == 1
    assert summary["epochs_completed"] == 1
    rows = read_csv(diverged / "metrics.csv")
    assert len(rows) == 1 and not math.isfinite(float(rows[0]["loss"]))
    assert "diverged after 1 epochs" in output
    healthy = read_json(tmp_path / "mnist_fnn" / "fnn_lecun" / "seed_0" / "summary.json")
    assert healthy["status"] == "finished" and healthy["epochs_completed"] == 3


@pytest.mark.slow
@pytest.mark.once
def test_two_runners_on_one_output_dir_train_each_run_once(tmp_path, data_dir):
    argv = ["--dataset=mnist", "--model=logreg", "--scheme=lecun,zero", "--epochs=2",
            "--runs=2", "--max_examples=2048", f"--data_dir={data_dir}",
            f"--output_dir={tmp_path}"]
    first, second = kzero_run(*argv), kzero_run(*argv)
    outputs = [p.communicate(timeout=300)[0] for p in (first, second)]
    assert first.returncode == second.returncode == 0, outputs
    trained = sum(o.count(": training") for o in outputs)
    assert trained == 4
    dirs = glob.glob(str(tmp_path / "mnist_logreg" / "*" / "seed_*"))
    assert len(dirs) == 4
    for workdir in dirs:
        assert read_json(os.path.join(workdir, "summary.json"))["status"] == "finished"
        assert [int(r["epoch"]) for r in read_csv(os.path.join(workdir, "metrics.csv"))] == [1, 2]
        assert len(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))) == 1


def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "metrics.csv"
    write_atomic(str(path), "old\n")

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "fsync", crash)
    with pytest.raises(OSError):
        write_atomic(str(path), "new, but never complete\n")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["metrics.csv"]


@pytest.mark.once
def test_corrupt_dataset_fails_before_anything_is_written(tmp_path, data_dir):
    with open(os.path.join(data_dir, "mnist.npz"), "rb") as f:
        (tmp_path / "mnist.npz").write_bytes(f.read(1000))
    result = subprocess.run([sys.executable, "-m", "kzero.run", f"--data_dir={tmp_path}",
                             f"--output_dir={tmp_path / 'out'}"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"kzero: error: {tmp_path}/mnist.npz: unreadable or truncated" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_an_unreadable_checkpoint_is_kept_aside_and_the_grid_goes_on(tmp_path, mnist, capsys):
    """A checkpoint truncated as a storage fault would leave it: the run says
    so in one line, keeps the file as checkpoint.keras.corrupt, trains again
    from epoch 1 and ends as an uninterrupted run; the next run of the grid
    trains too."""
    from kzero.config import Grid
    from kzero.grid import run_grid

    grid = Grid.make(scheme=("zero_normal",), runs=2, epochs=2, max_examples=4096,
                     output_dir=str(tmp_path / "runs"), experiment="faulty",
                     record_gradients=False, record_symmetry=False)
    # A real checkpoint after epoch 1: a finished 1-epoch run's model, truncated.
    first = grid.expand()[0]
    train(first.replace(epochs=1), str(tmp_path / "one"), mnist, verbose=0)
    workdir = tmp_path / "runs" / "faulty" / "fnn_zero_normal_x1" / "seed_0"
    workdir.mkdir(parents=True)
    whole = (tmp_path / "one" / "model.keras").read_bytes()
    (workdir / CHECKPOINT).write_bytes(whole[:20_000])
    capsys.readouterr()
    runs = run_grid(grid, arrays=mnist, verbose=0)
    output = capsys.readouterr().out
    assert f"{workdir / CHECKPOINT} cannot be read (" in output
    assert "kept aside as" in output and "training again from epoch 1" in output
    assert (workdir / (CHECKPOINT + ".corrupt")).read_bytes() == whole[:20_000]
    assert len(runs) == 2
    for seed in (0, 1):
        summary = read_json(workdir.parent / f"seed_{seed}" / "summary.json")
        assert summary["status"] == "finished" and summary["resumed_from_epoch"] is None
    _, uninterrupted = train(first, str(tmp_path / "whole"), mnist, verbose=0)
    assert read_json(workdir / "summary.json")["final_test_accuracy"] == \
        uninterrupted["final_test_accuracy"]


def _tiny_grid(tmp_path, **overrides):
    from kzero.config import Grid

    settings = dict(model=("logreg",), scheme=("zero_normal",), runs=3, epochs=2,
                    max_examples=256, batch_size=64, output_dir=str(tmp_path / "runs"),
                    experiment="tiny", record_symmetry=False, record_activations=False)
    return Grid.make(**{**settings, **overrides})


# What a crash, a full disk or an edit can leave of each file a finished run holds.
DAMAGE = {"summary.json": lambda text: text[:len(text) // 2],
          "config.json": lambda text: "{not json",
          "metrics.csv": lambda text: text[:text.rindex(",")]}


def test_a_damaged_run_file_costs_that_run_only_and_is_kept_aside(tmp_path, mnist, capsys):
    from kzero.grid import run_grid

    grid = _tiny_grid(tmp_path)
    run_grid(grid, arrays=mnist, verbose=0)
    variant = tmp_path / "runs" / "tiny" / "logreg_zero_normal_x1"
    columns = ("epoch", "loss", "accuracy", "test_loss", "test_accuracy")

    def metrics(seed):
        return [[row[c] for c in columns]
                for row in read_csv(variant / f"seed_{seed}" / "metrics.csv")]

    before = {seed: metrics(seed) for seed in range(3)}
    damaged = {}
    for seed, (name, damage) in enumerate(DAMAGE.items()):
        path = variant / f"seed_{seed}" / name
        damaged[seed] = damage(path.read_text())
        path.write_text(damaged[seed])
    capsys.readouterr()
    run_grid(grid, arrays=mnist, verbose=0)
    out = capsys.readouterr().out
    for seed, name in enumerate(DAMAGE):
        path = variant / f"seed_{seed}" / name
        (line,) = [line for line in out.splitlines() if f"{path} cannot be read" in line]
        assert line.endswith(f"kept aside as {path}.corrupt, the run trains again from epoch 1")
        assert (variant / f"seed_{seed}" / (name + ".corrupt")).read_text() == damaged[seed]
        # Trained again from epoch 1, as the first time: the same seed, the same metrics.
        summary = read_json(variant / f"seed_{seed}" / "summary.json")
        assert summary["status"] == "finished" and summary["resumed_from_epoch"] is None
        assert metrics(seed) == before[seed]


def test_a_finished_run_asked_for_more_epochs_is_extended_as_if_trained_that_long(
        tmp_path, mnist, capsys):
    from kzero.grid import run_grid

    run_grid(_tiny_grid(tmp_path, runs=2), arrays=mnist, verbose=0)
    capsys.readouterr()
    # Extended with the symmetry diagnostics on, which the first 2 epochs had off.
    run_grid(_tiny_grid(tmp_path, runs=2, epochs=4, record_symmetry=True), arrays=mnist,
             verbose=0)
    out = capsys.readouterr().out
    assert "logreg_zero_normal_x1/seed_0: finished 2 of the 4 epochs asked for; extending it " \
           "from epoch 2" in out
    # The progress counts the epochs both runs hold from the start, seed_1's
    # before it is reached, so its estimate is of the 3 run-epochs left.
    grid_lines = [line for line in out.splitlines() if line.startswith("kzero: grid")]
    assert [line.split(", about")[0] for line in grid_lines] == [
        f"kzero: grid {runs}/2 runs, {epochs}/8 run-epochs done"
        for runs, epochs in [(0, 5), (1, 6), (1, 7), (2, 8)]]
    workdir = tmp_path / "runs" / "tiny" / "logreg_zero_normal_x1" / "seed_0"
    summary = read_json(workdir / "summary.json")
    assert summary["epochs_completed"] == 4 and summary["resumed_from_epoch"] == 2
    run_grid(_tiny_grid(tmp_path / "whole", runs=1, epochs=4, record_symmetry=True),
             arrays=mnist, verbose=0)
    whole = tmp_path / "whole" / "runs" / "tiny" / "logreg_zero_normal_x1" / "seed_0"
    columns = ("epoch", "loss", "accuracy", "test_loss", "test_accuracy")
    assert [[r[c] for c in columns] for r in read_csv(workdir / "metrics.csv")] == [
        [r[c] for c in columns] for r in read_csv(whole / "metrics.csv")]
    # Its symmetry rows start at the epoch it was extended from, as a whole run's.
    extended = read_csv(workdir / "symmetry.csv")
    assert [row["epoch"] for row in extended] == ["2", "3", "4"]
    assert extended == [row for row in read_csv(whole / "symmetry.csv") if int(row["epoch"]) >= 2]
    # Without a kept model there is nothing to extend: one line says what to run.
    run_grid(_tiny_grid(tmp_path / "bare", runs=1, save_model=False), arrays=mnist, verbose=0)
    capsys.readouterr()
    run_grid(_tiny_grid(tmp_path / "bare", runs=1, epochs=4, save_model=False), arrays=mnist,
             verbose=0)
    assert "logreg_zero_normal_x1/seed_0: holds 2 of the 4 epochs asked for, and it kept no " \
           "model (--nosave_model): skipped; --overwrite trains it anew for 4" in \
           capsys.readouterr().out


@pytest.mark.once
def test_a_run_extended_on_another_processor_names_both_and_says_so(tmp_path, mnist, capsys,
                                                                    monkeypatch):
    """One seed rounds differently on another CPU model, so a run whose
    epochs trained on two keeps both in its provenance, with the epoch where
    the second took over."""
    from kzero import provenance
    from kzero.grid import run_grid

    workdir = tmp_path / "runs" / "tiny" / "logreg_zero_normal_x1" / "seed_0"

    def extend_on(cpu, epochs):
        monkeypatch.setattr(provenance, "processor", lambda: cpu)
        capsys.readouterr()
        run_grid(_tiny_grid(tmp_path, runs=1, epochs=epochs), arrays=mnist, verbose=0)
        return (read_json(workdir / "config.json")["provenance"]["processor"],
                capsys.readouterr().out)

    assert extend_on("CPU A", 2)[0] == "CPU A"
    recorded, out = extend_on("CPU B", 3)
    assert recorded == "CPU A up to epoch 2, then CPU B"
    assert ("its first 2 epochs trained on CPU A, the rest train on CPU B: it will not equal "
            "a run trained on either alone") in out
    recorded, out = extend_on("CPU B", 4)
    assert recorded == "CPU A up to epoch 2, then CPU B" and "will not equal" not in out
    assert extend_on("CPU A", 5)[0] == "CPU A up to epoch 2, then CPU B up to epoch 4, then CPU A"
    assert len(read_csv(workdir / "metrics.csv")) == 5


def test_a_run_resumed_from_a_config_without_a_processor_says_it_is_unknown():
    from kzero.config import RunConfig
    from kzero.provenance import resumed_on

    lines = []
    config = RunConfig().with_provenance(processor="CPU B")
    assert resumed_on(config, None, 3, lines.append).provenance.processor == \
        "a processor not recorded up to epoch 3, then CPU B"
    assert lines == []  # the first epochs may have trained on this CPU: no warning
    assert resumed_on(config, None, 0, lines.append) == config  # a run that starts anew


@pytest.mark.once
def test_a_parallel_group_resumed_on_another_processor_names_both_in_each_run(
        tmp_path, mnist, monkeypatch):
    import threading

    import keras

    from kzero import provenance
    from kzero.config import RunConfig
    from kzero.parallel import train_parallel

    configs = [RunConfig(model="logreg", scheme="zero_normal", seed=seed, epochs=2,
                         max_examples=256, batch_size=64, record_symmetry=False,
                         record_activations=False) for seed in (0, 1)]
    workdirs = [str(tmp_path / f"seed_{seed}") for seed in (0, 1)]
    stop = threading.Event()

    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            stop.set()  # after the group's checkpoint of epoch 1

    monkeypatch.setattr(provenance, "processor", lambda: "CPU A")
    with pytest.raises(KeyboardInterrupt):
        train_parallel(configs, workdirs, mnist, verbose=0, stop_request=stop,
                       callbacks=[StopAfterFirstEpoch()])
    monkeypatch.setattr(provenance, "processor", lambda: "CPU B")
    lines = []
    train_parallel(configs, workdirs, mnist, verbose=0, log=lines.append)
    for workdir in workdirs:
        assert read_json(os.path.join(workdir, "config.json"))["provenance"]["processor"] == \
            "CPU A up to epoch 1, then CPU B"
    assert sum("will not equal a run trained on either alone" in line for line in lines) == 1


def test_an_extension_stopped_before_its_first_new_epoch_finishes_when_rerun_as_before(
        tmp_path, mnist, capsys):
    """An extension moves the kept model back to a checkpoint; stopped before
    a new epoch ends, it leaves a checkpoint holding every epoch of the
    original command (as a kill between a run's last checkpoint and its
    summary does). That command, rerun, finishes the run without training."""
    from kzero.grid import run_grid

    run_grid(_tiny_grid(tmp_path, runs=1), arrays=mnist, verbose=0)
    workdir = tmp_path / "runs" / "tiny" / "logreg_zero_normal_x1" / "seed_0"
    first, rows = read_json(workdir / "summary.json"), read_csv(workdir / "metrics.csv")
    # What the extension does before it trains, and a stop leaves as it is.
    os.replace(workdir / "model.keras", workdir / CHECKPOINT)
    os.remove(workdir / "summary.json")
    capsys.readouterr()
    run_grid(_tiny_grid(tmp_path, runs=1), arrays=mnist, verbose=0)
    out = capsys.readouterr().out
    assert "logreg_zero_normal_x1/seed_0: finished after 2 epochs" in out, out
    summary = read_json(workdir / "summary.json")
    for key in ("status", "epochs_completed", "final_test_accuracy", "awakening_step"):
        assert summary[key] == first[key], key
    assert summary["resumed_from_epoch"] == 2
    assert read_csv(workdir / "metrics.csv") == rows
    assert (workdir / "model.keras").exists() and not (workdir / CHECKPOINT).exists()


def test_a_full_disk_is_one_line_leaves_no_partial_file_and_a_rerun_resumes(
        tmp_path, data_dir, capsys, monkeypatch):
    import errno

    import keras

    from test_run import run_cli_exit

    real_save, saves = keras.Model.save, []

    def save_onto_a_disk_that_fills_up(model, filepath, *args, **kwargs):
        saves.append(filepath)
        if len(saves) == 2:  # the second epoch's checkpoint: the disk fills up mid-write
            with open(filepath, "wb") as f:
                f.write(b"PK\x03\x04 the first bytes of a zip")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))
        return real_save(model, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", save_onto_a_disk_that_fills_up)
    argv = ["--experiment=full", "--dataset=mnist", "--model=logreg", "--scheme=zero_normal",
            "--epochs=3", "--runs=1", "--max_examples=256", f"--data_dir={data_dir}",
            f"--output_dir={tmp_path}"]
    code, _, err = run_cli_exit(capsys, *argv)
    workdir = tmp_path / "full" / "logreg_zero_normal_x1" / "seed_0"
    assert code == 1
    (line,) = [line for line in err.splitlines() if line.startswith("kzero")]
    assert line.startswith(f"kzero: error: no space left on the device of {workdir} (a "
                           "checkpoint here takes about ") and "rerun the same command" in line
    assert "Traceback" not in err
    # No temporary file holds the space; epoch 1's checkpoint stays (epoch 2's
    # row, written before its checkpoint failed, is redone on resume).
    assert not [name for name in os.listdir(workdir) if name.startswith(".tmp-")]
    assert (workdir / CHECKPOINT).exists()
    monkeypatch.undo()
    code, out, _ = run_cli_exit(capsys, *argv)
    assert code == 0 and "resuming after epoch 1 of 3" in out
    summary = read_json(workdir / "summary.json")
    assert summary["status"] == "finished" and summary["epochs_completed"] == 3
    assert [row["epoch"] for row in read_csv(workdir / "metrics.csv")] == ["1", "2", "3"]
