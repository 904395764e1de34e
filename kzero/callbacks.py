"""Keras callbacks that record a run: per-epoch metrics (`metrics.csv`),
gradient distributions and layer awakening (`gradients.csv`), forward
statistics per layer (`activations.csv`), and unit symmetry (`symmetry.csv`),
each also as TensorBoard scalars or histograms.

Shaped like Keras' own `CSVLogger` and `TensorBoard`: each takes the file it
writes and the log dir of its TensorBoard events, and opens and closes its
own event writer. Callbacks given the same log dir share one event file
there (TensorBoard reads one growing file per run directory best), opened at
the first event and closed when the last of them closes. Each flushes at
every epoch's end; `close()` (also called at the end of training) is what a
caller uses when `fit` was interrupted.

TensorBoard files are written with tensorboardX, which works under every
Keras backend with or without TensorFlow installed (Keras' own TensorBoard
callback needs TensorFlow).
"""

import math
import os
import time

import keras
import numpy as np

from kzero.gradients import gradient_function
from kzero.initcheck import StageProbe
from kzero.io import save_model_atomic, write_csv
from kzero.records import HOLDOUT_COLUMNS, METRICS_COLUMNS, is_diverged, read_rows

__all__ = ["ACTIVATION_COLUMNS", "ActivationRecorder", "Checkpointer", "EpochMetricsLogger",
           "GradientRecorder", "HParamsLogger", "HoldoutEvaluator", "StageRecorder", "StepLossLogger",
           "StopOnRequest", "SymmetryMonitor", "distinct_units", "dead_fraction",
           "gradient_statistics"]

# `model.fit` reports the test split (passed as validation data) under `val_*`.
_FROM_KERAS = {"loss": "loss", "accuracy": "accuracy",
               "test_loss": "val_loss", "test_accuracy": "val_accuracy"}


# log dir -> [tensorboardX writer, number of callbacks holding it]
_WRITERS = {}


class _EventLog:
    """A callback's handle on the event file of `log_dir` (None: no events),
    taken at the first event and given back by `close`."""

    def __init__(self, log_dir):
        self.log_dir = None if log_dir is None else os.path.abspath(log_dir)
        self._writer = None

    def _open(self):
        if self._writer is None:
            if self.log_dir not in _WRITERS:
                from tensorboardX import SummaryWriter

                _WRITERS[self.log_dir] = [SummaryWriter(self.log_dir, flush_secs=30), 0]
            _WRITERS[self.log_dir][1] += 1
            self._writer = _WRITERS[self.log_dir][0]
        return self._writer

    def scalar(self, tag, value, step):
        if self.log_dir is not None:
            self._open().add_scalar(tag, value, step)

    def histogram(self, tag, values, step):
        if self.log_dir is not None:
            try:
                self._open().add_histogram(tag, values, step)
            except ValueError:
                # tensorboardX finds no bins for values near float32's range
                # (a diverging run's activations); the CSV still has them.
                pass

    def summary(self, proto):
        """A ready-made `Summary` proto (the HParams plugin's session records)."""
        if self.log_dir is not None:
            self._open().file_writer.add_summary(proto)

    def flush(self):
        if self._writer is not None:
            self._writer.flush()

    def close(self):
        if self._writer is None:
            return
        self._writer = None
        entry = _WRITERS[self.log_dir]
        entry[1] -= 1
        if entry[1] == 0:
            entry[0].close()
            del _WRITERS[self.log_dir]


def _resumed_rows(filename, column, done):
    """The rows of `filename` that a resumed run keeps: those whose `column`
    (epoch or step) is at most `done`, the epochs or steps already done. A
    fresh run (`done` 0) keeps none, whatever an earlier run left there."""
    return read_rows(filename, lambda row: row[column] <= done) if done else []


class _RecordingCallback(keras.callbacks.Callback):
    """A callback that writes TensorBoard events through `self.events`, and
    records `subject`: the model being trained, or the one given as `model`,
    a part of it (one replica of a parallel group)."""

    def __init__(self, log_dir, model=None):
        super().__init__()
        self.events = _EventLog(log_dir)
        self._subject = model

    @property
    def subject(self):
        # Reading `self.model` brings the current weights back to the trained
        # model's variables under jax, and so to those of any part of it.
        model = self.model
        return model if self._subject is None else self._subject

    def close(self):
        """Closes this callback's hold on its event file; safe to repeat."""
        self.events.close()

    def on_train_end(self, logs=None):
        self.close()


