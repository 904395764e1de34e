"""Training one run: build, compile, fit with the test split evaluated after
every epoch (the paper's metric), and record the results in the run's workdir.
A run killed mid-way resumes from its last finished epoch.

The pieces of a run (its model, optimizer, input pipelines and probe batch)
are made by the functions here from a `RunConfig` alone, and parallel groups
(`kzero.parallel`) make their replicas with the same functions, so a group
honours every field that a single run does.
"""

import functools
import os
import sys
import time

import keras
import numpy as np

from kzero.callbacks import (ActivationRecorder, Checkpointer, EpochMetricsLogger,
                             GradientRecorder, HParamsLogger, HoldoutEvaluator, StageRecorder,
                             StepLossLogger, StopOnRequest, SymmetryMonitor,
                             SynchronousBatchEnd)
from kzero.config import JIT_COMPILE, RunConfig
from kzero.datasets import get_dataset, load_dataset
from kzero.io import read_json, save_model_atomic, write_json
from kzero.initcheck import check_init, init_warning
from kzero.models import BN_EPSILON, INIT_SCOPES, MODELS, build_model
from kzero.optimizers import make_optimizer
from kzero.pipelines import (count_steps, make_eval_pipeline, make_pipelines, probe_batch,
                             resolve_pipeline, split_holdout)
from kzero.protocols import alternative_std
from kzero.provenance import recorded_processor, resumed_on, stamp
from kzero.quiet import import_tensorflow
from kzero.records import run_summary

__all__ = ["CHECKPOINT", "INIT_CHECK", "MODEL_FILE", "build_run_model", "compile_run_model",
           "crop_fill", "finish", "finish_run", "holdout_pipeline", "hparams_of",
           "input_normalization", "record_init_check", "resumed_epoch", "run_arrays",
           "run_callbacks", "run_pipelines", "run_probe", "steps_per_epoch", "train"]

# Examples whose layer outputs decide which units are dead: enough to tell a
# constant unit from a live one, few enough to keep ResNet-50's outputs small.
SYMMETRY_PROBE_SIZE = 32

# The latest finished epoch's model and optimizer state, while the run trains.
CHECKPOINT = "checkpoint.keras"
# The trained model of a finished run (`save_model`).
MODEL_FILE = "model.keras"
# What `kzero.initcheck.check_init` found before the first step; `summary.json`
# repeats it under "init_check".
INIT_CHECK = "init_check.json"


def build_run_model(config):
    """The run's model, uncompiled, under the run's dtype policy. The policy is
    global in Keras, so it is set for the build only; each layer keeps its own,
    which a saved model records."""
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(config.precision)
    try:
        return build_model(
            config.dataset, config.model, scheme=config.scheme,
            bias_scale=config.bias_scale if config.bias_scale is not None else 1.0,
            activation=config.activation, seed=config.seed,
            initialized_layers=INIT_SCOPES[config.init_scope],
            bn_statistics=config.bn_statistics,
            bn_epsilon=BN_EPSILON if config.bn_epsilon is None else config.bn_epsilon,
            bn_exact_mean=config.bn_exact_mean,
            # Options that no RunConfig field sets keep the model's defaults.
            **{name: getattr(config, name, None) for name in MODELS.get(config.model).options})
    finally:
        keras.config.set_dtype_policy(previous_policy)


