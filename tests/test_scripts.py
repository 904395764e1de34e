"""The benchmark and parity scripts run and print what they promise. Their
numbers are measured on demand, never asserted here."""

import json
import os
import subprocess
import sys

import keras
import pytest

from kzero.io import read_csv, read_json

from conftest import REPO

# Each script runs end to end in its own interpreter: the slow tier.
pytestmark = pytest.mark.slow


def run_script(*argv, env=None, returncode=0):
    result = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                            cwd=REPO, env=env, timeout=600)
    assert result.returncode == returncode, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("against", ["reference", "no_recording",
                                     pytest.param("keras_fit", marks=pytest.mark.once)])
def test_bench_prints_one_json_line(data_dir, against):
    output = run_script("scripts/bench.py", f"--data_dir={data_dir}", f"--against={against}",
                        "--scheme=lecun", "--max_examples=512", "--epochs=2", "--repeats=1")
    result = json.loads(output.strip().splitlines()[-1])
    assert result["backend"] == keras.backend.backend()
    other = "plain" if against.startswith("no_") else against
    for key in ("kzero_epoch_s", f"{other}_epoch_s", "ratio", "images_per_s",
                "pipeline_images_per_s"):
        assert result[key] > 0
    assert "peak_device_memory_mb" in result  # null on a machine without an accelerator
    assert result["train_examples"] == 512 and result["epochs"] == 2
    assert result["kzero_final_test_accuracy"] > 0.5
    if not against.startswith("no_"):
        # The other loop trains the same model (same initial weights and
        # optimizer) on the same data in the same order: it must end where
        # kzero ends, up to rounding, or the ratio compares different work.
        assert abs(result[f"{against}_final_test_accuracy"]
                   - result["kzero_final_test_accuracy"]) <= 0.002


@pytest.mark.once
def test_parity_compares_the_backends_runs_and_fails_beyond_its_tolerance(data_dir, tmp_path):
    # A negative tolerance cannot be met: the script must say so and exit 1.
    output = run_script("scripts/parity.py", f"--data_dir={data_dir}", "--backends=jax,torch",
                        "--runs=1", "--epochs=1", "--max_examples=512", "--tolerance=-1",
                        f"--output_dir={tmp_path}", returncode=1)
    lines = output.strip().splitlines()
    assert lines[0] == "| init | jax | torch | spread |"
    assert lines[2].startswith("| lecun | ") and lines[3].startswith("| zero_normal | ")
    result = json.loads(lines[-1])
    assert result["ok"] is False
    # Its numbers are the runs' own, read here from their summaries.
    for backend in ("jax", "torch"):
        for init, variant in (("lecun", "fnn_lecun"), ("zero_normal", "fnn_zero_normal_x1")):
            summary = read_json(tmp_path / backend / "parity" / variant / "seed_0" /
                                "summary.json")
            assert result["mean_final_test_accuracy"][f"{backend}/{init}"] == round(
                summary["final_test_accuracy"], 4)
    spread = abs(result["mean_final_test_accuracy"]["jax/lecun"]
                 - result["mean_final_test_accuracy"]["torch/lecun"])
    assert result["spread"]["lecun"] == pytest.approx(spread, abs=1e-4)


@pytest.mark.once
def test_paired_parity_compares_each_seed_across_backends(data_dir, tmp_path):
    # A negative tolerance cannot be met: the script must say so and exit 1.
    output = run_script("scripts/parity.py", "--paired", f"--data_dir={data_dir}",
                        "--backends=jax,torch", "--runs=1", "--epochs=1", "--max_examples=1024",
                        "--loss_tolerance=-1", f"--output_dir={tmp_path}", returncode=1)
    lines = output.strip().splitlines()
    assert lines[0] == "| init | seed | metric | jax | torch | spread |"
    result = json.loads(lines[-1])
    assert result["paired"] is True and result["ok"] is False
    # Its numbers are each seed's own epoch 1, read here from metrics.csv.
    for init, variant in (("lecun", "fnn_lecun"), ("zero_normal", "fnn_zero_normal_x1")):
        accuracies = [float(read_csv(tmp_path / backend / "parity" / variant / "seed_0" /
                                     "metrics.csv")[0]["test_accuracy"])
                      for backend in ("jax", "torch")]
        assert result["test_accuracy_spread"][f"{init}/seed_0"] == pytest.approx(
            abs(accuracies[0] - accuracies[1]), abs=1e-6)
        # The same initial weights and batches: only float rounding apart.
        assert abs(accuracies[0] - accuracies[1]) <= 0.002