class EpochMetricsLogger(_RecordingCallback):
    """Writes one `metrics.csv` row and one set of TensorBoard scalars
    (`epoch/<column>`) per epoch, and stops training after an epoch at which
    the run diverged (`kzero.records.is_diverged`).

    The whole CSV is rewritten atomically each epoch (it is a few hundred
    bytes), so a killed run leaves every finished epoch readable.

    Args:
        filename: the CSV file, e.g. `<workdir>/metrics.csv`.
        log_dir: where its TensorBoard events go (None: no events). A run's
            own directory, so that `tensorboard --logdir runs` shows one run
            per seed directory.
        initial_epoch: when a run resumes, the epochs already done: the
            file's rows up to that epoch are kept, later ones redone.
        stop_on_divergence: whether a diverged epoch stops training.
        holdout: also write `holdout_loss` and `holdout_accuracy`, which a
            `HoldoutEvaluator` earlier in the callback list puts in the logs.
    """

    def __init__(self, filename, log_dir=None, initial_epoch=0, stop_on_divergence=True,
                 holdout=False):
        super().__init__(log_dir)
        self.path = filename
        self.rows = _resumed_rows(filename, "epoch", initial_epoch)
        self.stop_on_divergence = stop_on_divergence
        self.columns = METRICS_COLUMNS[:3] + (HOLDOUT_COLUMNS if holdout else []) + \
            METRICS_COLUMNS[3:]
        self._epoch_start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {"epoch": epoch + 1,
               "seconds": round(time.perf_counter() - self._epoch_start, 3)}
        for column, key in _FROM_KERAS.items():
            row[column] = float(logs.get(key, math.nan))
        for column in self.columns:
            if column in HOLDOUT_COLUMNS:
                row[column] = float(logs.get(column, math.nan))
        if self.stop_on_divergence and is_diverged(row["loss"], row["test_loss"]):
            # Checked per epoch, not per batch like keras.callbacks.TerminateOnNaN:
            # any batch-end callback makes Keras wait for every step to finish
            # before dispatching the next one.
            self.model.stop_training = True
        self.rows.append(row)
        write_csv(self.path, self.columns, self.rows)
        for column in self.columns[1:]:
            self.events.scalar(f"epoch/{column}", row[column], epoch + 1)
        self.events.flush()


class HoldoutEvaluator(keras.callbacks.Callback):
    """Evaluates the model on a hold-out (validation) split after every epoch
    and adds `holdout_loss` and `holdout_accuracy` to the epoch's logs, for
    the callbacks after it (`EpochMetricsLogger`).

    Args:
        data: the hold-out split as an evaluation pipeline
            (`kzero.pipelines.make_eval_pipeline`).
    """

    def __init__(self, data):
        super().__init__()
        self.data = data

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        results = self.model.evaluate(self.data, verbose=0, return_dict=True)
        logs["holdout_loss"] = float(results["loss"])
        logs["holdout_accuracy"] = float(results["accuracy"])


# The default schedule: every one of the first 5 steps (Figure 12), then
# sparse enough that recording stays a few percent of an MNIST FNN epoch
# (scripts/bench.py).
DEFAULT_GRAD_FIRST_STEPS = 5
DEFAULT_GRAD_EVERY = 1000

GRADIENT_COLUMNS = ["step", "layer", "param", "count", "mean", "std", "min", "q25", "median",
                    "q75", "max", "zero_fraction"]


def gradient_statistics(values):
    values = np.asarray(values, np.float64).ravel()
    q25, median, q75 = np.percentile(values, [25, 50, 75])
    return {"count": values.size, "mean": values.mean(), "std": values.std(),
            "min": values.min(), "q25": q25, "median": median, "q75": q75,
            "max": values.max(), "zero_fraction": float(np.mean(values == 0))}


class _ScheduledRecorder(_RecordingCallback):
    """Records the probe batch before update step s (counted from 1) for
    s = 1..`first_steps` and then every `every` steps, through `record(step)`,
    into the rows of the CSV `filename` (columns `COLUMNS`), rewritten after
    every epoch. A resumed run keeps the file's rows up to `initial_step`."""

    COLUMNS = ()

    def __init__(self, filename, log_dir, first_steps, every, initial_step, model):
        super().__init__(log_dir, model)
        self.path = filename
        self.first_steps, self.every = first_steps, every
        self.rows = _resumed_rows(filename, "step", initial_step)
        self._step = initial_step

    def due(self, step):
        return step <= self.first_steps or (self.every > 0 and step % self.every == 0)

    def record(self, step):
        raise NotImplementedError

    def on_train_batch_begin(self, batch, logs=None):
        self._step += 1
        if self.due(self._step):
            self.subject  # noqa: B018  brings the current weights back to the model under jax
            self.record(self._step)

    def on_epoch_end(self, epoch, logs=None):
        write_csv(self.path, self.COLUMNS, self.rows)
        self.events.flush()


