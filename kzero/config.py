"""The typed descriptions kzero runs from, each setting described once:

- `RunConfig`: the settings of one run (what it trains, what it records, where
  its data is) and, in its `provenance`, where it came from and ran;
- `Grid`: a grid of runs: the settings its runs share, its axes (field ->
  values, e.g. `{"scheme": ("lecun", "zero_normal")}`), its seeds and how it is
  run;
- `Provenance`: the grid a run belonged to and the machine it ran on.

Each field's description (`metadata["help"]`) is the one the command line's
flags, `--help` and docs/flags.md show: `kzero.run` makes a flag of every
field of `RunConfig` and `Grid` that has one, with its default.

A run's `config.json` is `config.to_dict()`: its settings, plus a
`provenance` block. `RunConfig.read(path)` reads it back, and also reads the
flat config.json of kzero before 0.6, which held the grid's fields beside the
run's. Invalid values and unknown keys raise `ConfigError` where the config is
made, naming the field, the value and what is valid.
"""

import contextvars
import dataclasses
import itertools
import json
import math
import typing
from typing import Optional

__all__ = ["AXES", "ConfigError", "DEFAULT_AXES", "DISTRIBUTIONS", "FLAG_GROUPS", "Grid", "JIT_COMPILE",
           "PIPELINES", "PRECISIONS", "Provenance", "RunConfig"]

# Keras dtype policies: mixed ones compute in 16 bits with float32 variables;
# compile() adds loss scaling for mixed_float16.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

# Keras' jit_compile: "auto" is XLA under jax (and under tensorflow on an
# accelerator), eager under torch; "true" under torch is torch.compile.
JIT_COMPILE = {"auto": "auto", "true": True, "false": False}

# How batches are made (kzero.pipelines): "auto" takes the faster one here.
PIPELINES = ("auto", "tf", "numpy", "device")

DISTRIBUTIONS = ("none", "data_parallel")

# The settings by purpose, in the order --help and docs/flags.md show them.
WHAT, PROTOCOL, HOW, RECORD, RUNNING, WHERE = (
    "What to train", "The paper's protocol (docs/reproducing.md)", "How to train",
    "What each run records", "How to run the grid", "Where")
FLAG_GROUPS = (WHAT, PROTOCOL, HOW, RECORD, RUNNING, WHERE)


def setting(default, group, help, sweep=False, aliases=()):
    """A field with its one description. `sweep`: a grid can take several
    values (an axis; the flag is a comma list). `aliases`: older flag names
    that still work."""
    return dataclasses.field(default=default, metadata={
        "group": group, "help": help, "sweep": sweep, "aliases": tuple(aliases)})


class ConfigError(ValueError):
    """A config value that is not valid: `field`, `value` and `reason` say
    which and why; the message reads `field=value: reason`."""

    def __init__(self, field, value, reason):
        self.field, self.value, self.reason = field, value, reason
        super().__init__(f"{field}={_show(value)}: {reason}")