@pytest.mark.once
def test_grid_bench_counts_the_arithmetic_and_times_both_ways(data_dir):
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from bench_grid import forward_flops

    from kzero.models import build_model

    assert forward_flops(build_model("mnist", "fnn")) == 2 * (784 * 500 + 500 * 10)
    # The MNIST CNN: two 'same' 5x5 convs on 28x28, then the logits.
    assert forward_flops(build_model("mnist", "cnn")) == 2 * (
        28 * 28 * 25 * 16 + 28 * 28 * 25 * 16 * 32 + 28 * 28 * 32 * 10)
    output = run_script("scripts/bench_grid.py", "--flagfile=mnist_fnn", "--epochs=1",
                        "--runs=2", "--scheme=lecun,zero_normal", "--max_examples=512",
                        "--norecord_symmetry", f"--data_dir={data_dir}")
    result = json.loads(output.strip().splitlines()[-1])
    assert (result["runs"], result["group_size"]) == (4, "auto")
    # The runner's own choice, measured: one family of the 4 runs.
    (choice,) = result["auto_choice"]
    assert choice["runs"] == 4 and str(choice["size"]) in choice["run_steps_per_s"]
    for name in ("single", "grouped"):
        # 4 run-epochs in the wall time it reports.
        assert result[f"{name}_run_epochs_per_s"] * result[f"{name}_wall_s"] == \
            pytest.approx(4, rel=0.01)
        assert 0 < result[f"{name}_fraction_of_peak"] < 1
    assert result["grouped_over_single"] == pytest.approx(
        result["grouped_run_epochs_per_s"] / result["single_run_epochs_per_s"], rel=0.01)


