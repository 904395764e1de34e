"""Runs a grid of experiments: models x init schemes x bias scales x seeds.

    python -m kzero.run --flagfile=flags/mnist_cnn.flags [--epochs=1 --runs=1 ...]

Each run writes `<output_dir>/<experiment>/<variant>/seed_<k>/` holding
`config.json`, `metrics.csv`, `summary.json` and a TensorBoard event file.
Finished runs are skipped when the command is repeated (`--overwrite` redoes them).
"""

import contextlib
import fcntl
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS

# What to train.
flags.DEFINE_string("experiment", None,
                    "Name of the experiment directory; default <dataset>_<models>.")
flags.DEFINE_string("dataset", "mnist", "mnist or cifar10.")
flags.DEFINE_list("model", ["fnn"], "Models: logreg, fnn, cnn, resnet50 (cifar10 only).")
flags.DEFINE_list("inits", ["lecun", "zero_normal", "zero_uniform"],
                  "Init schemes: lecun, zero, zero_normal, zero_uniform, keras_default.")
flags.DEFINE_list("bias_scales", ["1"],
                  "Bias scales for the zero_normal and zero_uniform schemes.")
flags.DEFINE_string("activation", "elu",
                    "Activation after every layer but the last: elu, relu, leaky_relu, "
                    "selu, sigmoid, tanh.")
flags.DEFINE_string("init_scope", "all",
                    "Layers the init scheme reaches: all, or paper_code (only the stem "
                    "conv and the last layer, as in the paper's public ResNet-50 code).")
# What to record.
flags.DEFINE_boolean("record_gradients", True,
                     "Record gradient distributions and layer awakening (gradients.csv).")
flags.DEFINE_integer("grad_first_steps", 5, "Record gradients at each of the first N steps.")
flags.DEFINE_integer("grad_every", 1000, "Then record gradients every N steps (0: never).")
flags.DEFINE_boolean("record_symmetry", True,
                     "Record distinct and dead units per layer and epoch (symmetry.csv).")
# How to train.
flags.DEFINE_integer("epochs", 10, "Epochs per run.")
flags.DEFINE_integer("runs", 5, "Seeds per variant: seed, seed+1, ...")
flags.DEFINE_integer("seed", 0, "Base seed.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("parallel_runs", 1,
                     "Train up to R seeds of a variant at once, as one model of R replicas "
                     "(for small models on a GPU); such groups record no gradients or "
                     "symmetry, and restart rather than resume when interrupted.")
flags.DEFINE_string("distribution", "none",
                    "none, or data_parallel: split each batch over all local devices "
                    "(keras.distribution.DataParallel; jax backend only).")
flags.DEFINE_string("precision", "float32",
                    "float32, or mixed_bfloat16 / mixed_float16: compute in 16 bits, keep "
                    "the variables in float32 (Keras dtype policies).")
flags.DEFINE_string("jit_compile", "auto",
                    "auto (Keras' choice: XLA under jax, eager under torch), true (XLA, or "
                    "torch.compile under torch) or false.")
flags.DEFINE_string("pipeline", "auto",
                    "Input pipeline: tf (tf.data), numpy (no TensorFlow needed), device (the "
                    "numpy pipeline's batches made from the dataset held on the accelerator), "
                    "or auto (the faster here: tf under the tensorflow backend, else numpy).")
flags.DEFINE_integer("max_examples", None,
                     "Use only the first N examples of each split (quick tries, tests).")
# Where.
flags.DEFINE_string("data_dir", None,
                    "Directory holding mnist.npz / cifar10.npz (keras.datasets layout); "
                    "default $KZERO_DATA_DIR, else download with tensorflow-datasets.")
flags.DEFINE_string("output_dir", "runs", "Where run directories are written.")
flags.DEFINE_boolean("overwrite", False, "Redo runs that already finished.")
flags.DEFINE_string("shard", None,
                    "i/n: train only runs i, i+n, i+2n, ... of the grid (counted from 0), "
                    "so that n jobs of a cluster array cover it; kzero.report merges them.")


class FlagError(ValueError):
    pass


def _check(flag, value, valid):
    if value not in valid:
        raise FlagError(f"--{flag}={value}: not valid; choose from {', '.join(valid)}")


