"""Runs a grid of experiments: models x init schemes x bias scales x seeds.

    python -m kzero.run --flagfile=mnist_cnn [--epochs=1 --runs=1 ...]
    kzero-run mnist_cnn [--epochs=1 ...]

Each run writes `<output_dir>/<experiment>/<variant>/seed_<k>/` holding
`config.json`, `metrics.csv`, `summary.json`, a TensorBoard event file and the
trained `model.keras`. Finished runs are skipped when the command is repeated
(`--overwrite` redoes them). This module only turns flags into a `RunConfig`
and calls `kzero.grid.run_grid`.
"""

import errno
import importlib
import shlex
import sys

from absl import app, flags, logging

from kzero.datasets import DATASETS
from kzero.experiments import paper_experiments, with_paper_flagfiles
from kzero.initializers import SCHEMES
from kzero.models import ACTIVATIONS, MODELS
from kzero.optimizers import OPTIMIZERS
from kzero.protocols import BN_STATISTICS, CROP_FILLS, NORMALIZATION_STDS, ORDERS, PROTOCOLS

FLAGS = flags.FLAGS

# What to train.
flags.DEFINE_string("experiment", None,
                    "Name of the experiment directory; default <dataset>_<models>.")
flags.DEFINE_string("dataset", "mnist", f"{', '.join(DATASETS)}, or a tensorflow-datasets "
                    "image classification dataset (e.g. fashion_mnist, cifar100).")
flags.DEFINE_list("model", ["fnn"], f"Models: {', '.join(MODELS)}.")
flags.DEFINE_list("inits", ["lecun", "zero_normal", "zero_uniform"],
                  f"Init schemes: {', '.join(SCHEMES)}.")
flags.DEFINE_list("bias_scales", ["1"], "Bias scales for the zero_normal and zero_uniform schemes.")
flags.DEFINE_list("depth", [], "Hidden layers of --model=mlp, or a list of depths (a variant "
                  "each); default 2.")
flags.DEFINE_integer("width", None, "Units per hidden layer of --model=mlp; default 256.")
flags.DEFINE_string("activation", "elu",
                    f"Activation after every layer but the last: {', '.join(ACTIVATIONS)}.")
flags.DEFINE_list("extensions", [], "Python modules to import first, which register datasets, "
                  "models, schemes or optimizers of their own (docs/library.md).")
flags.DEFINE_string("init_scope", "all", "Layers the init scheme reaches: all, or paper_code (only "
                    "the stem conv and the last layer, as in the paper's public ResNet-50 code).")
# Where the paper's text is silent (kzero.protocols, docs/reproducing.md).
flags.DEFINE_string("protocol", "paper_text", f"{', '.join(PROTOCOLS)}: what the paper states, "
                    "or what the authors' code does; the five flags below override its items.")
flags.DEFINE_integer("holdout", None, "Training examples held out per run as a validation split "
                     "(default: the protocol's, 0 or 7000).")
flags.DEFINE_string("order", None, f"{', '.join(ORDERS)}: a new example order every epoch, or "
                    "one order for all (default: the protocol's).")
flags.DEFINE_string("bn_statistics", None, f"{', '.join(BN_STATISTICS)}: what batch norm "
                    "normalises test batches with (default: the protocol's).")
flags.DEFINE_string("normalization_std", None, f"{', '.join(NORMALIZATION_STDS)}: the std the "
                    "ResNet's inputs are divided by (default: the protocol's).")
flags.DEFINE_string("crop_fill", None, f"{', '.join(CROP_FILLS)}: the ResNet's crop padding, 0 "
                    "after normalising or black before (default: the protocol's).")
# What to record.
flags.DEFINE_boolean("record_gradients", True, "Record gradient distributions and layer awakening, "
                     "and each stage's input dependence (stages.csv).")
flags.DEFINE_integer("grad_first_steps", 5, "Record gradients at each of the first N steps.")
flags.DEFINE_integer("grad_every", 1000, "Then record gradients every N steps (0: never).")
flags.DEFINE_boolean("record_symmetry", True, "Record distinct and dead units per layer and epoch.")
flags.DEFINE_boolean("record_activations", True, "Record pre-activation and activation statistics "
                     "per layer (activations.csv) at the gradient schedule.")
flags.DEFINE_boolean("save_model", True, "Keep each finished run's trained model as model.keras.")
# How to train.
flags.DEFINE_integer("epochs", 10, "Epochs per run.")
flags.DEFINE_integer("runs", 5, "Seeds per variant: seed, seed+1, ...")
flags.DEFINE_integer("seed", 0, "Base seed.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_string("optimizer", "adam", f"{', '.join(OPTIMIZERS)}: Keras optimizers; adam is "
                    "the paper's, momentum is SGD with 0.9.")
