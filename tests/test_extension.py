"""kzero extended from outside: a dataset, a model and an init scheme that
tests/blobs_extension.py registers, without editing kzero/, run through the
command-line grid and read by the report; and tensorflow-datasets datasets
by name."""

import glob
import os
import subprocess
import sys

import keras
import pytest

import blobs_extension  # noqa: F401  registers blobs, tiny_mlp and zero_half_normal
from kzero import datasets
from kzero.io import read_csv, read_json
from kzero.analysis.report import plot_experiment, report

from conftest import REPO
from test_run import run_cli, run_dirs

# Each test trains through the runner or a fresh interpreter: the slow tier.
pytestmark = pytest.mark.slow


def test_a_registered_dataset_model_and_scheme_run_through_the_grid_and_report(
        tmp_path):
    common = ["--dataset=blobs", "--epochs=5", "--runs=2", "--batch_size=32",
              f"--output_dir={tmp_path}"]
    run_cli(*common, "--experiment=blobs_logreg", "--model=logreg", "--scheme=lecun")
    run_cli(*common, "--experiment=blobs_mlp", "--model=tiny_mlp",
            "--scheme=zero_half_normal,lecun")
    dirs = run_dirs(tmp_path / "blobs_mlp")
    assert [os.path.relpath(d, tmp_path) for d in dirs] == [
        f"blobs_mlp/{variant}/seed_{seed}" for variant in ("tiny_mlp_lecun",
                                                           "tiny_mlp_zero_half_normal_x1")
        for seed in (0, 1)]
    for workdir in dirs:
        config = read_json(os.path.join(workdir, "config.json"))
        assert (config["dataset"], config["model"]) == ("blobs", "tiny_mlp")
        rows = read_csv(os.path.join(workdir, "metrics.csv"))
        assert [r["epoch"] for r in rows] == ["1", "2", "3", "4", "5"]
        summary = read_json(os.path.join(workdir, "summary.json"))
        assert summary["status"] == "finished" and summary["final_test_accuracy"] > 0.9
    # Zero kernels: the hidden layer wakes a step after the logits, as in the paper.
    summary = read_json(os.path.join(dirs[2], "summary.json"))
    assert summary["awakening_step"] == {"hidden": 2, "logits": 1}
    model = keras.saving.load_model(os.path.join(dirs[2], "model.keras"))
    assert model.input_shape == (None, 8, 8, 1) and model.output_shape == (None, 3)

    stats = report([str(tmp_path)], str(tmp_path / "report"))
    assert stats[("blobs_mlp", "tiny_mlp_zero_half_normal_x1")]["rows"][-1]["n"] == 2
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## blobs_mlp" in text
    assert "| tiny_mlp_zero_half_normal_x1 | paper_text | 5/5 | 2/2 |" in text
    drawn = plot_experiment("blobs_mlp", stats, str(tmp_path / "again.png"))
    assert drawn["baseline: logreg_lecun (n=2)"]["dashed"]  # the spec's baseline


@pytest.mark.once
def test_the_runner_imports_extensions_named_on_its_command_line(tmp_path):
    argv = [sys.executable, "-m", "kzero.run", "--dataset=blobs", "--model=tiny_mlp",
            "--scheme=zero_half_normal", "--runs=1", "--epochs=1", f"--output_dir={tmp_path}"]
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "tests"))
    unknown = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert unknown.returncode == 2 and "--dataset=blobs: not valid" in unknown.stderr
    result = subprocess.run([*argv, "--extensions=blobs_extension"], capture_output=True,
                            text=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (workdir,) = run_dirs(tmp_path / "blobs_tiny_mlp")
    config = read_json(os.path.join(workdir, "config.json"))
    assert config["provenance"]["extensions"] == ["blobs_extension"]
    assert config["model"] == "tiny_mlp"
    missing = subprocess.run([*argv, "--extensions=no_such_module"], capture_output=True,
                             text=True, cwd=REPO, env=env, timeout=300)
    assert missing.returncode == 2
    assert "kzero: error: --extensions=no_such_module: cannot be imported" in missing.stderr


@pytest.mark.needs_tensorflow
@pytest.mark.parametrize("dataset,model,input_shape,classes,parameters", [
    ("fashion_mnist", "fnn", (28, 28, 1), 10, 397_510),  # the paper's MNIST FNN
    ("cifar100", "logreg", (32, 32, 3), 100, 32 * 32 * 3 * 100 + 100),
])
def test_a_tensorflow_datasets_dataset_runs_by_name(tmp_path, monkeypatch, dataset, model,
                                                     input_shape, classes, parameters):
    import tensorflow_datasets as tfds

    # Offline: tfds' mock data has the real dataset's features, random values.
    monkeypatch.delenv(datasets.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(datasets, "_can_reach", lambda host, **kw: True)
    with tfds.testing.mock_data(num_examples=300):
        run_cli(f"--dataset={dataset}", f"--model={model}", "--scheme=zero_normal", "--runs=1",
                "--epochs=1", f"--output_dir={tmp_path}")
    (workdir,) = run_dirs(tmp_path / f"{dataset}_{model}")
    assert read_json(os.path.join(workdir, "config.json"))["dataset"] == dataset
    assert len(read_csv(os.path.join(workdir, "metrics.csv"))) == 1
    assert read_json(os.path.join(workdir, "summary.json"))["status"] == "finished"
    trained = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    assert trained.input_shape[1:] == input_shape and trained.output_shape == (None, classes)
    assert trained.count_params() == parameters
    assert glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
