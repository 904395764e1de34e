"""The benchmark and parity scripts run and print what they promise. Their
numbers are measured on demand, never asserted here."""

import json
import subprocess
import sys

import keras
import pytest

from conftest import REPO


def run_script(*argv, env=None):
    result = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                            cwd=REPO, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("against", ["reference", "no_recording"])
def test_bench_prints_one_json_line(data_dir, against):
    output = run_script("scripts/bench.py", f"--data_dir={data_dir}", f"--against={against}",
                        "--init=lecun", "--max_examples=512", "--epochs=2", "--repeats=1")
    result = json.loads(output.strip().splitlines()[-1])
    assert result["backend"] == keras.backend.backend()
    other = "reference" if against == "reference" else "plain"
    for key in ("kzero_epoch_s", f"{other}_epoch_s", "ratio", "images_per_s",
                "pipeline_images_per_s"):
        assert result[key] > 0
    assert "peak_device_memory_mb" in result  # null on a machine without an accelerator
    assert result["ratio"] == pytest.approx(
        result["kzero_epoch_s"] / result[f"{other}_epoch_s"], rel=1e-2)
    if against == "reference":
        # The plain loop trains the same model on the same data: both learn.
        assert result["reference_final_test_accuracy"] > 0.5
        assert result["kzero_final_test_accuracy"] > 0.5


@pytest.mark.once
def test_parity_prints_a_table_and_one_json_line(data_dir):
    import os

    output = run_script("scripts/parity.py", f"--data_dir={data_dir}", "--backends=jax,torch",
                        "--runs=1", "--epochs=1", "--max_examples=512", "--tolerance=1",
                        env=dict(os.environ))
    lines = output.strip().splitlines()
    assert lines[0] == "| init | jax | torch | spread |"
    assert lines[2].startswith("| lecun | ") and lines[3].startswith("| zero_normal | ")
    result = json.loads(lines[-1])
    assert set(result["mean_final_test_accuracy"]) == {
        "jax/lecun", "jax/zero_normal", "torch/lecun", "torch/zero_normal"}
    assert result["ok"] is True
