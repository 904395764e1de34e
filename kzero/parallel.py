"""Several runs trained as one compiled model (`--parallel_runs`): the seeds,
init schemes and bias scales of one architecture.

The paper's models are small: on a GPU one run is bound by per-step overhead,
not arithmetic. Here R replicas, each built from its own seed, sit side by
side in one Keras model with R inputs and R outputs. The loss is their sum,
and since no variable is shared, each replica's gradients and Adam updates
are exactly those of the replica alone; each also reads its own seed's data
order. Every replica writes its own run directory (config, metrics.csv,
summary.json, TensorBoard scalars) as if it had run alone.

Each replica is made by the same functions as a single run
(`kzero.train.build_run_model`, `compile_run_model`, `run_pipelines`), so a
group honours every field of its configs that a single run does, and records
each replica's diagnostics (gradients and awakening, activations, symmetry)
as a single run would (`kzero.train.diagnostics`). After every epoch the
group saves itself, optimizer state included, to `group_checkpoint.keras` in
its first run's directory; a killed group resumes from there, as a single run
does from its own checkpoint.
"""

import math
import os
import sys
import time

import keras

from kzero.callbacks import Checkpointer, EpochMetricsLogger, StopOnRequest
from kzero.config import RunConfig
from kzero.datasets import get_dataset
from kzero.io import write_json
from kzero.pipelines import resolve_pipeline
from kzero.provenance import recorded_processor, resumed_on, stamp
from kzero.quiet import import_tensorflow
from kzero.records import diverged_epoch
from kzero.train import (build_run_model, compile_run_model, finish_run, read_checkpoint,
                         resumed_epoch, run_arrays, run_callbacks, run_pipelines)
from kzero.train import steps_per_epoch as run_steps_per_epoch

__all__ = ["GROUP_CHECKPOINT", "train_parallel"]

# In the directory of a group's first run.
GROUP_CHECKPOINT = "group_checkpoint.keras"

# The settings in which the runs of one group may differ: each replica is
# built from its own config. The rest, the architecture and what the one
# optimizer and the one fit loop see, must be the same for all.
_MAY_DIFFER = {"seed", "scheme", "bias_scale"}


def group_key(config):
    """What the runs of one group share: the settings less `_MAY_DIFFER`."""
    return tuple(sorted((name, repr(value)) for name, value in config.settings().items()
                        if name not in _MAY_DIFFER))


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
    """Where Keras reports one output's metrics: `<output>_accuracy`,
    `<output>_cross_entropy` and `<i>/<output>_loss` (and their `val_` forms)
    in Keras 3.15; plain `accuracy` and `loss` when the model has only this
    output."""

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

    def __init__(self, workdir, output, only_output, initial_epoch=0):
        super().__init__(os.path.join(workdir, "metrics.csv"), workdir, initial_epoch,
                         stop_on_divergence=False)
        self.find, self.only_output = _log_keys(output, only_output), only_output

    def on_epoch_end(self, epoch, logs=None):
        if self.rows and diverged_epoch(self.rows[-1:]) is not None:
            return  # alone, this run would have stopped after that epoch
        logs = logs or {}
        own = {}
        loss = "loss" if self.only_output else "cross_entropy"
        for column, metric, validation in (("loss", loss, False), ("accuracy", "accuracy", False),
                                           ("val_loss", loss, True),
                                           ("val_accuracy", "accuracy", True)):
            key = self.find(logs, metric, validation)
            own[column] = logs[key] if key is not None else math.nan
        super().on_epoch_end(epoch, own)


class _GroupEpochLine(keras.callbacks.Callback):
    """What a group prints in place of Keras' line of every replica's
    metrics, which runs to thousands of characters: after each epoch, per
    variant, the spread of its runs' test accuracy, read from their loggers.
    `variants` names each logger's variant (a group may mix schemes)."""

    def __init__(self, loggers, variants, epochs, print_line=print):
        super().__init__()
        self.loggers, self.variants, self.epochs = loggers, variants, epochs
        self.print_line = print_line

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        by_variant = {}
        for variant, logger in zip(self.variants, self.loggers):
            if logger.rows and logger.rows[-1]["epoch"] == epoch + 1:
                by_variant.setdefault(variant, []).append(
                    float(logger.rows[-1]["test_accuracy"]))
        parts = [f"{variant}: {_spread(accuracies)}" for variant, accuracies in by_variant.items()]
        self.print_line(f"epoch {epoch + 1}/{self.epochs} - "
                        f"{time.perf_counter() - self._start:.0f}s - "
                        f"{'; '.join(parts) or 'no run logged the epoch'}", flush=True)


def _spread(accuracies):
    finite = [a for a in accuracies if math.isfinite(a)]
    if not finite:
        return "no finite test accuracy"
    if len(finite) == 1:
        return f"test accuracy {finite[0]:.4f}"
    return (f"test accuracy {min(finite):.4f} to {max(finite):.4f}, mean "
            f"{sum(finite) / len(finite):.4f}, over {len(finite)} runs")


class _GroupProgressBar(_GroupEpochLine):
    """On a terminal, also a bar of the epoch's steps with each variant's
    training loss (the mean over its runs, of the batches so far)."""

    def __init__(self, loggers, variants, epochs, steps):
        super().__init__(loggers, variants, epochs)
        self.steps = steps

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._bar = keras.utils.Progbar(self.steps, stateful_metrics=[
            f"{variant} loss" for variant in dict.fromkeys(self.variants)])

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        losses = {}
        for index, variant in enumerate(self.variants):
            value = logs.get(f"{index}/replica_{index}_loss", logs.get("loss", math.nan))
            losses.setdefault(f"{variant} loss", []).append(float(value))
        self._bar.update(batch + 1, [(name, sum(values) / len(values))
                                     for name, values in losses.items()])