flags.DEFINE_float("learning_rate", 1e-3, "The optimizer's learning rate.")
flags.DEFINE_list("learning_rates", [], "Several learning rates, a variant each (named "
                  "_lr<rate>); overrides --learning_rate.")
flags.DEFINE_float("weight_decay", None, "Decoupled weight decay; default the optimizer's own "
                   "(0; 0.01 for adamw).")
flags.DEFINE_string("parallel_runs", "1", "1: run by run (the default: the same digits on "
                    "any machine); R: up to R runs of one architecture (any init scheme, bias "
                    "scale and seed) trained at once as one model of replicas, equal to separate "
                    "runs to float rounding; auto: the group size a short measurement finds "
                    "fastest here (worth it on a GPU). Each replica records its own "
                    "diagnostics, and a killed group resumes after its last finished epoch.")
flags.DEFINE_string("distribution", "none", "none, or data_parallel: split each batch over all "
                    "local devices (keras.distribution.DataParallel; jax backend only).")
flags.DEFINE_string("precision", "float32", "float32, or mixed_bfloat16 / mixed_float16: compute "
                    "in 16 bits, keep the variables in float32 (Keras dtype policies).")
flags.DEFINE_list("precisions", [], "Several precisions, a variant each (a precision other "
                  "than float32 ends the variant's name, e.g. _mixed_bfloat16); overrides "
                  "--precision.")
flags.DEFINE_string("jit_compile", "auto", "auto (Keras' choice: XLA under jax, eager under "
                    "torch), true (XLA, or torch.compile under torch) or false.")
flags.DEFINE_string("pipeline", "auto", "Input pipeline: tf (tf.data), numpy (no TensorFlow "
                    "needed), device (the numpy pipeline's batches made on the accelerator), or "
                    "auto (tf under the tensorflow backend, else numpy).")
flags.DEFINE_integer("max_examples", None, "Use only the first N examples of each split.")
flags.DEFINE_integer("max_steps", None, "Train only the first N update steps (with --epochs=1), "
                     "then evaluate: the first-steps census (flags/census_*.flags).")
flags.DEFINE_float("bn_epsilon", None, "What the batch norms add to the variance (default "
                   "PyTorch's 1e-5, the paper's code's); a variant named _bn_eps<value>.")
flags.DEFINE_boolean("bn_exact_mean", False, "Batch norms centre a channel that is constant over "
                     "the batch exactly (no rounding error for 1/sqrt(epsilon) to amplify); a "
                     "variant named _exact_bn_mean.")
# Where.
flags.DEFINE_string("data_dir", None, "Directory holding <dataset>.npz (keras.datasets layout); "
                    "default $KZERO_DATA_DIR, else download with tensorflow-datasets.")
flags.DEFINE_string("output_dir", "runs", "Where run directories are written.")
flags.DEFINE_boolean("overwrite", False, "Redo runs that already finished.")
flags.DEFINE_string("shard", None, "i/n: train only runs i, i+n, i+2n, ... of the grid (from 0), "
                    "so that n jobs of a cluster array cover it; kzero.report merges them.")

# The flags by purpose, in the order --help and docs/flags.md show them.
FLAG_GROUPS = {
    "What to train": ["experiment", "dataset", "model", "inits", "bias_scales", "depth",
                      "width", "activation", "init_scope", "extensions"],
    "The paper's protocol (docs/reproducing.md)": ["protocol", "holdout", "order",
                                                   "bn_statistics", "normalization_std",
                                                   "crop_fill"],
    "How to train": ["epochs", "runs", "seed", "batch_size", "optimizer", "learning_rate",
                     "learning_rates", "weight_decay", "precision", "precisions",
                     "max_examples", "max_steps", "bn_epsilon", "bn_exact_mean"],
    "What each run records": ["record_gradients", "grad_first_steps", "grad_every",
                              "record_symmetry", "record_activations", "save_model"],
    "How to run the grid": ["parallel_runs", "distribution", "jit_compile", "pipeline",
                            "shard"],
    "Where": ["data_dir", "output_dir", "overwrite"],
}


def _default_text(flag):
    if flag.default is None or flag.default == []:
        return "none"
    if isinstance(flag.default, bool):
        return "true" if flag.default else "false"
    if isinstance(flag.default, list):
        return ",".join(map(str, flag.default))
    return str(flag.default)


