"""What a newcomer meets: --help, the paper's flagfiles by name, a console that
shows only kzero's and Keras' lines, Ctrl-C, and TensorBoard's HParams tab."""

import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from kzero.io import read_json
from kzero.train import CHECKPOINT, train

from conftest import REPO
from test_reliability import KZERO_RUN_AS_FROM_A_TERMINAL

# Every line a run may print: kzero's own, and Keras' per-epoch progress.
ALLOWED = [r"kzero: \d+ runs? of \S+ -> \S+",
           r"\[\d+/\d+\] \S+/seed_\d+: (training|resuming after epoch \d+ of \d+)",
           r"\[\d+/\d+\] \S+/seed_\d+: finished after \d+ epochs, test accuracy \d\.\d{4} "
           r"in [\d.]+ s",
           r"Epoch \d+/\d+",
           r"kzero: grid \d+/\d+ runs, \d+/\d+ run-epochs done(, about \d+m\d\ds left)?",
           r"\d+/\d+ - \d+m?s - \d+m?s/step - accuracy: [\d.]+ - loss: [\d.]+ - "
           r"val_accuracy: [\d.]+ - val_loss: [\d.]+"]


def kzero_run(*argv, cwd=REPO, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "kzero.run", *argv], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


@pytest.mark.slow
@pytest.mark.once
def test_help_exits_0_and_names_the_flagfiles():
    result = kzero_run("--help")
    assert result.returncode == 0, result.stderr
    assert "mnist_cnn, mnist_cnn_precision, mnist_cnn_scaled, mnist_fnn" in result.stdout
    assert "docs/running.md" in result.stdout and "--parallel_runs" in result.stdout


@pytest.mark.slow
@pytest.mark.once
@pytest.mark.parametrize("backend", ["jax", pytest.param("tensorflow",
                                                         marks=pytest.mark.needs_tensorflow)])
def test_a_run_prints_only_kzeros_and_keras_lines(tmp_path, data_dir, backend):
    env = dict(os.environ, KERAS_BACKEND=backend)
    result = kzero_run("--flagfile=flags/mnist_fnn.flags", "--epochs=1", "--runs=1",
                       "--max_examples=2048", f"--data_dir={data_dir}",
                       f"--output_dir={tmp_path}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    strays = [line for line in lines if not any(re.fullmatch(p, line) for p in ALLOWED)]
    assert strays == [] and len(lines) == 1 + 3 * 4  # training, Keras, grid, result per run
    grid = [line.split(", about")[0] for line in lines if line.startswith("kzero: grid")]
    assert grid == [f"kzero: grid {k}/3 runs, {k}/3 run-epochs done" for k in (1, 2, 3)]


# A user's script under Keras' default backend, tensorflow: kzero imported first
# silences TensorFlow's native start-up lines, device discovery included.
USERS_SCRIPT = """
import kzero
import keras
import tensorflow as tf
model = kzero.build_model("mnist", "fnn", scheme="zero_normal", seed=0)
print(keras.ops.convert_to_numpy(model(tf.zeros((1, 28, 28, 1)))).shape)
print(len(tf.config.list_physical_devices()) > 0)
"""


@pytest.mark.once
@pytest.mark.needs_tensorflow
def test_import_kzero_in_a_users_script_prints_nothing_of_tensorflows(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND",
                                                           "TF_CPP_MIN_LOG_LEVEL")}
    env["KERAS_HOME"] = str(tmp_path)  # no keras.json: Keras' default backend
    result = subprocess.run([sys.executable, "-c", USERS_SCRIPT], capture_output=True,
                            text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["(1,", "10)", "True"] and result.stderr == "", \
        result.stderr


@pytest.mark.once
def test_grid_progress_counts_skipped_resumed_and_grouped_runs():
    from kzero.config import RunConfig
    from kzero.progress import GridProgress

    runs = [RunConfig(dataset="mnist", model="fnn", scheme="lecun", seed=k, epochs=10)
            for k in range(4)]
    lines, now = [], [0.0]
    progress = GridProgress(runs, lines.append, clock=lambda: now[0])
    progress.run_finished(runs[0])  # skipped: finished earlier
    assert progress.line() == "kzero: grid 1/4 runs, 10/40 run-epochs done"
    now[0] = 30.0
    progress.epoch_finished(runs[1], 7)  # resumed after epoch 6 of its checkpoint
    # One epoch trained in 30 s; 23 run-epochs left.
    assert lines[-1] == "kzero: grid 1/4 runs, 17/40 run-epochs done, about 11m30s left"
    reporter = progress.callback(runs[2:])  # a group of two
    now[0] = 60.0
    reporter.on_epoch_end(0)
    assert lines[-1] == "kzero: grid 1/4 runs, 19/40 run-epochs done, about 7m00s left"
    for epoch in range(1, 10):
        reporter.on_epoch_end(epoch)
    progress.run_finished(runs[1])  # diverged after epoch 7: nothing of it is left
    assert progress.line().startswith("kzero: grid 4/4 runs, 40/40 run-epochs done")
    assert len(lines) == 11


@pytest.mark.slow
@pytest.mark.once
def test_the_papers_flagfiles_are_found_by_name_from_anywhere(tmp_path, data_dir):
    common = ["--epochs=1", "--runs=1", "--max_examples=256", "--scheme=lecun",
              f"--data_dir={data_dir}", f"--output_dir={tmp_path}"]
    by_flag = kzero_run("--flagfile=mnist_logreg", *common, cwd=tmp_path)
    assert by_flag.returncode == 0, by_flag.stderr[-2000:]
    assert read_json(tmp_path / "mnist_logreg" / "logreg_lecun" / "seed_0" / "config.json")[
        "epochs"] == 1
    # The console script pip installed next to this interpreter, whether or
    # not its bin/ is on PATH.
    console_script = os.path.join(os.path.dirname(sys.executable), "kzero-run")
    bare = subprocess.run([console_script, "cifar_logreg", *common], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)
    assert bare.returncode == 0, bare.stderr[-2000:]
    assert glob.glob(str(tmp_path / "cifar_logreg" / "logreg_lecun" / "seed_0" / "model.keras"))
    unknown = kzero_run("--flagfile=mnist_nope", *common, cwd=tmp_path)
    assert unknown.returncode == 2 and "mnist_nope" in unknown.stderr


@pytest.mark.slow
def test_ctrl_c_stops_a_run_at_once_and_exits(tmp_path, data_dir):
    argv = [*KZERO_RUN_AS_FROM_A_TERMINAL, "--dataset=mnist", "--model=fnn",
            "--scheme=lecun", "--epochs=20", "--runs=1", f"--data_dir={data_dir}",
            f"--output_dir={tmp_path}"]
    workdir = tmp_path / "mnist_fnn" / "fnn_lecun" / "seed_0"
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=REPO)
    deadline = time.time() + 300
    while not (workdir / CHECKPOINT).exists():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.02)
    time.sleep(0.5)  # well inside the next epoch
    sent = time.perf_counter()
    process.send_signal(signal.SIGINT)
    lines, stopped = [], None
    for line in process.stdout:  # the run's own stop, timed as it is printed
        lines.append(line)
        if stopped is None and "kzero: interrupted" in line:
            stopped = time.perf_counter() - sent
    process.wait(timeout=120)
    exited = time.perf_counter() - sent
    output = "".join(lines)
    assert process.returncode == 130, output[-2000:]
    assert stopped is not None and stopped < 1.0, f"stopped {stopped} s after SIGINT"
    # The rest is the interpreter's and the backends' shutdown, longest under torch.
    assert exited < 10.0, f"{exited:.1f} s from SIGINT to exit"