class GradientRecorder(_ScheduledRecorder):
    """Records the distribution of every trainable variable's gradient.

    Before update step s (counted from 1) it computes the gradient of the
    training loss on a fixed probe batch at the model's current weights, for
    s = 1..`first_steps` and then every `every` steps. Each record becomes a
    TensorBoard histogram `gradients/<layer>/<param>` and a row of the run's
    `gradients.csv`. A fixed probe batch makes records comparable across steps;
    which weights are exactly zero, and so which layers receive a gradient,
    does not depend on the batch.

    `awakening_step` maps each layer with a kernel to the first recorded step
    at which its kernel gradient was non-zero (None until then).

    Args:
        filename: the CSV file, e.g. `<workdir>/gradients.csv`.
        probe: `(x, y)` numpy batch of training examples, preprocessed.
        log_dir: where its TensorBoard histograms go (None: none).
        first_steps: record every one of the first `first_steps` steps, and
            at least of the first K+1 for a model with K kernels, so that
            awakening sees every layer wake.
        every: then record every `every` steps; 0 records no more.
        initial_step: when a run resumes, the update steps already done: the
            file's rows up to that step are kept, later ones redone.
        model: the model to record, if not the one trained: a replica of a
            parallel group (with `loss`, its loss function).
        loss: the loss the gradients are of; default the model's compiled one.
    """

    COLUMNS = GRADIENT_COLUMNS

    def __init__(self, filename, probe, log_dir=None, first_steps=DEFAULT_GRAD_FIRST_STEPS,
                 every=DEFAULT_GRAD_EVERY, initial_step=0, model=None, loss=None):
        super().__init__(filename, log_dir, first_steps, every, initial_step, model)
        self.probe = probe
        self.loss = loss
        self.awakening_step = {}
        self._gradients = None

    def on_train_begin(self, logs=None):
        # `self.model` syncs the jax state: only touched when a record is due.
        model = self.subject
        self._gradients = gradient_function(model, self.loss)
        self._names = [v.path.split("/")[-2:] for v in model.trainable_variables]
        self.awakening_step = {layer: None for layer, param in self._names if param == "kernel"}
        # With zero kernels one layer wakes per step, from the output back:
        # the first K+1 steps of K kernel layers show every layer wake.
        self.first_steps = max(self.first_steps, len(self.awakening_step) + 1)
        for row in self.rows:
            self._note_awakening(row)

    def _note_awakening(self, row):
        if (row["param"] == "kernel" and self.awakening_step[row["layer"]] is None
                and row["zero_fraction"] < 1.0):
            self.awakening_step[row["layer"]] = row["step"]

    def record(self, step):
        for (layer, param), grad in zip(self._names, self._gradients(*self.probe)):
            row = {"step": step, "layer": layer, "param": param,
                   **gradient_statistics(grad)}
            self.rows.append(row)
            self._note_awakening(row)
            finite = grad[np.isfinite(grad)]
            if finite.size:  # a diverged run's NaNs stay in gradients.csv only
                self.events.histogram(f"gradients/{layer}/{param}", finite, step)


# Where ELU saturates: below -5 its gradient exp(x) is under 0.007.
SATURATION_THRESHOLD = -5.0

ACTIVATION_COLUMNS = ["step", "layer", "pre_mean", "pre_std", "pre_max_abs",
                      "saturated_fraction", "mean", "std", "max_abs"]


def activation_statistics(pre_activation, activation):
    """One `activations.csv` row's statistics of a layer's pre-activations
    (x @ kernel + bias) and activations on a batch."""
    pre = np.asarray(pre_activation, np.float64).ravel()
    out = np.asarray(activation, np.float64).ravel()
    return {"pre_mean": pre.mean(), "pre_std": pre.std(), "pre_max_abs": np.abs(pre).max(),
            "saturated_fraction": float(np.mean(pre < SATURATION_THRESHOLD)),
            "mean": out.mean(), "std": out.std(), "max_abs": np.abs(out).max()}


