"""Training one run: build, compile, fit with the test split evaluated after
every epoch (the paper's metric), and record the results in the run's workdir.
A run killed mid-way resumes from its last finished epoch."""

import math
import os
import time

import keras

from kzero.callbacks import (DEFAULT_GRAD_EVERY, DEFAULT_GRAD_FIRST_STEPS, Checkpointer,
                             EpochMetricsLogger, GradientRecorder, StopOnRequest,
                             SymmetryMonitor)
from kzero.data import count_steps, make_pipelines, probe_batch
from kzero.io import read_csv, write_json
from kzero.models import PAPER_RESNET_INITIALIZED_LAYERS, build_model

__all__ = ["CHECKPOINT", "INIT_SCOPES", "JIT_COMPILE", "PRECISIONS", "compile_model",
           "diverged_epoch", "run_summary", "train"]

# Which layers an init scheme reaches. "paper_code" reproduces the paper's public
# ResNet-50 code, whose zero init only reached the stem conv and the last dense
# layer; every other layer keeps the reference init.
INIT_SCOPES = {"all": None, "paper_code": PAPER_RESNET_INITIALIZED_LAYERS}

# Keras' jit_compile: "auto" is XLA under jax (and under tensorflow on an
# accelerator), eager under torch; "true" under torch is torch.compile, which
# on a 2-core CPU cut the MNIST FNN's steady epoch from 1.9-2.6 s to 1.1-1.3 s
# but took 14-34 s to compile, so it pays only on long runs (scripts/bench.py
# --jit_compile).
JIT_COMPILE = {"auto": "auto", "true": True, "false": False}

# Keras dtype policies: mixed ones compute in 16 bits with float32 variables;
# compile() adds loss scaling for mixed_float16.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

# Examples whose layer outputs decide which units are dead: enough to tell a
# constant unit from a live one, few enough to keep ResNet-50's outputs small.
SYMMETRY_PROBE_SIZE = 32

# The latest finished epoch's model and optimizer state; removed when the run ends.
CHECKPOINT = "checkpoint.keras"


def compile_model(model, learning_rate, outputs=1, jit_compile="auto"):
    """Adam with PyTorch's defaults (the paper's code): eps 1e-8, not Keras'
    1e-7; cross-entropy on logits and accuracy, for each of `outputs` outputs
    (their losses are summed). `jit_compile` is a key of `JIT_COMPILE`."""
    def loss():
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def metrics():
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate, epsilon=1e-8),
        loss=loss() if outputs == 1 else [loss() for _ in range(outputs)],
        metrics=metrics() if outputs == 1 else [metrics() for _ in range(outputs)],
        jit_compile=JIT_COMPILE[jit_compile],
    )
    return model