def test_each_run_is_a_session_of_tensorboards_hparams_tab(tmp_path, mnist):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import api_pb2, metadata

    config = dict(dataset="mnist", model="fnn", scheme="zero_normal", bias_scale=0.5, seed=3,
                  epochs=1, max_examples=512, optimizer="sgd", learning_rate=0.1,
                  record_gradients=False, record_symmetry=False)
    train(config, str(tmp_path), mnist, verbose=0)
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    content = accumulator.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(
        content[metadata.SESSION_START_INFO_TAG])
    hparams = {name: getattr(value, value.WhichOneof("kind"))
               for name, value in start.hparams.items()}
    assert hparams == {"experiment": "mnist_fnn", "dataset": "mnist", "model": "fnn",
                       "scheme": "zero_normal", "bias_scale": 0.5, "init_scope": "all",
                       "activation": "elu", "seed": 3, "optimizer": "sgd",
                       "learning_rate": 0.1, "batch_size": 128, "epochs": 1,
                       "precision": "float32", "protocol": "paper_text", "holdout": 0,
                       "order": "epoch", "bn_statistics": "moving",
                       "normalization_std": "dataset", "crop_fill": "mean"}
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS
    # The metrics the tab shows are the run's own scalars.
    assert "epoch/test_accuracy" in accumulator.Tags()["scalars"]


def test_a_groups_console_shows_each_variant_apart(capsys):
    from types import SimpleNamespace

    from kzero.parallel import _GroupProgressBar

    rows = [[{"epoch": 1, "test_accuracy": a}] for a in (0.5, 0.7, 0.2)]
    loggers = [SimpleNamespace(rows=r) for r in rows]
    bar = _GroupProgressBar(loggers, ["fnn_lecun", "fnn_lecun", "fnn_zero"], epochs=3, steps=1)
    bar.on_epoch_begin(0)
    bar.on_train_batch_end(0, {"0/replica_0_loss": 1.0, "1/replica_1_loss": 3.0,
                               "2/replica_2_loss": 5.0, "loss": 9.0})
    bar.on_epoch_end(0)
    out = capsys.readouterr().out
    # The bar: each variant's mean loss over its runs, never the sum over replicas.
    assert "fnn_lecun loss: 2.0000" in out and "fnn_zero loss: 5.0000" in out
    assert "9.0000" not in out
    assert out.rstrip().splitlines()[-1].endswith(
        "fnn_lecun: test accuracy 0.5000 to 0.7000, mean 0.6000, over 2 runs; "
        "fnn_zero: test accuracy 0.2000")