def _pre_activation(layer, inputs):
    """What `layer` (a Dense or Conv2D) computes before its activation."""
    x = keras.ops.cast(inputs, layer.compute_dtype)
    kernel = keras.ops.cast(layer.kernel, layer.compute_dtype)
    if isinstance(layer, keras.layers.Dense):
        out = keras.ops.matmul(x, kernel)
    else:
        out = keras.ops.conv(x, kernel, strides=layer.strides, padding=layer.padding,
                             data_format=layer.data_format, dilation_rate=layer.dilation_rate)
    if layer.bias is not None:
        out = out + keras.ops.cast(layer.bias, layer.compute_dtype)
    return out


class ActivationRecorder(_ScheduledRecorder):
    """Records what every dense and 2-D conv layer computes on a fixed probe
    batch, in inference mode, at the gradient recorder's schedule as given:
    before update step s for s = 1..`first_steps` and then every `every`
    steps (not stretched to K+1 steps as gradients are for awakening: a deep
    conv model's forward statistics are costly, and need no such steps). Per
    layer, the distribution of its pre-activations (x @ kernel + bias) and of
    its activations (the layer's output), as TensorBoard histograms
    `activations/<layer>/pre_activation` and `activations/<layer>/activation`
    and a row of `activations.csv`:
    mean, std and max |x| of each, and the fraction of pre-activations below
    -5, where ELU saturates. This is what the paper's guess about large bias
    scales, "an over amplification of the input signals during the forward
    pass", can be checked against.

    Args: as `GradientRecorder`'s, `probe` an `(x, y)` batch (y unused).
    """

    COLUMNS = ACTIVATION_COLUMNS

    def __init__(self, filename, probe, log_dir=None, first_steps=DEFAULT_GRAD_FIRST_STEPS,
                 every=DEFAULT_GRAD_EVERY, initial_step=0, model=None):
        super().__init__(filename, log_dir, first_steps, every, initial_step, model)
        self.probe = probe[0]

    def on_train_begin(self, logs=None):
        model = self.subject
        self._layers = [layer for layer in model.layers
                        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))]
        self._inputs = keras.Model(model.inputs, [layer.input for layer in self._layers])

    def record(self, step):
        inputs = self._inputs([self.probe], training=False)
        for layer, x in zip(self._layers, inputs):
            pre = _pre_activation(layer, x)
            out = layer.activation(pre)
            pre, out = keras.ops.convert_to_numpy(pre), keras.ops.convert_to_numpy(out)
            self.rows.append({"step": step, "layer": layer.name,
                              **activation_statistics(pre, out)})
            for name, values in (("pre_activation", pre), ("activation", out)):
                finite = values[np.isfinite(values)].astype(np.float32)
                if finite.size:
                    self.events.histogram(f"activations/{layer.name}/{name}", finite, step)


STAGE_COLUMNS = ["step", "stage", "input_dependence", "rms"]


class StageRecorder(_ScheduledRecorder):
    """Records how much each stage's output depends on the input
    (`kzero.initcheck.input_dependence`: 0 when every example gives the same
    output), and its root mean square, on a fixed probe batch in training
    mode, at the gradient recorder's schedule as given: rows of `stages.csv`
    and TensorBoard scalars `stages/input_dependence/<stage>`. Whether a
    zero-weight network's output ever comes to depend on its input is what
    its random biases are meant to make possible.

    Args: as `ActivationRecorder`'s, and `stages`: the stage layers' names
    (a `ModelSpec.stages`; see `kzero.initcheck.stage_layers`).
    """

    COLUMNS = STAGE_COLUMNS

    def __init__(self, filename, probe, log_dir=None, first_steps=DEFAULT_GRAD_FIRST_STEPS,
                 every=DEFAULT_GRAD_EVERY, initial_step=0, model=None, stages=()):
        super().__init__(filename, log_dir, first_steps, every, initial_step, model)
        self.probe = probe[0]
        self.stages = stages

    def on_train_begin(self, logs=None):
        self._probe = StageProbe(self.subject, self.stages)

    def record(self, step):
        for stage, values in self._probe(self.probe).items():
            self.rows.append({"step": step, "stage": stage, **values})
            self.events.scalar(f"stages/input_dependence/{stage}", values["input_dependence"],
                               step)