def _check_one_architecture(configs):
    first = configs[0].settings()
    for config in configs[1:]:
        for name, value in config.settings().items():
            if name not in _MAY_DIFFER and value != first[name]:
                raise ValueError(f"a parallel group trains one architecture: its configs differ "
                                 f"in {name} ({first[name]!r} and {value!r})")


def _build_group(configs):
    """The group: one model with an input and an output per replica; and
    the replicas, in order."""
    replicas = []
    for index, config in enumerate(configs):
        # Distinct variable paths: under the torch backend, replicas with equal
        # paths trained wrongly (all but the last), as if sharing Adam state.
        with keras.name_scope(f"replica_{index}"):
            model = build_run_model(config)
        # A name per replica: Keras needs unique names among the group's layers.
        replicas.append(keras.Model(model.inputs, model.outputs, name=f"replica_{index}"))
    input_shape = get_dataset(configs[0].dataset).input_shape
    inputs = [keras.Input(input_shape, name=f"images_{index}") for index in range(len(configs))]
    group = keras.Model(inputs, [replica(x) for replica, x in zip(replicas, inputs)])
    compile_run_model(group, configs[0], outputs=len(configs))
    return group, replicas


def _load_checkpoint(group, path, log):
    """Loads the group's weights and optimizer state from `path`; False where
    the file cannot be read (`kzero.train.read_checkpoint`). Into a group
    built afresh: a loaded model would lose the replicas' variable paths,
    which keep their optimizer states apart."""
    group.optimizer.build(group.trainable_variables)

    def load(path):
        group.load_weights(path)
        return True

    return bool(read_checkpoint(path, load, log, restart="training the group again from epoch 1"))


def train_parallel(configs, workdirs, arrays, verbose="auto", stop_request=None, callbacks=(),
                   log=None):
    """Trains the runs `configs` (`RunConfig`s that differ at most in seed,
    init scheme and bias scale) as one model, writing each run's results to
    its entry of `workdirs`, its `config.json` included. Batches come through
    the configs' pipeline, with NumPy's in place of tf.data (a group zips one
    pipeline per replica).
    `callbacks`: more Keras callbacks for `fit`, called after kzero's.
    If the first workdir holds the checkpoint of this group
    (`GROUP_CHECKPOINT`), training resumes after its last finished epoch;
    `log` is called with a line saying so. The caller makes sure that the
    workdirs hold nothing of another group.
    Returns the runs' summaries, in order."""
    import_tensorflow()  # Keras' saving would import it, with its start-up lines
    configs = [RunConfig.coerce(config) for config in configs]
    _check_one_architecture(configs)
    pipeline = resolve_pipeline(configs[0].pipeline)
    pipeline = "numpy" if pipeline == "tf" else pipeline
    configs = [stamp(config, input_pipeline=pipeline) for config in configs]
    steps_per_epoch = run_steps_per_epoch(configs[0], run_arrays(configs[0], arrays))
    checkpoint = os.path.join(workdirs[0], GROUP_CHECKPOINT)
    group, replicas = _build_group(configs)
    initial_epoch = 0
    if os.path.exists(checkpoint):
        if _load_checkpoint(group, checkpoint, log):
            initial_epoch = resumed_epoch(group, steps_per_epoch, configs[0].epochs, log)
        else:
            group, replicas = _build_group(configs)

    pipelines = [run_pipelines(c, arrays, initial_epoch, pipeline=pipeline) for c in configs]
    names = [x.name for x in group.inputs]
    train_data = _Zipped([train for train, _, _ in pipelines], names)
    test_data = _Zipped([test for _, _, test in pipelines], names)

    # The group's first run says it once where the processor has changed.
    configs = [resumed_on(config, recorded_processor(workdir), initial_epoch,
                          log if i == 0 else None)
               for i, (config, workdir) in enumerate(zip(configs, workdirs))]
    loggers, runs, gradient_recorders = [], [], []
    for config, replica, workdir in zip(configs, replicas, workdirs):
        os.makedirs(workdir, exist_ok=True)
        write_json(os.path.join(workdir, "config.json"), config.to_dict())
        loggers.append(_ReplicaMetrics(workdir, replica.name, len(replicas) == 1,
                                       initial_epoch))
        gradient_recorder, own = run_callbacks(config, arrays, workdir, replica, initial_epoch,
                                               steps_per_epoch, loggers[-1], replica=True)
        gradient_recorders.append(gradient_recorder)
        runs += own
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    variants = [config.variant for config in configs]
    # After every replica's metrics logger, which it reads.
    line = (_GroupProgressBar(loggers, variants, configs[0].epochs, steps_per_epoch)
            if verbose == 1 else _GroupEpochLine(loggers, variants, configs[0].epochs)
            if verbose else None)
    callbacks = [*runs, *([line] if line else []), Checkpointer(checkpoint), *callbacks]
    if stop_request is not None:
        callbacks.insert(0, StopOnRequest(stop_request))
    start = time.perf_counter()
    try:
        group.fit(train_data, validation_data=test_data, epochs=configs[0].epochs,
                  initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                  callbacks=callbacks, verbose=0, shuffle=False)
    finally:
        for callback in runs:
            if hasattr(callback, "close"):
                callback.close()
    wall = time.perf_counter() - start
    summaries = [finish_run(config, workdir, logger.rows, wall, initial_epoch, gradient_recorder,
                            model=replica, parallel_runs=len(configs))
                 for config, logger, replica, workdir, gradient_recorder in zip(
                     configs, loggers, replicas, workdirs, gradient_recorders)]
    if os.path.exists(checkpoint):
        os.remove(checkpoint)
    return summaries