def cross_entropy():
    """The loss every run trains on: cross-entropy on logits."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _float32_cross_entropy(labels, logits):
    # In float32 as the loss is: Keras' cross-entropy metric computes in the
    # logits' dtype, bfloat16 under --precision=mixed_bfloat16.
    return keras.losses.sparse_categorical_crossentropy(
        labels, keras.ops.cast(logits, "float32"), from_logits=True)


def compile_run_model(model, config, outputs=1):
    """Compiles with the run's optimizer, cross-entropy on logits and accuracy
    for each of `outputs` outputs (a group's losses are summed). A group also
    gets each output's cross-entropy as a metric, `cross_entropy`: the
    per-output losses Keras logs weigh every batch alike under tensorflow,
    where the batch size is unknown when the step is traced, so with a partial
    last batch they are not the mean over examples that a single run logs."""
    def metrics():
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        if outputs == 1:
            return [accuracy]
        return [accuracy, keras.metrics.MeanMetricWrapper(
            _float32_cross_entropy, name="cross_entropy", dtype="float32")]

    model.compile(
        optimizer=make_optimizer(config.optimizer, config.learning_rate, config.weight_decay),
        loss=cross_entropy() if outputs == 1 else [cross_entropy() for _ in range(outputs)],
        metrics=metrics() if outputs == 1 else [metrics() for _ in range(outputs)],
        jit_compile=JIT_COMPILE[config.jit_compile],
    )
    return model


def steps_per_epoch(config, arrays):
    """Update steps per epoch of the run on `arrays` (`run_arrays`): every
    batch, the last one possibly short, or the first `max_steps`."""
    steps = count_steps(arrays, config.batch_size, config.max_examples)
    return steps if config.max_steps is None else min(steps, config.max_steps)


# The (model, scheme, scope) triples warned of in this process: a grid's seeds
# share one warning.
_WARNED = set()


def record_init_check(config, model, arrays, workdir, loss=None):
    """Runs `kzero.initcheck.check_init` on the run's fresh model and probe
    batch, writes it to `<workdir>/init_check.json`, and prints a
    `kzero: warning:` line (once per model, scheme and scope) where the
    scheme's random biases are removed by batch norms. Returns the check."""
    x, y = run_probe(config, arrays)
    check = check_init(model, x, y, stages=MODELS.get(config.model).stages, loss=loss)
    write_json(os.path.join(workdir, INIT_CHECK), check)
    scheme = config.scheme + ("" if config.init_scope == "all" else f" ({config.init_scope} scope)")
    warning = init_warning(check, config.model, scheme)
    if warning and (config.model, config.scheme, config.init_scope) not in _WARNED:
        _WARNED.add((config.model, config.scheme, config.init_scope))
        print(f"kzero: warning: {warning}", file=sys.stderr, flush=True)
    return check


def run_arrays(config, arrays):
    """The dataset as the run trains on it: `arrays` less the run's hold-out
    (`config.holdout` examples, in `x_holdout` / `y_holdout`), if any."""
    return split_holdout(arrays, config.holdout, config.seed, config.max_examples)


def input_normalization(config, arrays):
    """What the model asks of its inputs: per-channel normalisation or none:
    the dataset's constants (else statistics of `arrays`' training images),
    its std replaced where `normalization_std` says so."""
    if not MODELS.get(config.model).normalize:
        return None
    mean, std = get_dataset(config.dataset).normalization(arrays)
    other_std = alternative_std(config.normalization_std, config.dataset)
    return mean, std if other_std is None else np.asarray(other_std, np.float32)


def crop_fill(config, normalization):
    """The model input that pads the run's random crops: 0, or black (pixel
    value 0) normalised as the images are."""
    if config.crop_fill == "mean" or normalization is None:
        return None
    mean, std = normalization
    return ((0.0 - mean) / std).astype(np.float32)


def run_pipelines(config, arrays, initial_epoch=0, pipeline=None):
    """`(train, steps_per_epoch, test)` for the run, as the model asks for
    them (normalisation, augmentation), through `pipeline` (default: the
    config's). `arrays` are the run's (`run_arrays`)."""
    normalization = input_normalization(config, arrays)
    return make_pipelines(
        arrays, config.batch_size, seed=config.seed, epochs=config.epochs,
        initial_epoch=initial_epoch, normalization=normalization,
        augment=MODELS.get(config.model).augment, max_examples=config.max_examples,
        pipeline=pipeline or config.pipeline, order=config.order,
        crop_fill=crop_fill(config, normalization))


def holdout_pipeline(config, arrays):
    """The run's hold-out split as an evaluation pipeline, or None."""
    if "x_holdout" not in arrays:
        return None
    return make_eval_pipeline(arrays["x_holdout"], arrays["y_holdout"], config.batch_size,
                              input_normalization(config, arrays), config.pipeline)


def run_probe(config, arrays):
    """The fixed batch the diagnostics look at: the first `batch_size`
    training examples, preprocessed as the model sees them, unaugmented."""
    return probe_batch(arrays, config.batch_size, input_normalization(config, arrays))


# What TensorBoard's HParams tab shows of each run.
HPARAMS = ("experiment", "dataset", "model", "depth", "width", "scheme", "bias_scale", "init_scope",
           "activation",
           "seed", "optimizer", "learning_rate", "weight_decay", "batch_size", "epochs",
           "precision", "protocol", "holdout", "order", "bn_statistics", "normalization_std",
           "crop_fill")


def hparams_of(config):
    """The run's hyperparameters for the HParams plugin; those a run does not
    have (None: a bias scale its scheme ignores) are left out."""
    values = {name: getattr(config, name) for name in HPARAMS if name != "experiment"}
    values["experiment"] = config.experiment_name
    return {name: value for name, value in values.items() if value is not None}


def train(config, workdir, arrays=None, verbose="auto", stop_request=None, log=None,
          callbacks=()):
    """Trains one run and writes its results to `workdir`.

    If `workdir` holds a checkpoint of an unfinished run, training resumes
    after its last finished epoch, and ends as the uninterrupted run would have.

    Args:
        config: a `RunConfig` (or a dict of its fields).
        workdir: the run's directory; receives `config.json`, `metrics.csv`,
            `summary.json`, `gradients.csv`, `symmetry.csv`, the TensorBoard
            event file and, once finished, `model.keras`.
        arrays: the dataset as `kzero.datasets.load_dataset` returns it;
            loaded from `config.dataset` and `config.data_dir` if not given.
        verbose: passed to `model.fit`.
        stop_request: a `threading.Event`; once set, training stops at the
            next batch with `KeyboardInterrupt`, leaving the last finished
            epoch's checkpoint to resume from.
        log: called with a line of text when the run resumes, saying after
            which epoch.
        callbacks: more Keras callbacks for `fit`, called after kzero's.

    Returns:
        `(model, summary)`: the trained model and the dict written to
        `summary.json`.
    """
    config = RunConfig.coerce(config)
    if arrays is None:
        arrays = load_dataset(config.dataset, config.data_dir)
    if config.distribution == "data_parallel":
        # Variables replicated, each batch split over the local devices; the
        # callbacks and checkpoints see ordinary (replicated) variables.
        with keras.distribution.DataParallel().scope():
            return _train(config, workdir, arrays, verbose, stop_request, log, callbacks)
    return _train(config, workdir, arrays, verbose, stop_request, log, callbacks)


def _train(config, workdir, arrays, verbose, stop_request, log, extra_callbacks):
    import_tensorflow()  # Keras' saving would import it, with its start-up lines
    os.makedirs(workdir, exist_ok=True)
    earlier_processor = recorded_processor(workdir)
    config = stamp(config, input_pipeline=resolve_pipeline(config.pipeline))
    write_json(os.path.join(workdir, "config.json"), config.to_dict())
    checkpoint = os.path.join(workdir, CHECKPOINT)
    arrays = run_arrays(config, arrays)
    steps = steps_per_epoch(config, arrays)
    model = (read_checkpoint(checkpoint, keras.saving.load_model, log)
             if os.path.exists(checkpoint) else None)
    if model is not None:
        initial_epoch = resumed_epoch(model, steps, config.epochs, log)
        resumed = resumed_on(config, earlier_processor, initial_epoch, log)
        if resumed != config:
            config = resumed
            write_json(os.path.join(workdir, "config.json"), config.to_dict())
    else:
        model = compile_run_model(build_run_model(config), config)
        initial_epoch = 0
    train_data, _, test_data = run_pipelines(config, arrays, initial_epoch)
    metrics_logger = EpochMetricsLogger(os.path.join(workdir, "metrics.csv"), workdir,
                                        initial_epoch, holdout="x_holdout" in arrays)
    gradient_recorder, callbacks = run_callbacks(config, arrays, workdir, model, initial_epoch,
                                                 steps, metrics_logger)
    if stop_request is not None:
        callbacks.insert(0, StopOnRequest(stop_request))
    callbacks.append(Checkpointer(checkpoint))
    callbacks.extend(extra_callbacks)
    start = time.perf_counter()
    try:
        model.fit(
            train_data, validation_data=test_data, epochs=config.epochs,
            initial_epoch=initial_epoch, steps_per_epoch=steps,
            callbacks=callbacks, verbose=verbose,
            shuffle=False,  # the pipeline shuffles, per epoch and seeded
        )
    finally:
        for callback in callbacks:
            if hasattr(callback, "close"):
                callback.close()
    return model, finish_run(config, workdir, metrics_logger.rows, time.perf_counter() - start,
                             initial_epoch, gradient_recorder)


def resumed_epoch(model, steps_per_epoch, epochs, log):
    """The epochs that a model loaded from a checkpoint has finished, read from
    its optimizer's step count, so that rows written after the checkpoint (a
    kill between the two) are redone; `log` gets a line saying so."""
    initial_epoch = int(model.optimizer.iterations) // steps_per_epoch
    if log is not None:
        log(f"resuming after epoch {initial_epoch} of {epochs}")
    return initial_epoch


def run_callbacks(config, arrays, workdir, model, initial_epoch, steps_per_epoch,
                  metrics_logger, replica=False):
    """What every run has around `fit`, alone or as a `replica` of a group:
    before its first step, the init check recorded; then its callbacks, in
    the order they run: its TensorBoard session (hparams), a held-out split's
    evaluator where it holds one out, `metrics_logger`, the synchronous
    batch end of a data_parallel run, and its diagnostics. Returns
    `(gradient_recorder or None, callbacks)`."""
    if initial_epoch == 0:
        # A single run's compiled loss, so that the gradient recorder reuses
        # the check's gradient function (under jax, one compilation fewer).
        record_init_check(config, model, arrays, workdir,
                          loss=cross_entropy() if replica else model.loss)
    callbacks = [HParamsLogger(workdir, hparams_of(config))]
    holdout = holdout_pipeline(config, arrays)
    if holdout is not None:
        callbacks.append(HoldoutEvaluator(holdout))
    callbacks.append(metrics_logger)
    if config.distribution == "data_parallel":
        callbacks.append(SynchronousBatchEnd())
    gradient_recorder, recorders = diagnostics(config, arrays, workdir, initial_epoch,
                                               steps_per_epoch,
                                               model=model if replica else None)
    return gradient_recorder, callbacks + recorders


def finish_run(config, workdir, rows, wall_seconds, initial_epoch, gradient_recorder,
               model=None, **extra):
    """Writes a run's summary from its metrics `rows` (`finish`), alone or as
    a replica of a group (`model`: the replica, saved as the run's model)."""
    summary = {**run_summary(rows, wall_seconds, resumed_from_epoch=initial_epoch or None),
               **extra}
    if gradient_recorder is not None:
        summary["awakening_step"] = gradient_recorder.awakening_step
    return finish(workdir, summary, keep_model=config.save_model, model=model)


def diagnostics(config, arrays, workdir, initial_epoch, steps_per_epoch, model=None):
    """The callbacks that record the run's diagnostics into `workdir`, as its
    config asks: gradients with each stage's input dependence, activations,
    symmetry, and in a run of `max_steps`, each step's loss. `model`: the model they
    record, where it is a replica of the group being trained. Returns
    `(gradient_recorder or None, callbacks)`."""
    if not (config.record_gradients or config.record_symmetry or config.record_activations
            or config.max_steps):
        return None, []
    probe = run_probe(config, arrays)
    path = functools.partial(os.path.join, workdir)
    initial_step = initial_epoch * steps_per_epoch
    schedule = dict(first_steps=config.grad_first_steps, every=config.grad_every,
                    initial_step=initial_step, model=model)
    gradient_recorder, callbacks = None, []
    if config.record_gradients:
        gradient_recorder = GradientRecorder(
            path("gradients.csv"), probe, workdir, **schedule,
            loss=None if model is None else cross_entropy())
        callbacks.append(gradient_recorder)
        # The forward side of awakening: whether each stage depends on the input.
        callbacks.append(StageRecorder(path("stages.csv"), probe, workdir,
                                       stages=MODELS.get(config.model).stages, **schedule))
    if config.record_activations:
        callbacks.append(ActivationRecorder(path("activations.csv"), probe, workdir, **schedule))
    if config.max_steps and model is None:
        # A census of the first steps: each step's training loss. Off in
        # whole-epoch runs, where a batch-end hook would cost Keras its
        # asynchronous dispatch of the steps, and in groups, whose logs
        # hold the sum over replicas.
        callbacks.append(StepLossLogger(path("steps.csv")))
    if config.record_symmetry:
        callbacks.append(SymmetryMonitor(path("symmetry.csv"), probe[0][:SYMMETRY_PROBE_SIZE],
                                         workdir, initial_epoch, model=model))
    return gradient_recorder, callbacks


def read_checkpoint(path, read, log, restart="training again from epoch 1"):
    """`read(path)`, or None where the file cannot be read (a storage fault,
    a disk that filled up): it is then kept aside as `<path>.corrupt`, and a
    line naming it and what happens instead (`restart`) goes to `log` (by
    default stderr)."""
    try:
        return read(path)
    except Exception as e:  # whatever a damaged zip makes Keras raise
        aside = path + ".corrupt"
        os.replace(path, aside)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        message = f"{path} cannot be read ({reason[:200]}); kept aside as {aside}, {restart}"
        if log is not None:
            log(message)
        else:
            print(f"kzero: {message}", file=sys.stderr, flush=True)
        return None


def finish(workdir, summary, keep_model, model=None):
    """Ends a run's directory: `summary.json` written (with the init check of
    `init_check.json`, where the run has one), and the last epoch's
    checkpoint kept as `model.keras` if the run finished and `keep_model`
    (else removed). A `model` given is saved instead of the checkpoint.
    Returns the summary written."""
    check = os.path.join(workdir, INIT_CHECK)
    if os.path.exists(check):
        summary = {**summary, "init_check": read_json(check)}
    write_json(os.path.join(workdir, "summary.json"), summary)
    checkpoint, kept = (os.path.join(workdir, name) for name in (CHECKPOINT, MODEL_FILE))
    if keep_model and summary["status"] == "finished":
        if model is not None:
            save_model_atomic(model, kept)
        elif os.path.exists(checkpoint):
            os.replace(checkpoint, kept)
    if os.path.exists(checkpoint):
        os.remove(checkpoint)
    return summary