class StepLossLogger(keras.callbacks.Callback):
    """Writes each update step's training loss to a CSV (`steps.csv`: step,
    loss) after every epoch: the first-steps census. Keras logs the mean loss
    of the epoch so far; the step's own is recovered from two successive
    means. Its batch-end hook makes Keras wait for every step, so the runner
    adds it only to runs of a few steps (`--max_steps`)."""

    def __init__(self, filename):
        super().__init__()
        self.path = filename
        self.rows = []
        self._mean = 0.0
        self._step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._mean, self._batches = 0.0, 0

    def on_train_batch_end(self, batch, logs=None):
        mean = float((logs or {}).get("loss", math.nan))
        self._batches += 1
        self._step += 1
        loss = self._batches * mean - (self._batches - 1) * self._mean
        self._mean = mean
        self.rows.append({"step": self._step, "loss": loss})

    def on_epoch_end(self, epoch, logs=None):
        write_csv(self.path, ["step", "loss"], self.rows)


class HParamsLogger(_RecordingCallback):
    """Records a run as a session of TensorBoard's HParams plugin: its
    hyperparameters when training begins, and its end. The plugin takes the
    metrics from the run's own scalars (`epoch/test_accuracy`, ...), so its
    table and parallel-coordinates view compare the runs of a grid.

    Args:
        log_dir: the run's directory (its TensorBoard run).
        hparams: {name: str, bool or number}.
    """

    def __init__(self, log_dir, hparams):
        super().__init__(log_dir)
        self.hparams = dict(hparams)

    def on_train_begin(self, logs=None):
        from tensorboardX.summary import hparams

        _, self._session_start, self._session_end = hparams(self.hparams, {})
        self.events.summary(self._session_start)
        self.events.flush()

    def on_train_end(self, logs=None):
        self.events.summary(self._session_end)
        super().on_train_end(logs)


class StopOnRequest(keras.callbacks.Callback):
    """Raises `KeyboardInterrupt` at the next batch boundary once `request`
    (a `threading.Event`) is set, before the epoch's files are written.
    It checks at batch begin: a batch-end hook would cost Keras its
    asynchronous dispatch of the training steps.

    A `KeyboardInterrupt` raised straight from a signal handler is not
    reliable here: it can fire inside a garbage-collection callback of jax,
    which swallows it, and training goes on. The runner's handler only sets
    the event; this callback raises where nothing swallows it.
    """

    def __init__(self, request):
        super().__init__()
        self.request = request

    def on_train_batch_begin(self, batch, logs=None):
        if self.request.is_set():
            raise KeyboardInterrupt

    on_test_batch_begin = on_train_batch_begin


class SynchronousBatchEnd(keras.callbacks.Callback):
    """Keeps Keras' batch-end callbacks on the main thread, in step with the
    training steps.

    Where no callback overrides a batch-end hook, Keras 3 hands each batch's
    logs to a thread pool, whose threads turn them into NumPy (each waiting
    on the step that computed them) while the main thread dispatches the
    next step. With the model replicated over several jax CPU devices, runs
    with that pool aborted in XLA's all-reduce rendezvous (`Termination
    timeout for all reduce`, rc 134), the pool's threads all waiting on step
    results; with the hook overridden, which turns the pool off, none did
    (the tally is in docs/running.md)."""

    def on_train_batch_end(self, batch, logs=None):
        pass

    on_test_batch_end = on_train_batch_end