def flags_help():
    """--help's flag section: the flags by purpose, each with its default."""
    lines = []
    for group, names in FLAG_GROUPS.items():
        lines += ["", f"{group}:"] if lines else [f"{group}:"]
        for name in names:
            lines.append(f"  --{name}={_default_text(FLAGS[name])}")
            lines.append(f"      {FLAGS[name].help}")
    return "\n".join(lines)


def flags_markdown():
    """docs/flags.md, from the flags themselves (scripts/flags_doc.py writes it)."""
    lines = ["# Flags", "",
             "Every flag of `python -m kzero.run` (`kzero-run`), by purpose, with its default "
             "and its one description. Generated from `kzero/run.py` by "
             "`python scripts/flags_doc.py > docs/flags.md`; a test keeps the two in step. "
             "A flagfile (`--flagfile=flags/NAME.flags`, or `--flagfile=NAME`) is a list of "
             "these; flags after it override it."]
    for group, names in FLAG_GROUPS.items():
        lines += ["", f"## {group}", "", "| flag | default | meaning |", "| --- | --- | --- |"]
        for name in names:
            text = FLAGS[name].help.replace("|", "\\|")
            lines.append(f"| `--{name}` | `{_default_text(FLAGS[name])}` | {text} |")
    return "\n".join(lines) + "\n"


# The RunConfig fields whose flag has another name; every other flag is its field.
FIELD_OF_FLAG = {"model": "models", "seed": "base_seed", "depth": "depths"}
FLAG_OF_FIELD = {**{field: flag for flag, field in FIELD_OF_FLAG.items()}, "seed": "seed"}


def _own_flag_names():
    return [f.name for f in FLAGS.get_flags_for_module(sys.modules[__name__])]


def command_line():
    """The command that reproduces this grid: every flag that was given, from
    the command line or a flagfile, spelled out."""
    given = [shlex.quote(FLAGS[name].serialize()) for name in _own_flag_names()
             if FLAGS[name].present]
    return " ".join(["python -m kzero.run", *given])


def config_from_flags():
    """The grid's `RunConfig`: each flag onto its field, in this one place."""
    from kzero.config import RunConfig

    values = {FIELD_OF_FLAG.get(name, name): FLAGS[name].value for name in _own_flag_names()}
    return RunConfig(seed=FLAGS.seed, command=command_line(), **values)


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        _fail(f"unexpected arguments {' '.join(argv[1:])}; flags look like --name=value")
    from kzero.config import ConfigError
    from kzero.datasets import DataError
    from kzero.grid import check_runnable, handle_signals, run_grid

    for module in FLAGS.extensions:
        try:
            importlib.import_module(module)
        except ImportError as e:
            _fail(f"--extensions={module}: cannot be imported ({e}); put it on PYTHONPATH")
    try:
        grid = config_from_flags()
        check_runnable(grid)
    except ConfigError as e:
        _fail(f"--{FLAG_OF_FIELD.get(e.field, e.field)}{str(e)[len(e.field):]}")
    handle_signals()
    try:
        run_grid(grid)
    except DataError as e:
        _fail(str(e))
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        _fail(_disk_full_message(e, grid.output_dir), code=1)
    except KeyboardInterrupt:
        if sys.stdout.isatty():  # end Keras' progress bar's line first
            print(flush=True)
        print("kzero: interrupted; finished runs are kept, rerun the same command to "
              "continue", file=sys.stderr)
        sys.exit(130)


def _disk_full_message(error, output_dir):
    where = getattr(error, "directory", None) or error.filename or output_dir
    needed = getattr(error, "needed_bytes", None)
    size = f" (a checkpoint here takes about {needed / 1e6:.1f} MB)" if needed else ""
    return (f"no space left on the device of {where}{size}; nothing half-written is left "
            "and the finished epochs are kept: free some space and rerun the same command "
            "to resume")


def _fail(message, code=2):
    print(f"kzero: error: {message}", file=sys.stderr)
    sys.exit(code)


HELP = ("--help", "-h", "-?", "--helpshort", "--helpfull")


def _print_help():
    names = ", ".join(paper_experiments())
    print(f"{__doc__.strip()}\n\nThe paper's experiments, by flagfile name "
          f"(docs/running.md):\n  {names}\n\n{flags_help()}\n\nEvery flag, as a table: "
          "docs/flags.md.")


def _parse_flags(argv):
    """absl's parser, with its errors (an unknown flag, `--epochs=abc`) turned
    into the same one-line message and exit code as every other bad flag."""
    if any(arg in HELP for arg in argv[1:]):
        _print_help()
        sys.exit(0)
    try:
        return FLAGS(with_paper_flagfiles(argv))
    except flags.Error as e:
        _fail(str(e).splitlines()[0])


def cli():
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    cli()
