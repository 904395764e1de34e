"""A whole grid's speed, one JSON line; run on demand, never as a timed test.

    KERAS_BACKEND=tensorflow python scripts/bench_grid.py --flagfile=mnist_cnn \\
        --epochs=2 --runs=2 --max_examples=4096 --data_dir=../shared/data

Takes every flag of `python -m kzero.run` (a flagfile included) and trains the
grid twice into temporary directories, diagnostics on as the flags say: run
by run (`--parallel_runs=1`), and in groups of `--group_size` runs: by
default `auto`, the runner's opt-in, which measures the group sizes and
takes the fastest (here whatever the grid's size: its timing is part of the
grouped wall time, and what it measured is in `auto_choice`); 0: all the runs
of one architecture. It prints the grid's run-epochs per second
both ways, their ratio, and the arithmetic the grid did per second of wall
time (training ~3x the forward pass, the test split's forward pass after
every epoch) against a matmul peak measured here in the same precision: how
far the grid is from what the machine can do. Wall times include start-up
and compilation, as a user's grid does.
"""

import contextlib
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags  # noqa: E402

import kzero.run as kzero_run  # noqa: E402  defines the runner's flags

flags.DEFINE_string("group_size", "auto", "Runs per group of the grouped pass: auto (the "
                    "runner's default, measured), 0 (all the runs of one architecture) or R.")
FLAGS = flags.FLAGS


def forward_flops(model):
    """Multiply-adds x 2 of one example's forward pass through the model's
    dense and 2-D conv layers (what dominates the paper's models)."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            total += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
        elif isinstance(layer, keras.layers.Conv2D):
            height, width = layer.output.shape[1:3]
            total += 2 * height * width * int(
                layer.kernel.shape[0] * layer.kernel.shape[1] * layer.kernel.shape[2]
                * layer.kernel.shape[3])
    return total


def matmul_peak(precision, size=2048, repeats=5):
    """GFLOP/s of the best of `repeats` square matmuls in the compute dtype."""
    import keras

    dtype = {"float32": "float32", "mixed_bfloat16": "bfloat16",
             "mixed_float16": "float16"}[precision]
    a = keras.ops.cast(keras.random.normal((size, size), seed=0), dtype)
    b = keras.ops.cast(keras.random.normal((size, size), seed=1), dtype)
    keras.ops.convert_to_numpy(keras.ops.matmul(a, b))  # warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(keras.ops.matmul(a, b))
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def timed_grid(grid, arrays, directory):
    from kzero.grid import expand, run_grid

    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the runner's lines; the JSON alone on stdout
        run_grid(grid.replace(output_dir=directory), arrays=arrays, verbose=0)
    wall = time.perf_counter() - start
    return wall, sum(run.epochs for run in expand(grid))


def main(argv):
    import keras

    from kzero.datasets import load_dataset
    from kzero.grid import expand
    from kzero.parallel import group_key
    from kzero.train import build_run_model, run_arrays

    grid = kzero_run.config_from_flags()
    arrays = load_dataset(grid.get("dataset"), grid.get("data_dir"))
    runs = expand(grid)
    families = {}
    for run in runs:
        families.setdefault(group_key(run), []).append(run)
    if FLAGS.group_size == "auto":
        import kzero.group_size

        kzero.group_size.MIN_RUN_STEPS = 0  # a benchmark's grid is small on purpose
        group_size = "auto"
    else:
        group_size = int(FLAGS.group_size) or max(len(members) for members in families.values())
    flops_per_epoch = 0
    for run in runs:
        model = build_run_model(run)
        train_examples = len(run_arrays(run, arrays)["x_train"][:run.max_examples])
        test_examples = len(arrays["x_test"][:run.max_examples])
        flops_per_epoch += forward_flops(model) * (3 * train_examples + test_examples)
    flops = flops_per_epoch / len(runs)  # per run-epoch
    result = {"backend": keras.backend.backend(), "experiment": grid.experiment_name,
              "runs": len(runs), "epochs": grid.get("epochs"), "max_examples": grid.get("max_examples"),
              "precision": grid.get("precision"), "group_size": group_size,
              "record_gradients": grid.get("record_gradients")}
    with tempfile.TemporaryDirectory() as tmp:
        for name, size in (("single", 1), ("grouped", group_size)):
            wall, run_epochs = timed_grid(grid.replace(parallel_runs=size), arrays,
                                          os.path.join(tmp, name))
            result[f"{name}_wall_s"] = round(wall, 2)
            result[f"{name}_run_epochs_per_s"] = round(run_epochs / wall, 4)
            result[f"{name}_gflop_per_s"] = round(run_epochs * flops / wall / 1e9, 2)
            choices = os.path.join(tmp, name, grid.experiment_name, "parallel_runs.json")
            if size == "auto" and os.path.exists(choices):
                with open(choices) as f:
                    result["auto_choice"] = [{"size": c["size"], "runs": len(c["runs"]),
                                              "run_steps_per_s": c["run_steps_per_s"]}
                                             for c in json.load(f).values()]
    result["grouped_over_single"] = round(result["grouped_run_epochs_per_s"]
                                          / result["single_run_epochs_per_s"], 3)
    result["matmul_peak_gflop_per_s"] = round(matmul_peak(grid.get("precision")), 1)
    for name in ("single", "grouped"):
        result[f"{name}_fraction_of_peak"] = round(
            result[f"{name}_gflop_per_s"] / result["matmul_peak_gflop_per_s"], 4)
    print(json.dumps(result))


if __name__ == "__main__":
    kzero_run._parse_flags(sys.argv)
    main(sys.argv)