def _number(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _rows(workdir, name, keep):
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
        return []
    rows = [{k: _number(v) for k, v in row.items()} for row in read_csv(path)]
    return [row for row in rows if keep(row)]


def diverged_epoch(rows):
    """The first `metrics.csv` row's epoch with a non-finite loss, or None."""
    for row in rows:
        if not (math.isfinite(row["loss"]) and math.isfinite(row["test_loss"])):
            return row["epoch"]
    return None


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


def train(config, workdir, arrays, verbose="auto", stop_request=None):
    """Trains one run described by `config` and writes its results to `workdir`.

    If `workdir` holds a checkpoint of an unfinished run, training resumes
    after its last finished epoch, and ends as the uninterrupted run would have.

    Args:
        config: dict with at least `dataset`, `model`, `init`, `bias_scale`,
            `activation`, `seed`, `epochs`, `batch_size`, `learning_rate`;
            optional `max_examples` (first N examples of each split),
            `pipeline` (see `kzero.data.make_pipelines`),
            `init_scope` (a key of `INIT_SCOPES`), `record_gradients`,
            `grad_first_steps`, `grad_every` (see `GradientRecorder`) and
            `record_symmetry` (see `SymmetryMonitor`), `distribution` ("none" or
            "data_parallel": batches split over all local devices, jax only),
            `precision` (one of `PRECISIONS`), `jit_compile` (a key of
            `JIT_COMPILE`).
        workdir: the run's directory; receives `metrics.csv`, `summary.json`,
            `gradients.csv`, `symmetry.csv` and the TensorBoard event file.
        arrays: the dataset as returned by `kzero.data.load_arrays`.
        verbose: passed to `model.fit`.
        stop_request: a `threading.Event`; once set, training stops at the
            next batch with `KeyboardInterrupt`, leaving the last finished
            epoch's checkpoint to resume from.

    Returns:
        `(model, summary)`: the trained model and the dict written to
        `summary.json`.
    """
    if config.get("distribution", "none") == "data_parallel":
        # Variables replicated, each batch split over the local devices; the
        # callbacks and checkpoints see ordinary (replicated) variables.
        with keras.distribution.DataParallel().scope():
            return _train(config, workdir, arrays, verbose, stop_request)
    return _train(config, workdir, arrays, verbose, stop_request)


def _train(config, workdir, arrays, verbose, stop_request):
    from tensorboardX import SummaryWriter

    os.makedirs(workdir, exist_ok=True)
    is_resnet = config["model"] == "resnet50"
    checkpoint = os.path.join(workdir, CHECKPOINT)
    steps_per_epoch = count_steps(arrays, config["batch_size"], config.get("max_examples"))
    if os.path.exists(checkpoint):
        model = keras.saving.load_model(checkpoint)
        # The optimizer's step count says which epochs the checkpoint holds;
        # rows written after it (a kill between the two) are redone.
        initial_epoch = int(model.optimizer.iterations) // steps_per_epoch
    else:
        # The policy is global in Keras: set for the build only. Each layer
        # keeps its own, which the checkpoint records.
        previous_policy = keras.config.dtype_policy()
        keras.config.set_dtype_policy(config.get("precision", "float32"))
        try:
            model = build_model(
                config["dataset"], config["model"], init=config["init"],
                bias_scale=config["bias_scale"] if config["bias_scale"] is not None else 1.0,
                activation=config["activation"], seed=config["seed"],
                initialized_layers=INIT_SCOPES[config.get("init_scope", "all")],
            )
        finally:
            keras.config.set_dtype_policy(previous_policy)
        compile_model(model, config["learning_rate"],
                      jit_compile=config.get("jit_compile", "auto"))
        initial_epoch = 0
    train_data, _, test_data = make_pipelines(
        arrays, config["dataset"], config["batch_size"], seed=config["seed"],
        epochs=config["epochs"], initial_epoch=initial_epoch, normalize=is_resnet,
        augment=is_resnet, max_examples=config.get("max_examples"),
        pipeline=config.get("pipeline", "auto"),
    )
    initial_step = initial_epoch * steps_per_epoch

    writer = SummaryWriter(workdir, flush_secs=30)
    metrics_logger = EpochMetricsLogger(
        workdir, writer, _rows(workdir, "metrics.csv", lambda r: r["epoch"] <= initial_epoch))
    callbacks = [metrics_logger]
    if stop_request is not None:
        callbacks.insert(0, StopOnRequest(stop_request))
    gradient_recorder = None
    if config.get("record_gradients", True) or config.get("record_symmetry", True):
        probe = probe_batch(arrays, config["dataset"], config["batch_size"], normalize=is_resnet)
    if config.get("record_gradients", True):
        gradient_recorder = GradientRecorder(
            workdir, writer, probe,
            first_steps=config.get("grad_first_steps", DEFAULT_GRAD_FIRST_STEPS),
            every=config.get("grad_every", DEFAULT_GRAD_EVERY),
            rows=_rows(workdir, "gradients.csv", lambda r: r["step"] <= initial_step),
            initial_step=initial_step)
        callbacks.append(gradient_recorder)
    if config.get("record_symmetry", True):
        callbacks.append(SymmetryMonitor(
            workdir, writer, probe[0][:SYMMETRY_PROBE_SIZE],
            rows=_rows(workdir, "symmetry.csv", lambda r: r["epoch"] <= initial_epoch)))
    callbacks.append(Checkpointer(checkpoint))
    start = time.perf_counter()
    try:
        model.fit(
            train_data, validation_data=test_data, epochs=config["epochs"],
            initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
            callbacks=callbacks, verbose=verbose,
            shuffle=False,  # the pipeline shuffles, per epoch and seeded
        )
    finally:
        writer.close()
    summary = run_summary(metrics_logger.rows, time.perf_counter() - start,
                          resumed_from_epoch=initial_epoch or None)
    if gradient_recorder is not None:
        summary["awakening_step"] = gradient_recorder.awakening_step
    write_json(os.path.join(workdir, "summary.json"), summary)
    if os.path.exists(checkpoint):
        os.remove(checkpoint)
    return model, summary