def validate_flags():
    """Checks every flag before anything is trained or written.

    Returns the parsed bias scales."""
    import keras

    from kzero.data import DATASETS, PIPELINES, has_tensorflow
    from kzero.initializers import SCHEMES
    from kzero.models import ACTIVATIONS, MODELS
    from kzero.train import INIT_SCOPES, JIT_COMPILE, PRECISIONS

    _check("dataset", FLAGS.dataset, DATASETS)
    if not FLAGS.model:
        raise FlagError("--model is empty; choose from " + ", ".join(MODELS))
    for model in FLAGS.model:
        _check("model", model, MODELS)
        if FLAGS.dataset not in MODELS[model][1]:
            raise FlagError(f"--model={model}: not defined for --dataset={FLAGS.dataset}; "
                            f"it is for {', '.join(MODELS[model][1])}")
    if not FLAGS.inits:
        raise FlagError("--inits is empty; choose from " + ", ".join(SCHEMES))
    for init in FLAGS.inits:
        _check("inits", init, SCHEMES)
    _check("activation", FLAGS.activation, ACTIVATIONS)
    _check("init_scope", FLAGS.init_scope, INIT_SCOPES)
    _check("pipeline", FLAGS.pipeline, PIPELINES)
    _check("precision", FLAGS.precision, PRECISIONS)
    _check("jit_compile", FLAGS.jit_compile, JIT_COMPILE)
    if FLAGS.pipeline == "tf" and not has_tensorflow():
        raise FlagError("--pipeline=tf: TensorFlow is not installed; use --pipeline=numpy")
    scales = []
    for text in FLAGS.bias_scales:
        try:
            scale = float(text)
        except ValueError:
            scale = float("nan")
        if not scale > 0 or scale == float("inf"):
            raise FlagError(f"--bias_scales={text}: must be a positive number")
        scales.append(scale)
    for name in ("epochs", "runs", "batch_size", "parallel_runs"):
        if getattr(FLAGS, name) < 1:
            raise FlagError(f"--{name}={getattr(FLAGS, name)}: must be at least 1")
    for name in ("grad_first_steps", "grad_every"):
        if getattr(FLAGS, name) < 0:
            raise FlagError(f"--{name}={getattr(FLAGS, name)}: must be 0 or more")
    if FLAGS.max_examples is not None and FLAGS.max_examples < 1:
        raise FlagError(f"--max_examples={FLAGS.max_examples}: must be at least 1")
    if not FLAGS.learning_rate > 0:
        raise FlagError(f"--learning_rate={FLAGS.learning_rate}: must be positive")
    if FLAGS.data_dir and not os.path.isdir(FLAGS.data_dir):
        raise FlagError(f"--data_dir={FLAGS.data_dir}: no such directory")
    _check("distribution", FLAGS.distribution, DISTRIBUTIONS)
    if FLAGS.parallel_runs > 1 and FLAGS.distribution != "none":
        raise FlagError(f"--parallel_runs={FLAGS.parallel_runs}: not with "
                        f"--distribution={FLAGS.distribution}; choose one")
    if FLAGS.distribution != "none" and keras.backend.backend() != "jax":
        raise FlagError(f"--distribution={FLAGS.distribution}: needs KERAS_BACKEND=jax "
                        f"(this is {keras.backend.backend()})")
    if FLAGS.distribution == "data_parallel":
        devices = len(keras.distribution.list_devices())
        if FLAGS.batch_size % devices:
            raise FlagError(f"--batch_size={FLAGS.batch_size}: must divide evenly over the "
                            f"{devices} devices of --distribution=data_parallel")
    shard()
    return scales


DISTRIBUTIONS = ("none", "data_parallel")


def shard():
    """(i, n) from --shard=i/n; (0, 1) without it."""
    if FLAGS.shard is None:
        return 0, 1
    try:
        index, count = (int(part) for part in FLAGS.shard.split("/"))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise FlagError(f"--shard={FLAGS.shard}: must be i/n with 0 <= i < n, e.g. 0/4")
    return index, count


def grid(scales):
    """Yields (model, init, bias_scale, seed) for every run, in order. A scheme
    that ignores the bias scale gets one variant, with bias_scale None."""
    from kzero.initializers import get_scheme

    for model in FLAGS.model:
        for init in FLAGS.inits:
            for scale in scales if get_scheme(init).uses_bias_scale else [None]:
                for k in range(FLAGS.runs):
                    yield model, init, scale, FLAGS.seed + k


def variant_name(model, init, bias_scale, init_scope="all"):
    name = f"{model}_{init}"
    if bias_scale is not None:
        name += f"_x{bias_scale:g}"
    if init_scope != "all":
        name += f"_{init_scope}"
    return name


def library_versions():
    import keras
    import numpy

    import kzero

    versions = {"python": platform.python_version(), "kzero": kzero.__version__,
                "keras": keras.__version__, "numpy": numpy.__version__}
    backend = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    if module:
        versions[module] = __import__(module).__version__
    return versions


