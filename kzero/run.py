"""Runs a grid of experiments: models x init schemes x bias scales x seeds.

    python -m kzero.run --flagfile=mnist_cnn [--epochs=1 --runs=1 ...]
    kzero-run mnist_cnn [--epochs=1 ...]

Each run writes `<output_dir>/<experiment>/<variant>/seed_<k>/` holding
`config.json`, `metrics.csv`, `summary.json`, a TensorBoard event file and the
trained `model.keras`. Finished runs are skipped when the command is repeated
(`--overwrite` redoes them). This module only turns flags into a `Grid`
(`kzero.config`) and calls `kzero.grid.run_grid`.
"""

import errno
import importlib
import re
import shlex
import sys

from absl import app, flags, logging

from kzero.config import DEFAULT_AXES, Grid, field_type, flag_fields
from kzero.datasets import DATASETS
from kzero.experiments import paper_experiments, with_paper_flagfiles
from kzero.initializers import SCHEMES
from kzero.models import ACTIVATIONS, MODELS
from kzero.optimizers import OPTIMIZERS
from kzero.protocols import PROTOCOLS

FLAGS = flags.FLAGS


def _flag_default(owner, field):
    """A flag's default, from its field's (a grid axis: the grid's default values)."""
    if field.metadata["sweep"]:
        values = DEFAULT_AXES.get(field.name)
        if values is None:
            values = () if field.default is None else (field.default,)
        return [f"{v:g}" if isinstance(v, float) else str(v) for v in values]
    if field_type(owner, field) is tuple:
        return list(field.default)
    return field.default if field.name != "parallel_runs" else str(field.default)


# The registries whose names a flag's help lists, as this process has them.
_REGISTRIES = {"dataset": DATASETS, "model": MODELS, "scheme": SCHEMES, "activation": ACTIVATIONS,
               "optimizer": OPTIMIZERS, "protocol": PROTOCOLS}


def _help(field):
    registry = _REGISTRIES.get(field.name)
    names = f" Registered: {', '.join(registry)}." if registry else ""
    return field.metadata["help"] + names


def _define_flags():
    """A flag for each field of `RunConfig` and `Grid` that has a description,
    with its default and its older names as aliases."""
    define = {str: flags.DEFINE_string, int: flags.DEFINE_integer,
              float: flags.DEFINE_float, bool: flags.DEFINE_boolean, tuple: flags.DEFINE_list}
    for fields in flag_fields().values():
        for owner, field in fields:
            kind = list if field.metadata["sweep"] else field_type(owner, field)
            (flags.DEFINE_list if kind is list else define[kind])(
                field.name, _flag_default(owner, field), _help(field))
            for alias in field.metadata["aliases"]:
                flags.DEFINE_alias(alias, field.name)


_define_flags()
# The older names of flags: {alias: flag}.
ALIASES = {alias: field.name for fields in flag_fields().values()
           for _, field in fields for alias in field.metadata["aliases"]}


def _default_text(flag):
    if flag.default is None or flag.default == []:
        return "none"
    if isinstance(flag.default, bool):
        return "true" if flag.default else "false"
    if isinstance(flag.default, list):
        return ",".join(map(str, flag.default))
    return str(flag.default)


def _also(name):
    aliases = [f"--{a}" for a, flag in ALIASES.items() if flag == name]
    return f" (also {', '.join(aliases)})" if aliases else ""


def flags_help():
    """--help's flag section: the flags by purpose, each with its default."""
    lines = []
    for group, fields in flag_fields().items():
        lines += ["", f"{group}:"] if lines else [f"{group}:"]
        for _, field in fields:
            lines.append(f"  --{field.name}={_default_text(FLAGS[field.name])}"
                         f"{_also(field.name)}")
            lines.append(f"      {FLAGS[field.name].help}")
    return "\n".join(lines)


def flags_markdown():
    """docs/flags.md, from the fields' descriptions (scripts/flags_doc.py writes it)."""
    lines = ["# Flags", "",
             "Every flag of `python -m kzero.run` (`kzero-run`), by purpose, with its default "
             "and its one description. Generated from the fields of `RunConfig` and `Grid` "
             "(`kzero/config.py`) by `python scripts/flags_doc.py > docs/flags.md`; a test "
             "keeps the two in step. A flag of a grid axis takes a comma list, a variant per "
             "value. A flagfile (`--flagfile=flags/NAME.flags`, or `--flagfile=NAME`) is a list "
             "of these; flags after it override it."]
    for group, fields in flag_fields().items():
        lines += ["", f"## {group}", "", "| flag | default | meaning |", "| --- | --- | --- |"]
        for _, field in fields:
            text = FLAGS[field.name].help.replace("|", "\\|")
            alias = re.sub(r"(--\w+)", r"`\1`", _also(field.name))
            lines.append(f"| `--{field.name}`{alias} | `{_default_text(FLAGS[field.name])}` | "
                         f"{text} |")
    return "\n".join(lines) + "\n"


def command_line():
    """The command that reproduces this grid: every flag that was given, from
    the command line or a flagfile, spelled out."""
    given = [shlex.quote(FLAGS[field.name].serialize())
             for fields in flag_fields().values() for _, field in fields
             if FLAGS[field.name].present]
    return " ".join(["python -m kzero.run", *given])


def config_from_flags():
    """The `Grid`: each flag onto its field, in this one place: a grid axis's
    values, a run setting, or the grid's own."""
    settings, axes, own = {}, {}, {}
    for fields in flag_fields().values():
        for owner, field in fields:
            value = FLAGS[field.name].value
            if owner is Grid:
                own[field.name] = value
            elif field.metadata["sweep"]:
                axes[field.name] = value
            else:
                settings[field.name] = value
    return Grid(settings=settings, axes=axes, command=command_line(), **own)


def _flag_named(field):
    """The flag a user typed for `field`: an older name where that was given."""
    return next((a for a, flag in ALIASES.items() if flag == field and FLAGS[a].present),
                field)


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
        _fail(f"--{_flag_named(e.field)}{str(e)[len(e.field):]}")
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