def _show(value):
    if isinstance(value, (list, tuple)):
        return ",".join(_show(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where a run came from and where it ran; filled in by the grid and by
    `train`, never read by training.

    experiment: the experiment directory's name. command: the command that
    reproduces the grid. runs, base_seed: the grid's seeds per variant.
    sweep: the grid's axes (field -> values). extensions: the modules the
    runner imported first. parallel_group: the runs trained with this one as
    one model (`--parallel_runs`). backend, accelerator, processor (the
    CPU's model name), host, versions, input_pipeline: this process's.
    init_stream: where the initial weights were drawn
    (`kzero.initializers.INIT_STREAM`; None in runs of kzero before 0.4,
    whose weights came from each backend's own generator).
    """

    experiment: Optional[str] = None
    command: Optional[str] = None
    runs: Optional[int] = None
    base_seed: Optional[int] = None
    sweep: dict = dataclasses.field(default_factory=dict)
    extensions: tuple = ()
    parallel_group: Optional[tuple] = None
    backend: Optional[str] = None
    accelerator: Optional[str] = None
    processor: Optional[str] = None
    host: Optional[str] = None
    versions: Optional[dict] = None
    input_pipeline: Optional[str] = None
    init_stream: Optional[str] = None

    def __post_init__(self):
        for name in ("extensions", "parallel_group"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "sweep", {k: tuple(v) for k, v in dict(self.sweep).items()})

    @classmethod
    def from_dict(cls, values):
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"provenance.{unknown[0]}", values[unknown[0]],
                              "not a Provenance field")
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One run of kzero: its settings (each field's `metadata["help"]` says
    what it does), and its `provenance`. Every field has a default;
    `RunConfig()` is the MNIST FNN with the reference init, 10 epochs."""

    dataset: str = setting(
        "mnist", WHAT, "A registered dataset, or a tensorflow-datasets image classification "
        "dataset (e.g. fashion_mnist, cifar100).")
    model: str = setting("fnn", WHAT, "Models, a variant each.", sweep=True)
    scheme: str = setting("lecun", WHAT, "Init schemes (kzero.SCHEMES), a variant each.",
                          sweep=True, aliases=("init", "inits"))
    bias_scale: Optional[float] = setting(
        None, WHAT, "Bias scales for the schemes with random biases (zero_normal, "
        "zero_uniform, ...); the others ignore it.", sweep=True, aliases=("bias_scales",))
    depth: Optional[int] = setting(
        None, WHAT, "Hidden layers of --model=mlp, or a list of depths (a variant each); "
        "default 2.", sweep=True)
    width: Optional[int] = setting(None, WHAT, "Units per hidden layer of --model=mlp; "
                                   "default 256.")
    activation: str = setting("elu", WHAT, "Activation after every layer but the last.")
    init_scope: str = setting(
        "all", WHAT, "Layers the init scheme reaches: all, or paper_code (only the stem conv "
        "and the last layer, as in the paper's public ResNet-50 code).")
    protocol: str = setting(
        "paper_text", PROTOCOL, "What the paper states (paper_text), or what the authors' code "
        "does (paper_code), where the text is silent; the five flags after it override its "
        "items.")
    holdout: Optional[int] = setting(
        None, PROTOCOL, "Training examples held out per run as a validation split (default: "
        "the protocol's, 0 or 7000).")
    order: Optional[str] = setting(None, PROTOCOL, "epoch or fixed: a new example order every "
                                   "epoch, or one order for all (default: the protocol's).")
    bn_statistics: Optional[str] = setting(
        None, PROTOCOL, "moving or batch: what batch norm normalises test batches with "
        "(default: the protocol's).")
    normalization_std: Optional[str] = setting(
        None, PROTOCOL, "dataset or kuangliu: the std the ResNet's inputs are divided by "
        "(default: the protocol's).")
    crop_fill: Optional[str] = setting(
        None, PROTOCOL, "mean or black: the ResNet's crop padding, 0 after normalising or "
        "black before (default: the protocol's).")
    epochs: int = setting(10, HOW, "Epochs per run.")
    seed: int = setting(0, HOW, "The run's seed (initial weights, data order, augmentation); "
                        "a grid's runs take seed, seed+1, ...")
    batch_size: int = setting(128, HOW, "Batch size.")
    optimizer: str = setting("adam", HOW, "A Keras optimizer: adam is the paper's, momentum is "
                             "SGD with 0.9.")
    learning_rate: float = setting(
        1e-3, HOW, "The optimizer's learning rate; several make a variant each, named "
        "_lr<rate>.", sweep=True, aliases=("learning_rates",))
    weight_decay: Optional[float] = setting(
        None, HOW, "Decoupled weight decay; default the optimizer's own (0; 0.01 for adamw).")
    precision: str = setting(
        "float32", HOW, "float32, or mixed_bfloat16 / mixed_float16: compute in 16 bits, keep "
        "the variables in float32 (Keras dtype policies); other than float32 it ends the "
        "variant's name, e.g. _mixed_bfloat16.", sweep=True, aliases=("precisions",))
    max_examples: Optional[int] = setting(None, HOW, "Use only the first N examples of each "
                                          "split.")
    max_steps: Optional[int] = setting(
        None, HOW, "Train only the first N update steps (with --epochs=1), then evaluate: the "
        "first-steps census (flags/census_*.flags).")
    bn_epsilon: Optional[float] = setting(
        None, HOW, "What the batch norms add to the variance (default PyTorch's 1e-5, the "
        "paper's code's); a variant named _bn_eps<value>.")
    bn_exact_mean: bool = setting(
        False, HOW, "Batch norms centre a channel that is constant over the batch exactly (no "
        "rounding error for 1/sqrt(epsilon) to amplify); a variant named _exact_bn_mean.")
    record_gradients: bool = setting(
        True, RECORD, "Record gradient distributions and layer awakening, and each stage's "
        "input dependence (stages.csv).")
    grad_first_steps: int = setting(5, RECORD, "Record gradients at each of the first N steps.")
    grad_every: int = setting(1000, RECORD, "Then record gradients every N steps (0: never).")
    record_symmetry: bool = setting(True, RECORD, "Record distinct and dead units per layer "
                                    "and epoch.")
    record_activations: bool = setting(
        True, RECORD, "Record pre-activation and activation statistics per layer "
        "(activations.csv) at the gradient schedule.")
    save_model: bool = setting(True, RECORD, "Keep each finished run's trained model as "
                               "model.keras.")
    distribution: str = setting(
        "none", RUNNING, "none, or data_parallel: split each batch over all local devices "
        "(keras.distribution.DataParallel; jax backend only).")
    jit_compile: str = setting(
        "auto", RUNNING, "auto (Keras' choice: XLA under jax, eager under torch), true (XLA, "
        "or torch.compile under torch) or false.")
    pipeline: str = setting(
        "auto", RUNNING, "Input pipeline: tf (tf.data), numpy (no TensorFlow needed), device "
        "(the numpy pipeline's batches made on the accelerator), or auto (tf under the "
        "tensorflow backend, else numpy).")
    data_dir: Optional[str] = setting(
        None, WHERE, "Directory holding <dataset>.npz (keras.datasets layout); default "
        "$KZERO_DATA_DIR, else download with tensorflow-datasets.")
    provenance: Provenance = dataclasses.field(default_factory=Provenance)

    def __post_init__(self):
        if isinstance(self.provenance, dict):
            object.__setattr__(self, "provenance", Provenance.from_dict(self.provenance))
        if self.bias_scale is not None:
            object.__setattr__(self, "bias_scale",
                               _positive_number("bias_scale", self.bias_scale))
        object.__setattr__(self, "learning_rate",
                           _positive_number("learning_rate", self.learning_rate))
        for name in ("depth", "width"):
            if getattr(self, name) is not None:
                _integer(name, getattr(self, name), minimum=1)
        self._apply_protocol()
        self._check_values()
        if _CHECK_NAMES.get():
            self._check_names()

    def _apply_protocol(self):
        from kzero.protocols import PROTOCOLS

        _one_of("protocol", self.protocol, PROTOCOLS)
        protocol = PROTOCOLS.get(self.protocol)
        for name, value in protocol.settings().items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        imposed = protocol.epochs.get((self.dataset, self.model))
        if imposed is not None:
            object.__setattr__(self, "epochs", imposed)

    def _check_values(self):
        _one_of("pipeline", self.pipeline, PIPELINES)
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("jit_compile", self.jit_compile, JIT_COMPILE)
        _one_of("distribution", self.distribution, DISTRIBUTIONS)
        for name in ("epochs", "batch_size"):
            _integer(name, getattr(self, name), minimum=1)
        for name in ("grad_first_steps", "grad_every", "seed"):
            _integer(name, getattr(self, name), minimum=0)
        if self.max_examples is not None:
            _integer("max_examples", self.max_examples, minimum=1)
        if self.max_steps is not None:
            _integer("max_steps", self.max_steps, minimum=1)
            if self.epochs != 1:
                raise ConfigError("max_steps", self.max_steps, f"trains part of one epoch; "
                                  f"use --epochs=1 (not {self.epochs})")
        if self.bn_epsilon is not None:
            _positive_number("bn_epsilon", self.bn_epsilon)
        from kzero.protocols import BN_STATISTICS, CROP_FILLS, NORMALIZATION_STDS, ORDERS

        _integer("holdout", self.holdout, minimum=0)
        _one_of("order", self.order, ORDERS)
        _one_of("bn_statistics", self.bn_statistics, BN_STATISTICS)
        _one_of("normalization_std", self.normalization_std, NORMALIZATION_STDS)
        _one_of("crop_fill", self.crop_fill, CROP_FILLS)
        if self.weight_decay is not None and not (
                isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ConfigError("weight_decay", self.weight_decay, "must be 0 or more")

    def _check_names(self):
        from kzero.datasets import get_dataset
        from kzero.initializers import SCHEMES
        from kzero.models import ACTIVATIONS, INIT_SCOPES, MODELS
        from kzero.optimizers import OPTIMIZERS

        _one_of("init_scope", self.init_scope, INIT_SCOPES)
        try:
            spec = get_dataset(self.dataset)
        except ValueError:
            raise ConfigError("dataset", self.dataset,
                              f"not valid; choose from {_names(_dataset_names())}") from None
        for field, registry in (("scheme", SCHEMES), ("activation", ACTIVATIONS),
                                ("optimizer", OPTIMIZERS), ("model", MODELS)):
            if getattr(self, field) in ("", None):
                raise ConfigError(field, "", f"is empty; choose from {_names(registry)}")
            _one_of(field, getattr(self, field), registry)
        reason = MODELS.get(self.model).unsupported(spec.input_shape)
        if reason:
            raise ConfigError("model", self.model, f"not defined for the dataset "
                              f"{self.dataset}; {reason}")
        if MODELS.get(self.model).normalize:
            self._check_std()
        for option in ("depth", "width"):
            if getattr(self, option) is not None and option not in MODELS.get(self.model).options:
                takers = [m for m in MODELS if option in MODELS.get(m).options]
                raise ConfigError(option, getattr(self, option), f"none of the models takes a "
                                  f"{option}; only {_names(takers)} do")

    def _check_std(self):
        from kzero.protocols import alternative_std

        try:
            alternative_std(self.normalization_std, self.dataset)
        except ValueError as e:
            raise ConfigError("normalization_std", self.normalization_std,
                              f"{e}; use --normalization_std=dataset") from None

    @property
    def experiment_name(self):
        return self.provenance.experiment or f"{self.dataset}_{self.model}"

    @property
    def variant(self):
        """`base_variant`, plus `protocol_suffix`: the name of the run's
        directory under its experiment."""
        return self.base_variant + self.protocol_suffix

    @property
    def base_variant(self):
        """`<model>_<scheme>`, plus `_x<scale>` for the schemes that use a bias
        scale and `_<init_scope>` for a scope other than "all"; a model's
        depth and width follow its name (`mlp8x256_lecun`), and the learning
        rate ends it in a grid over rates (`fnn_lecun_lr0.0003`)."""
        model = self.model
        if self.depth is not None or self.width is not None:
            model += f"{self.depth or ''}x{self.width or ''}"
        name = f"{model}_{self.scheme}"
        if self.bias_scale is not None:
            name += f"_x{self.bias_scale:g}"
        if self.init_scope != "all":
            name += f"_{self.init_scope}"
        if len(self.provenance.sweep.get("learning_rate", ())) > 1:
            name += f"_lr{self.learning_rate:g}"
        return name

    @property
    def protocol_departures(self):
        """The settings that depart from the protocol's, one short name each,
        e.g. ["holdout7000", "fixed_order"], then a batch norm epsilon, exact
        batch norm centring and a step limit where given ("bn_eps0.001",
        "exact_bn_mean", "50steps"), then the precision
        where it is not float32, e.g. "mixed_bfloat16"."""
        from kzero.protocols import PROTOCOLS

        names = {"holdout": "holdout{}", "order": "{}_order", "bn_statistics": "bn_{}",
                 "normalization_std": "{}_std", "crop_fill": "{}_crop"}
        departures = [names[name].format(getattr(self, name))
                      for name, default in PROTOCOLS.get(self.protocol).settings().items()
                      if getattr(self, name) != default]
        if self.bn_epsilon is not None:
            departures.append(f"bn_eps{self.bn_epsilon:g}")
        if self.bn_exact_mean:
            departures.append("exact_bn_mean")
        if self.max_steps is not None:
            departures.append(f"{self.max_steps}steps")
        # The paper trained in float32 under either protocol. Naming the
        # precision keeps a 16-bit run out of its float32 twin's directory
        # (where it would be skipped as finished), and lets the report set
        # the two side by side as it does protocols.
        if self.precision != "float32":
            departures.append(self.precision)
        return departures

    @property
    def protocol_suffix(self):
        """"" under paper_text with its own settings; else `_<protocol>` for
        another protocol, then `_<departure>` for each of `protocol_departures`."""
        suffix = "" if self.protocol == "paper_text" else f"_{self.protocol}"
        return suffix + "".join(f"_{part}" for part in self.protocol_departures)

    @property
    def protocol_label(self):
        """The protocol and its departures, e.g. "paper_text + holdout7000"."""
        return " + ".join([self.protocol, *self.protocol_departures])

    def replace(self, **changes):
        """A copy with `changes`, validated like a new config."""
        return dataclasses.replace(self, **changes)

    def with_provenance(self, **changes):
        """A copy whose provenance has `changes`."""
        return dataclasses.replace(self, provenance=dataclasses.replace(self.provenance,
                                                                        **changes))

    def settings(self):
        """The run's settings, without its provenance: what two runs that
        train alike have equal."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "provenance"}

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values, check_names=True):
        """The config of `values` (a dict as `to_dict` gives it, or a flat
        config.json of kzero before 0.6). Unknown keys raise `ConfigError`;
        missing ones take their defaults. With `check_names=False`, names
        that no registry of this process knows (a dataset or model
        registered by another program) are let through."""
        values = _renamed(_from_flat(dict(values)) if "provenance" not in values
                          else dict(values))
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(unknown[0], values[unknown[0]], _not_a_field(unknown[0]))
        token = _CHECK_NAMES.set(check_names)
        try:
            return cls(**values)
        finally:
            _CHECK_NAMES.reset(token)

    @classmethod
    def read(cls, path, check_names=True):
        """The config a run wrote to `path` (its `config.json`)."""
        with open(path) as f:
            return cls.from_dict(json.load(f), check_names=check_names)

    @classmethod
    def coerce(cls, config):
        """`config` as a `RunConfig`: a dict is validated into one."""
        return config if isinstance(config, cls) else cls.from_dict(dict(config))


# The order in which a grid's runs are listed: by model, then depth, init
# scheme, bias scale, learning rate, precision, and seed last.
AXES = ("model", "depth", "scheme", "bias_scale", "learning_rate", "precision")

# A grid's axes where it gives none: Figure 3's schemes, at bias scale 1.
DEFAULT_AXES = {"scheme": ("lecun", "zero_normal", "zero_uniform"), "bias_scale": (1.0,)}


@dataclasses.dataclass(frozen=True)
class Grid:
    """A grid of runs: every combination of `axes`' values (a field of
    `RunConfig` -> its values), each with `runs` seeds from `settings`' seed
    on, and the other `settings` in common. `Grid.make(**values)` sorts
    keyword values into these. A scheme that ignores the bias scale gets one
    variant, with bias_scale None; a model that takes no depth or width gets
    None for them, one that does its default where the grid gives none."""

    settings: dict = dataclasses.field(default_factory=dict)
    axes: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_AXES))
    experiment: Optional[str] = setting(None, WHAT, "Name of the experiment directory; "
                                        "default <dataset>_<models>.")
    extensions: tuple = setting(
        (), WHAT, "Python modules to import first, which register datasets, models, schemes "
        "or optimizers of their own (docs/library.md).")
    runs: int = setting(5, HOW, "Seeds per variant: seed, seed+1, ...")
    parallel_runs: int | str = setting(
        1, RUNNING, "1: run by run (the default: a run's digits depend on its settings and the "
        "machine's processor and software, not on the load or the rest of its grid); R: up to R "
        "runs of one architecture (any init scheme, bias scale and seed) trained at once as "
        "one model of replicas, equal to separate runs to float rounding; auto: the group "
        "size a short measurement finds fastest here (worth it on a GPU). Each replica "
        "records its own diagnostics, and a killed group resumes after its last finished "
        "epoch.")
    shard: Optional[str] = setting(
        None, RUNNING, "i/n: train only runs i, i+n, i+2n, ... of the grid (from 0), so that n "
        "jobs of a cluster array cover it; kzero.report merges them.")
    output_dir: str = setting("runs", WHERE, "Where run directories are written.")
    overwrite: bool = setting(False, WHERE, "Redo runs that already finished.")
    command: Optional[str] = None

    def __post_init__(self):
        object.__setattr__(self, "settings", dict(self.settings))
        object.__setattr__(self, "extensions", tuple(self.extensions))
        axes = {}
        for field, values in dict(self.axes).items():
            if field not in AXES:
                raise ConfigError(field, values, f"not a grid axis; the axes are "
                                  f"{_names(AXES)}" + _new_name(field))
            values = (values,) if isinstance(values, (str, int, float)) else tuple(values)
            if not values:
                if getattr(RunConfig, field) is None:  # none given: the model's or scheme's own
                    continue
                raise ConfigError(field, "", f"is empty; {_valid_values(field)}")
            axes[field] = tuple(_coerce(field, v) for v in values)
        object.__setattr__(self, "axes", axes)
        unknown = sorted(set(self.settings) - {f.name for f in dataclasses.fields(RunConfig)})
        if unknown:
            raise ConfigError(unknown[0], self.settings[unknown[0]], _not_a_field(unknown[0]))
        both = sorted(set(axes) & set(self.settings))
        if both:
            raise ConfigError(both[0], self.settings[both[0]], "is both a setting and an axis")
        _integer("runs", self.runs, minimum=1)
        if self.parallel_runs != "auto":  # a flag's "3", or 3
            object.__setattr__(self, "parallel_runs", _whole_number_or(
                "parallel_runs", self.parallel_runs, "auto"))
        if self.shard is not None:
            self.shard_index()
        for name in ("depth", "width"):
            if self.settings.get(name) is not None:
                _integer(name, self.settings[name], minimum=1)
        base = self.base
        for field, values in axes.items():  # each value, validated once
            if field != "depth":  # a depth is checked against its model in expand
                for value in values[1:]:
                    base.replace(**{field: value})
        if base.holdout and self.groups_asked:
            raise ConfigError("parallel_runs", self.parallel_runs,
                              f"a parallel group does not evaluate a hold-out (holdout="
                              f"{base.holdout}); use --parallel_runs=1")
        if self.groups_asked and base.distribution != "none":
            raise ConfigError("parallel_runs", self.parallel_runs,
                              f"not with distribution={base.distribution}; choose one")
        if _CHECK_NAMES.get():
            self._check_shapes()

    def _check_shapes(self):
        from kzero.models import MODELS

        for option in ("depth", "width"):
            given = self.axes.get(option) or self.settings.get(option)
            if given not in (None, ()) and not any(option in MODELS.get(m).options
                                                   for m in self.values("model")):
                takers = [m for m in MODELS if option in MODELS.get(m).options]
                raise ConfigError(option, given, f"none of the models takes a {option}; "
                                  f"only {_names(takers)} do")

    @classmethod
    def make(cls, **values):
        """A grid from keyword values: the grid's own fields (runs,
        output_dir, ...), a tuple or list for each axis, and run settings."""
        own = {f.name for f in dataclasses.fields(cls)} - {"settings", "axes"}
        settings = {k: v for k, v in values.items() if k not in own}
        axes = {k: settings.pop(k) for k in list(settings)
                if k in AXES and isinstance(settings[k], (tuple, list))}
        return cls(settings=settings, axes=axes, **{k: v for k, v in values.items() if k in own})

    def get(self, field):
        """The grid's one value of `field`: its setting, or its default."""
        return self.values(field)[0]

    @classmethod
    def of_run(cls, config, check_names=True):
        """The grid that `config`'s provenance says the run belonged to; with
        `check_names=False`, as in `RunConfig.from_dict`."""
        provenance = config.provenance
        axes = dict(provenance.sweep)
        seed = config.seed if provenance.base_seed is None else provenance.base_seed
        settings = {name: value for name, value in config.settings().items() if name not in axes}
        token = _CHECK_NAMES.set(check_names)
        try:
            return cls(settings={**settings, "seed": seed}, axes=axes,
                       runs=provenance.runs or 1, experiment=provenance.experiment,
                       extensions=provenance.extensions, command=provenance.command)
        finally:
            _CHECK_NAMES.reset(token)

    def values(self, field):
        """The values the grid's runs take for `field`."""
        if field in self.axes:
            return self.axes[field]
        # The schemes with random biases draw them at scale 1 where a grid gives none.
        default = 1.0 if field == "bias_scale" else getattr(RunConfig, field, None)
        return (self.settings.get(field, default),)

    @property
    def base(self):
        """The first run's settings (before its model's shape), validated."""
        shared = {field: self.values(field)[0] for field in AXES if field != "depth"}
        return RunConfig(**{**shared, **{k: v for k, v in self.settings.items()
                                         if k not in ("depth", "width")}})

    @property
    def groups_asked(self):
        """Whether `parallel_runs` asks for groups by number (auto decides)."""
        return self.parallel_runs not in (1, "auto")

    @property
    def experiment_name(self):
        return self.experiment or f"{self.base.dataset}_{'_'.join(self.values('model'))}"

    def shard_index(self):
        """(i, n) from `shard` "i/n"; (0, 1) without one."""
        if self.shard is None:
            return 0, 1
        try:
            index, count = (int(part) for part in str(self.shard).split("/"))
        except ValueError:
            index, count = -1, 0
        if not 0 <= index < count:
            raise ConfigError("shard", self.shard, "must be i/n with 0 <= i < n, e.g. 0/4")
        return index, count

    def expand(self):
        """The grid's runs, in `AXES` order with the seed last, as
        `RunConfig`s whose provenance names the grid."""
        from kzero.initializers import get_scheme
        from kzero.models import MODELS

        seed = self.settings.get("seed", 0)
        provenance = Provenance(experiment=self.experiment_name, command=self.command,
                                runs=self.runs, base_seed=seed, sweep=self.axes,
                                extensions=self.extensions)
        settings = {k: v for k, v in self.settings.items() if k not in ("depth", "width")}
        combos = []
        for combo in itertools.product(*(self.values(axis) for axis in AXES)):
            values = dict(zip(AXES, combo))
            options = MODELS.get(values["model"]).options
            values["depth"] = ((values["depth"] or options["depth"]) if "depth" in options
                               else None)
            values["width"] = ((self.settings.get("width") or options["width"])
                               if "width" in options else None)
            if not get_scheme(values["scheme"]).uses_bias_scale:
                values["bias_scale"] = None
            if values not in combos:
                combos.append(values)
        return [RunConfig(**{**settings, **values, "seed": seed + k, "provenance": provenance})
                for values in combos for k in range(self.runs)]

    def replace(self, **changes):
        """A copy with `changes`, validated like a new grid."""
        return dataclasses.replace(self, **changes)


def flag_fields():
    """The fields that are flags, by group: {group: [(owner, field)]}, each
    group in the order of `FLAG_GROUPS`, its fields in definition order."""
    groups = {group: [] for group in FLAG_GROUPS}
    for owner in (RunConfig, Grid):
        for field in dataclasses.fields(owner):
            if "group" in field.metadata:
                groups[field.metadata["group"]].append((owner, field))
    return groups


def field_type(owner, field):
    """The plain type of a field: int, float, str, bool, tuple, or str for
    `parallel_runs` (a number or "auto")."""
    hint = typing.get_type_hints(owner)[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) > 1:
        return str
    return args[0] if args else hint


def _coerce(field, value):
    """An axis value as its field's type (a list flag gives strings)."""
    kind = field_type(RunConfig, next(f for f in dataclasses.fields(RunConfig)
                                      if f.name == field))
    if kind is float:
        return _positive_number(field, value)
    if kind is int:
        return _whole_number(field, value)
    return value


# Old config.json fields, flat beside the run's settings: a grid's (moved
# into the provenance, or dropped where they only said how the grid ran) and
# the provenance's own.
_FLAT_AXES = {"models": "model", "inits": "scheme", "bias_scales": "bias_scale",
              "depths": "depth", "learning_rates": "learning_rate", "precisions": "precision"}
_FLAT_DROPPED = ("parallel_runs", "output_dir", "overwrite", "shard")


# Settings whose name changed: {old: new}, in config.json and in a grid's axes.
_RENAMED = {"init": "scheme"}


def _renamed(values):
    """`values` (a config dict) with the settings' current names."""
    values = {_RENAMED.get(k, k): v for k, v in values.items()}
    provenance = values.get("provenance")
    if isinstance(provenance, dict) and provenance.get("sweep"):
        values["provenance"] = {**provenance, "sweep": {_RENAMED.get(k, k): v for k, v
                                                        in provenance["sweep"].items()}}
    return values


def _from_flat(values):
    provenance_fields = {f.name for f in dataclasses.fields(Provenance)}
    provenance = {name: values.pop(name) for name in list(values)
                  if name in provenance_fields}
    sweep = {axis: values.pop(flat) for flat, axis in _FLAT_AXES.items() if flat in values}
    provenance["sweep"] = {axis: v for axis, v in sweep.items() if v}
    for name in _FLAT_DROPPED:
        values.pop(name, None)
    return {**values, "provenance": provenance}


def _new_name(field):
    return f" ({field} is now called {_RENAMED[field]})" if field in _RENAMED else ""


def _not_a_field(field):
    return "not a RunConfig field" + _new_name(field)


# Whether registry names are checked; False only while from_dict(check_names=False) runs.
_CHECK_NAMES = contextvars.ContextVar("check_names", default=True)


def _names(values):
    return ", ".join(values)


def _valid_values(field):
    from kzero.initializers import SCHEMES
    from kzero.models import MODELS

    names = {"model": MODELS, "scheme": SCHEMES, "precision": PRECISIONS}.get(field)
    return f"choose from {_names(names)}" if names else "give one or more positive numbers"


def _dataset_names():
    from kzero.datasets import DATASETS

    return [*DATASETS, "or a tensorflow-datasets image classification dataset"]


def _one_of(field, value, valid):
    if value not in valid:
        raise ConfigError(field, value, f"not valid; choose from {_names(valid)}")


def _integer(field, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field, value, "must be a whole number")
    if value < minimum:
        raise ConfigError(field, value, "must be at least 1" if minimum == 1 else "must be 0 or more")


def _whole_number(field, value):
    """An integer of at least 1, from an int or its string (a list flag's)."""
    try:
        number = int(value) if not isinstance(value, (bool, float)) else None
    except (TypeError, ValueError):
        number = None
    if number is None or number < 1:
        raise ConfigError(field, value, "must be whole numbers of at least 1")
    return number


def _whole_number_or(field, value, word):
    """An integer of at least 1 from an int or its string; else `word`'s error."""
    try:
        number = int(value) if not isinstance(value, (bool, float)) else None
    except (TypeError, ValueError):
        number = None
    if number is None:
        raise ConfigError(field, value, f"must be a whole number of at least 1, or {word}")
    if number < 1:
        raise ConfigError(field, value, f"must be at least 1, or {word}")
    return number


def _positive_number(field, value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not number > 0 or number == math.inf:
        raise ConfigError(field, value, "must be a positive number")
    return number