def accelerator():
    """What the backend computes on, e.g. "NVIDIA H100 80GB HBM3" or "cpu"."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return device.device_kind if device.platform != "cpu" else "cpu"
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return tf.config.experimental.get_device_details(gpus[0]).get(
            "device_name", "gpu") if gpus else "cpu"
    return "unknown"


def input_pipeline(parallel=False):
    """The pipeline that --pipeline picks here: tf, numpy or device. Parallel
    groups zip several PyDatasets, so they take numpy for tf."""
    from kzero.data import resolve_pipeline

    pipeline = resolve_pipeline(FLAGS.pipeline)
    return "numpy" if parallel and pipeline == "tf" else pipeline


def run_config(model, init, bias_scale, seed):
    import keras

    config = {name: FLAGS[name].value for name in _own_flag_names()}
    # The grid's flags stay under their plural names (and the base seed under
    # base_seed); the run's own values take the singular ones.
    config.update(models=config.pop("model"), model=model, init=init, bias_scale=bias_scale,
                  base_seed=config["seed"], seed=seed, experiment=experiment_name(),
                  backend=keras.backend.backend(), accelerator=accelerator(),
                  host=platform.node(),
                  command=command_line(), input_pipeline=input_pipeline(),
                  versions=library_versions())
    return config


def command_line():
    """The command that reproduces this grid: every flag that was given, from
    the command line or a flagfile, spelled out."""
    given = [shlex.quote(FLAGS[name].serialize()) for name in _own_flag_names()
             if FLAGS[name].present]
    return " ".join(["python -m kzero.run", *given])


def _own_flag_names():
    return [f.name for f in FLAGS.get_flags_for_module(sys.modules[__name__])]


def experiment_name():
    return FLAGS.experiment or f"{FLAGS.dataset}_{'_'.join(FLAGS.model)}"


# Set by SIGINT or SIGTERM: the run in progress stops at its next batch.
STOP_REQUEST = threading.Event()


def _request_stop(signum, frame):
    if STOP_REQUEST.is_set():  # a second Ctrl-C: stop now, wherever we are
        raise KeyboardInterrupt
    STOP_REQUEST.set()


def run_grid(scales):
    from kzero.data import load_arrays

    index, count = shard()
    runs = list(grid(scales))[index::count]
    arrays = load_arrays(FLAGS.dataset, FLAGS.data_dir)
    root = os.path.join(FLAGS.output_dir, experiment_name())
    print(f"kzero: {len(runs)} runs of {experiment_name()}"
          f"{f' (shard {FLAGS.shard})' if FLAGS.shard else ''} -> {root}", flush=True)
    verbose = 1 if sys.stdout.isatty() else 2
    if FLAGS.parallel_runs > 1:
        return _run_groups(runs, arrays, root, verbose)
    for index, (model, init, scale, seed) in enumerate(runs, start=1):
        variant = variant_name(model, init, scale, FLAGS.init_scope)
        workdir = os.path.join(root, variant, f"seed_{seed}")
        label = f"[{index}/{len(runs)}] {variant}/seed_{seed}"
        if STOP_REQUEST.is_set():
            raise KeyboardInterrupt
        os.makedirs(os.path.dirname(workdir), exist_ok=True)
        with _run_lock(workdir) as locked:
            if not locked:
                print(f"{label}: being trained by another process, skipped", flush=True)
                continue
            _train_one(label, workdir, arrays, run_config(model, init, scale, seed), verbose)


def _run_groups(runs, arrays, root, verbose):
    """--parallel_runs: the unfinished seeds of each variant, R at a time."""
    from kzero.io import write_json
    from kzero.parallel import train_parallel

    print(f"kzero: --parallel_runs={FLAGS.parallel_runs}: up to {FLAGS.parallel_runs} seeds "
          "per model; gradients and symmetry are not recorded", flush=True)
    labels, variants = {}, {}
    for index, (model, init, scale, seed) in enumerate(runs, start=1):
        variant = variant_name(model, init, scale, FLAGS.init_scope)
        labels[variant, seed] = f"[{index}/{len(runs)}] {variant}/seed_{seed}"
        variants.setdefault((model, init, scale), []).append(seed)
    for (model, init, scale), seeds in variants.items():
        variant = variant_name(model, init, scale, FLAGS.init_scope)
        os.makedirs(os.path.join(root, variant), exist_ok=True)

        def workdir_of(seed, variant=variant):
            return os.path.join(root, variant, f"seed_{seed}")

        todo = [seed for seed in seeds
                if not _skip_finished(labels[variant, seed], workdir_of(seed))]
        for start in range(0, len(todo), FLAGS.parallel_runs):
            if STOP_REQUEST.is_set():
                raise KeyboardInterrupt
            with contextlib.ExitStack() as locks:
                group = []
                for seed in todo[start:start + FLAGS.parallel_runs]:
                    workdir = workdir_of(seed)
                    if not locks.enter_context(_run_lock(workdir)):
                        print(f"{labels[variant, seed]}: being trained by another process, "
                              "skipped", flush=True)
                    # Another runner may have finished it since the list was made.
                    elif not _skip_finished(labels[variant, seed], workdir):
                        group.append(seed)
                if not group:
                    continue
                workdirs = [workdir_of(seed) for seed in group]
                configs = []
                for seed, workdir in zip(group, workdirs):
                    print(f"{labels[variant, seed]}: training (group of {len(group)})", flush=True)
                    shutil.rmtree(workdir, ignore_errors=True)  # a group restarts whole
                    os.makedirs(workdir)
                    config = run_config(model, init, scale, seed)
                    config.update(record_gradients=False, record_symmetry=False,
                                  input_pipeline=input_pipeline(parallel=True),
                                  parallel_group=group)
                    write_json(os.path.join(workdir, "config.json"), config)
                    configs.append(config)
                summaries = train_parallel(configs, workdirs, arrays, verbose, STOP_REQUEST)
                for seed, summary in zip(group, summaries):
                    print(f"{labels[variant, seed]}: {summary['status']} after "
                          f"{summary['epochs_completed']} epochs, test accuracy "
                          f"{summary['final_test_accuracy']} in {summary['wall_seconds']:.1f} s "
                          f"(group of {len(group)})", flush=True)


@contextlib.contextmanager
def _run_lock(workdir):
    """An exclusive lock per run, so that two runners sharing an output dir
    (different variants, shards, or the same command twice) never train the
    same run at once. The OS drops it when the process dies, even by SIGKILL."""
    with open(os.path.join(os.path.dirname(workdir),
                           f".{os.path.basename(workdir)}.lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def _skip_finished(label, workdir):
    """Whether the run in `workdir` has finished (and --overwrite is off); says so."""
    from kzero.io import read_json

    summary_path = os.path.join(workdir, "summary.json")
    if not os.path.exists(summary_path) or FLAGS.overwrite:
        return False
    done = read_json(summary_path)
    print(f"{label}: already {done['status']} "
          f"(test accuracy {done['final_test_accuracy']}), skipped", flush=True)
    return True


def _train_one(label, workdir, arrays, config, verbose):
    from kzero.io import write_json
    from kzero.train import CHECKPOINT, train

    if _skip_finished(label, workdir):
        return
    if os.path.exists(os.path.join(workdir, CHECKPOINT)) and not FLAGS.overwrite:
        print(f"{label}: resuming", flush=True)
    else:
        print(f"{label}: training", flush=True)
        # A fresh start leaves nothing of an earlier attempt: stale event files
        # would show up in TensorBoard next to the new ones.
        shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, "config.json"), config)
    start = time.perf_counter()
    _, summary = train(config, workdir, arrays, verbose=verbose, stop_request=STOP_REQUEST)
    print(f"{label}: {summary['status']} after {summary['epochs_completed']} epochs, "
          f"test accuracy {summary['final_test_accuracy']} "
          f"in {time.perf_counter() - start:.1f} s", flush=True)


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        _fail(f"unexpected arguments {' '.join(argv[1:])}; flags look like --name=value")
    try:
        scales = validate_flags()
        _check_output_dir(FLAGS.output_dir)
    except FlagError as e:
        _fail(str(e))
    from kzero.data import DataError

    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    try:
        run_grid(scales)
    except DataError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        print("kzero: interrupted; finished runs are kept, rerun the same command to "
              "continue", file=sys.stderr)
        sys.exit(130)


def _check_output_dir(path):
    # Probe the nearest existing ancestor with a real file: permission bits say
    # nothing for root, nor for read-only or virtual file systems.
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    try:
        if not os.path.isdir(probe):
            raise OSError(f"{probe} is not a directory")
        tempfile.TemporaryFile(dir=probe).close()
    except OSError as e:
        raise FlagError(f"--output_dir={path}: not a writable directory ({e})") from None


def _fail(message):
    print(f"kzero: error: {message}", file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv):
    """absl's parser, with its errors (an unknown flag, `--epochs=abc`) turned
    into the same one-line message and exit code as every other bad flag."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        _fail(str(e).splitlines()[0])


def cli():
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    cli()