class Checkpointer(keras.callbacks.Callback):
    """Saves the model with its optimizer state after every epoch, atomically,
    so that a killed run resumes from its last finished epoch. Goes last in
    the callback list: an epoch counts as done once its files are written."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if is_diverged(logs.get("loss", math.nan), logs.get("val_loss", math.nan)):
            return  # nothing worth resuming from
        save_model_atomic(self.model, self.path)


SYMMETRY_COLUMNS = ["epoch", "layer", "units", "distinct_units", "dead_fraction"]


def distinct_units(kernel, bias, rtol=1e-6):
    """Number of distinct units: a unit is a copy of another when its incoming
    weights and bias lie within `rtol` (relative to the larger of the two
    norms) of that unit's. 1e-6 is about ten float32 ulps: units that a
    symmetric init makes equal stay within it, and random biases that are this
    close make units that are, in practice, symmetric too."""
    # One column per unit: its incoming weights, then its bias.
    units = np.concatenate([kernel.reshape(-1, kernel.shape[-1]), bias[None, :]])
    units = units.astype(np.float64)
    norms = (units**2).sum(axis=0)
    # Prefilter on a random projection (a unit vector): close units have
    # projections within rtol * the larger norm, so only those pairs need the
    # full distance. After symmetry is broken there are almost none, which
    # saves the n x n Gram matrix (most of this function's cost per epoch).
    direction = np.random.default_rng(0).standard_normal(units.shape[0])
    projection = (direction / np.linalg.norm(direction)) @ units
    order = np.argsort(projection)
    window = rtol * np.sqrt(norms.max()) * (1 + 1e-9)
    last = np.searchsorted(projection[order], projection[order] + window, side="right")
    pairs = last - np.arange(len(order)) - 1  # candidates after each unit, in projection order
    if pairs.sum() > 4 * len(order):
        squared_distance = norms[:, None] + norms[None, :] - 2 * units.T @ units
        close = squared_distance <= rtol**2 * np.maximum(norms[:, None], norms[None, :])
        # A unit is new if it is not close to any earlier unit.
        return int((~np.tril(close, k=-1).any(axis=1)).sum())
    starts = np.repeat(np.arange(len(order)), pairs)
    offsets = np.arange(pairs.sum()) - np.repeat(np.cumsum(pairs) - pairs, pairs)
    first, second = order[starts], order[starts + 1 + offsets]
    squared_distance = ((units[:, first] - units[:, second])**2).sum(axis=0)
    close = squared_distance <= rtol**2 * np.maximum(norms[first], norms[second])
    # The later unit of each close pair is a copy; every other unit is new.
    copies = np.maximum(first, second)[close]
    return len(order) - len(np.unique(copies))


def dead_fraction(outputs, atol=1e-6):
    """Fraction of units (last axis) whose output is the same for every
    example and position of the probe batch. `outputs` may be a backend
    tensor: only each unit's extremes leave the device (a ResNet-50's layer
    outputs on 32 probe images are 419 MB)."""
    ops = keras.ops
    flat = ops.reshape(outputs, (-1, outputs.shape[-1]))
    high, low, size = (ops.convert_to_numpy(extreme).astype(np.float64) for extreme in (
        ops.max(flat, axis=0), ops.min(flat, axis=0), ops.max(ops.abs(flat), axis=0)))
    return float(np.mean(high - low <= atol * (1 + size)))


class SymmetryMonitor(_RecordingCallback):
    """Per conv and dense layer, before training and after every epoch: how
    many units are distinct (`distinct_units`), and the fraction whose output
    is constant over a probe batch (`dead_fraction`). Written to the run's
    `symmetry.csv` and as TensorBoard scalars `symmetry/<quantity>/<layer>`.

    Args:
        filename: the CSV file, e.g. `<workdir>/symmetry.csv`.
        probe_x: numpy batch of inputs for the dead-unit check.
        log_dir: where its TensorBoard scalars go (None: none).
        initial_epoch: when a run resumes, the epochs already done: the
            file's rows up to that epoch are kept, later ones redone.
        model: the model to record, if not the one trained (a replica).
    """

    def __init__(self, filename, probe_x, log_dir=None, initial_epoch=0, model=None):
        super().__init__(log_dir, model)
        self.path = filename
        self.probe_x = probe_x
        self.initial_epoch = initial_epoch
        self.rows = _resumed_rows(filename, "epoch", initial_epoch)

    def on_train_begin(self, logs=None):
        model = self.subject
        self.layers = [layer for layer in model.layers
                       if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))]
        self._outputs = keras.Model(model.inputs, [layer.output for layer in self.layers])
        # A run extended with symmetry on that recorded none before holds the
        # weights of its last epoch, not the initial ones: labelled as such.
        if not self.rows or self.rows[-1]["epoch"] < self.initial_epoch:
            self.record(self.initial_epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.record(epoch + 1)

    def record(self, epoch):
        self.subject  # noqa: B018  brings the current weights back to the model under jax
        outputs = self._outputs([self.probe_x], training=False)
        for layer, output in zip(self.layers, outputs):
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            bias = (keras.ops.convert_to_numpy(layer.bias) if layer.use_bias
                    else np.zeros(kernel.shape[-1], kernel.dtype))
            row = {"epoch": epoch, "layer": layer.name, "units": kernel.shape[-1],
                   "distinct_units": distinct_units(kernel, bias),
                   "dead_fraction": dead_fraction(output)}
            self.rows.append(row)
            for quantity in ("distinct_units", "dead_fraction"):
                self.events.scalar(f"symmetry/{quantity}/{layer.name}", row[quantity], epoch)
        write_csv(self.path, SYMMETRY_COLUMNS, self.rows)
        self.events.flush()