@pytest.mark.once
def test_the_gpu_agenda_runs_every_item_in_its_smoke_mode(data_dir, tmp_path):
    # The script calls `python`: this interpreter's, whether or not its bin/ is on PATH.
    env = {**os.environ, "KZERO_DATA_DIR": data_dir,
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])}
    result = subprocess.run(["bash", "scripts/gpu_agenda.sh", "--smoke", str(tmp_path)],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("exit 0") == 12 and "0 item(s) failed" in result.stdout
    speeds = [json.loads(line) for line in open(tmp_path / "speed.jsonl")]
    assert [(s["backend"], s["precision"]) for s in speeds] == [
        (b, p) for b in ("jax", "torch", "tensorflow") for p in ("float32", "mixed_bfloat16")]
    assert all(s["subset_epoch_seconds"] > 0 for s in speeds)
    # The census under each backend, and Figure 11's rows, each a finished run.
    for backend in ("jax", "torch", "tensorflow"):
        (workdir,) = [p for p in (tmp_path / f"census_resnet50_{backend}").glob(
            "*_zero_normal_x1_2steps/seed_0")]
        assert read_json(workdir / "summary.json")["init_check"]["erased_symmetry_breaking"]
        assert len(read_csv(workdir / "steps.csv")) == 2
    assert {p.name for p in (tmp_path / "census_resnet50_jax").iterdir()} >= {
        "cnn_zero_normal_bn_x1_2steps", "cnn_zero_normal_x1_paper_code_2steps"}
    for variant in ("lecun", "zero_normal_x1", "zero_normal_bn_x1"):
        summary = read_json(tmp_path / "cifar_resnet50" / f"logreg_{variant}" / "seed_0"
                            / "summary.json")
        assert summary["status"] == "finished"


def test_bn_statistics_tests_a_kept_model_as_its_run_did_and_with_batch_and_recomputed_statistics(
        data_dir, cifar10, tmp_path):
    from kzero.config import RunConfig
    from kzero.train import train

    workdir = tmp_path / "run"
    # After a few steps the moving statistics still carry their start
    # (momentum 0.9 from mean 0, variance 1), far from any test batch's.
    config = RunConfig(dataset="cifar10", model="cnn", scheme="lecun", epochs=1,
                       max_examples=1024, data_dir=data_dir, record_gradients=False,
                       record_activations=False, record_symmetry=False)
    train(config, str(workdir), cifar10, verbose=0)
    result = json.loads(run_script("scripts/bn_statistics.py", str(workdir), f"--data_dir={data_dir}",
                                   "--recompute_examples=2048").strip().splitlines()[-1])
    # With moving statistics it is the run's own test: the same pipeline,
    # normalisation and examples, so the same accuracy as its metrics.csv.
    assert result["moving_statistics"] == pytest.approx(result["metrics_csv"], abs=1e-6)
    assert result["metrics_csv"] == pytest.approx(
        float(read_csv(workdir / "metrics.csv")[-1]["test_accuracy"]))
    assert result["batch_statistics"] != result["moving_statistics"]
    # Statistics recomputed from training images with the kept weights test
    # about as the test batches' own do, far from the stale moving ones.
    assert (abs(result["recomputed_statistics"] - result["batch_statistics"])
            < abs(result["moving_statistics"] - result["batch_statistics"]) / 2)
    # The run keeps them, with the epoch they describe, for the report.
    assert read_json(workdir / "bn_statistics.json") == {
        key: value for key, value in result.items() if key != "run"}
    assert result["epoch"] == 1 and result["recompute_examples"] == 2048
    os.remove(workdir / "model.keras")
    missing = subprocess.run([sys.executable, "scripts/bn_statistics.py", str(workdir)],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
    assert missing.returncode == 1 and missing.stderr.strip() == (
        f"bn_statistics: {workdir / 'model.keras'} not found; give the directory of a "
        "finished run that kept its model (not --nosave_model)")


def test_symmetry_at_start_rebuilds_the_rows_a_run_recorded_before_training(
        data_dir, cifar10, tmp_path):
    from kzero.config import RunConfig
    from kzero.initializers import INIT_STREAM
    from kzero.io import write_json
    from kzero.train import train

    workdir = tmp_path / "run"
    # ZerO on the CNN starts with copies and dead units in most layers, so
    # the rows tell a rebuild of the wrong start from the right one.
    config = RunConfig(dataset="cifar10", model="cnn", scheme="zero_hadamard", epochs=1,
                       max_examples=256, data_dir=data_dir, record_gradients=False,
                       record_activations=False, save_model=False)
    train(config, str(workdir), cifar10, verbose=0)
    recorded = (workdir / "symmetry.csv").read_text()

    def rebuild():
        return json.loads(run_script("scripts/symmetry_at_start.py", str(workdir),
                                     f"--data_dir={data_dir}").strip().splitlines()[-1])

    result = rebuild()
    assert result["symmetry_csv"] == "had epoch 0" and result["equal"] is True
    assert result["copies"] > 0 and 0 < result["dead"] < result["units"]
    assert (workdir / "symmetry.csv").read_text() == recorded
    # A run that recorded only from a later epoch gets the rows it would have
    # recorded at the start, before its own.
    rows = read_csv(workdir / "symmetry.csv")
    header, *lines = recorded.splitlines(keepends=True)
    (workdir / "symmetry.csv").write_text(
        header + "".join(line for line, row in zip(lines, rows) if row["epoch"] != "0"))
    assert rebuild()["symmetry_csv"] == "epoch 0 added"
    assert (workdir / "symmetry.csv").read_text() == recorded
    # A run whose initial weights came from another stream cannot be rebuilt.
    config_json = read_json(workdir / "config.json")
    config_json["provenance"]["init_stream"] = None
    write_json(workdir / "config.json", config_json)
    older = subprocess.run([sys.executable, "scripts/symmetry_at_start.py", str(workdir)],
                           capture_output=True, text=True, cwd=REPO, timeout=120)
    assert older.returncode == 1 and older.stderr.strip() == (
        f"symmetry_at_start: {workdir}'s initial weights were drawn from init stream None and "
        f"this kzero draws them from {INIT_STREAM}, so it cannot rebuild them")
    assert (workdir / "symmetry.csv").read_text() == recorded
    os.remove(workdir / "symmetry.csv")
    missing = subprocess.run([sys.executable, "scripts/symmetry_at_start.py", str(workdir)],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
    assert missing.returncode == 1 and missing.stderr.strip() == (
        f"symmetry_at_start: {workdir / 'symmetry.csv'} not found; give the directory of a "
        "run that recorded symmetry (not --norecord_symmetry)")
