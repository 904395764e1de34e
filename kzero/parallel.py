"""Several seeds of one variant trained as one compiled model (`--parallel_runs`).

The paper's models are small: on a GPU one run is bound by per-step overhead,
not arithmetic. Here R replicas, each built from its own seed, sit side by
side in one Keras model with R inputs and R outputs. The loss is their sum,
and since no variable is shared, each replica's gradients and Adam updates
are exactly those of the replica alone; each also reads its own seed's data
order. Every replica writes its own run directory (config, metrics.csv,
summary.json, TensorBoard scalars) as if it had run alone.

What a parallel group does not do: record gradients or symmetry (those are
per-model callbacks), or resume mid-way (an interrupted group starts again).
"""

import math
import os
import time

import keras

from kzero.callbacks import EpochMetricsLogger, StopOnRequest
from kzero.data import make_pipelines
from kzero.io import write_json
from kzero.models import INPUT_SHAPES, build_model
from kzero.train import INIT_SCOPES, compile_model, diverged_epoch, run_summary

__all__ = ["train_parallel"]


class _Zipped(keras.utils.PyDataset):
    """Batch i of every replica's own pipeline: the images by input name, the
    labels as a tuple in output order."""

    def __init__(self, pipelines, input_names):
        super().__init__()
        self.pipelines, self.input_names = pipelines, input_names

    def __len__(self):
        return len(self.pipelines[0])

    def __getitem__(self, i):
        batches = [pipeline[i] for pipeline in self.pipelines]
        return ({name: x for name, (x, _) in zip(self.input_names, batches)},
                tuple(y for _, y in batches))


def _log_keys(output, only_output):
    """Where Keras reports one output's metrics: `<output>_accuracy` and
    `<i>/<output>_loss` (and their `val_` forms) in Keras 3.15; plain
    `accuracy` and `loss` when the model has only this output."""

    def find(logs, metric, validation):
        if only_output:
            key = f"val_{metric}" if validation else metric
            return key if key in logs else None
        for key in logs:
            name = key[len("val_"):] if validation else key
            if key.startswith("val_") == validation and (
                    name == f"{output}_{metric}" or name.endswith(f"/{output}_{metric}")):
                return key
        return None

    return find


class _ReplicaMetrics(EpochMetricsLogger):
    """One replica's `metrics.csv` row per epoch, from the group's logs."""

    def __init__(self, workdir, writer, output, only_output):
        super().__init__(workdir, writer, stop_on_nan=False)
        self.find = _log_keys(output, only_output)

    def on_epoch_end(self, epoch, logs=None):
        if self.rows and diverged_epoch(self.rows[-1:]) is not None:
            return  # alone, this run would have stopped after that epoch
        logs = logs or {}
        own = {}
        for column, metric, validation in (("loss", "loss", False), ("accuracy", "accuracy", False),
                                           ("val_loss", "loss", True),
                                           ("val_accuracy", "accuracy", True)):
            key = self.find(logs, metric, validation)
            own[column] = logs[key] if key is not None else math.nan
        super().on_epoch_end(epoch, own)


def train_parallel(configs, workdirs, arrays, verbose="auto", stop_request=None):
    """Trains the runs `configs` (one variant, different seeds) as one model,
    writing each run's results to its entry of `workdirs`. Takes the configs
    of `kzero.train.train`, less its recording options, and reads the batches
    through their `input_pipeline`, "numpy" (the default) or "device". Returns
    the runs' summaries, in order."""
    from tensorboardX import SummaryWriter

    first = configs[0]
    replicas = []
    for config in configs:
        # Distinct variable paths: under the torch backend, replicas with equal
        # paths trained wrongly (all but the last), as if sharing Adam state.
        with keras.name_scope(f"seed_{config['seed']}"):
            model = build_model(
                config["dataset"], config["model"], init=config["init"],
                bias_scale=config["bias_scale"] if config["bias_scale"] is not None else 1.0,
                activation=config["activation"], seed=config["seed"],
                initialized_layers=INIT_SCOPES[config.get("init_scope", "all")])
        # A name per replica: Keras needs unique names among the group's layers.
        replicas.append(keras.Model(model.inputs, model.outputs, name=f"seed_{config['seed']}"))
    inputs = [keras.Input(INPUT_SHAPES[first["dataset"]], name=f"images_seed_{c['seed']}")
              for c in configs]
    group = keras.Model(inputs, [replica(x) for replica, x in zip(replicas, inputs)])
    compile_model(group, first["learning_rate"], outputs=len(configs),
                  jit_compile=first.get("jit_compile", "auto"))

    is_resnet = first["model"] == "resnet50"
    pipelines = [make_pipelines(arrays, c["dataset"], c["batch_size"], seed=c["seed"],
                                epochs=c["epochs"], normalize=is_resnet, augment=is_resnet,
                                max_examples=c.get("max_examples"),
                                pipeline=c.get("input_pipeline", "numpy"))
                 for c in configs]
    steps_per_epoch = pipelines[0][1]
    names = [x.name for x in inputs]
    train_data = _Zipped([train for train, _, _ in pipelines], names)
    test_data = _Zipped([test for _, _, test in pipelines], names)

    writers, loggers = [], []
    for replica, workdir in zip(replicas, workdirs):
        os.makedirs(workdir, exist_ok=True)
        writers.append(SummaryWriter(workdir, flush_secs=30))
        loggers.append(_ReplicaMetrics(workdir, writers[-1], replica.name, len(replicas) == 1))
    callbacks = [*loggers] if stop_request is None else [StopOnRequest(stop_request), *loggers]
    start = time.perf_counter()
    try:
        group.fit(train_data, validation_data=test_data, epochs=first["epochs"],
                  steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=verbose,
                  shuffle=False)
    finally:
        for writer in writers:
            writer.close()
    wall = time.perf_counter() - start
    summaries = []
    for logger, workdir in zip(loggers, workdirs):
        summary = {**run_summary(logger.rows, wall), "parallel_runs": len(configs)}
        write_json(os.path.join(workdir, "summary.json"), summary)
        summaries.append(summary)
    return summaries
