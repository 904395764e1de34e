"""`RunConfig`: one typed, validated description of a run, the one object that
the runner, `train`, parallel groups, the benchmark and the report share.

A run's `config.json` is `config.to_dict()`, and `RunConfig.read(path)` reads
it back. The fields fall in three groups: what the run trains (everything
`train` honours), the grid it belongs to (as the command line gave it), and
where and with what it ran (filled in by `train`).

Invalid values and unknown keys raise `ConfigError` where the config is made,
naming the field, the value and what is valid.
"""

import contextvars
import dataclasses
import json
import math
from typing import Optional

__all__ = ["ConfigError", "RunConfig", "JIT_COMPILE", "PIPELINES", "PRECISIONS",
           "DISTRIBUTIONS"]

# Keras dtype policies: mixed ones compute in 16 bits with float32 variables;
# compile() adds loss scaling for mixed_float16.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

# Keras' jit_compile: "auto" is XLA under jax (and under tensorflow on an
# accelerator), eager under torch; "true" under torch is torch.compile.
JIT_COMPILE = {"auto": "auto", "true": True, "false": False}

# How batches are made (kzero.pipelines): "auto" takes the faster one here.
PIPELINES = ("auto", "tf", "numpy", "device")

DISTRIBUTIONS = ("none", "data_parallel")


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
class RunConfig:
    """One run of kzero: what it trains, the grid it belongs to, and its
    provenance. Every field has a default; `RunConfig()` is the MNIST FNN
    with the reference init, 10 epochs.

    What the run trains:
        dataset: a name in `kzero.datasets.DATASETS`, or a tensorflow-datasets
            image-classification dataset.
        model: a name in `kzero.models.MODELS`.
        init: a scheme name in `kzero.initializers.SCHEMES`.
        bias_scale: multiplies the random biases of the schemes that use it;
            None for the others (taken as 1).
        activation: a name in `kzero.models.ACTIVATIONS`.
        depth, width: the hidden layers and their units, for the models that
            take them (`--model=mlp`); None for the others.
        init_scope: "all", or "paper_code" (the scheme reaches only the
            ResNet's stem conv and last layer, as in the paper's code).
        seed: the run's seed: initial weights, data order, augmentation.
        epochs, batch_size: as in the paper (batch 128).
        optimizer: a name in `kzero.optimizers.OPTIMIZERS`.
        learning_rate: the optimizer's.
        weight_decay: the optimizer's weight decay; None: its default (0,
            or PyTorch's 0.01 for adamw).
        max_examples: use only the first N examples of each split.
        max_steps: train only the first N update steps (of one epoch; the
            first-steps census), then evaluate; None: whole epochs.
        bn_epsilon: what the batch norms add to the variance; None:
            PyTorch's 1e-5, as in the paper's code.
        bn_exact_mean: the batch norms centre a channel that is constant over
            the batch exactly, where the plain mean leaves rounding error
            (`kzero.layers.StableBatchNormalization`).
        pipeline: one of `PIPELINES`.
        precision: one of `PRECISIONS`.
        jit_compile: a key of `JIT_COMPILE`.
        distribution: "none", or "data_parallel" (jax: each batch split over
            the local devices).
        record_gradients, grad_first_steps, grad_every: gradient recording
            (see `kzero.callbacks.GradientRecorder`), and with it each
            stage's input dependence (`kzero.callbacks.StageRecorder`).
        record_symmetry: distinct and dead units per layer and epoch.
        record_activations: forward statistics per layer, at the gradient
            schedule (see `kzero.callbacks.ActivationRecorder`).
        save_model: keep the trained model as `model.keras`.
        data_dir: where `<dataset>.npz` is; None: $KZERO_DATA_DIR, else
            tensorflow-datasets.
        protocol: a name in `kzero.protocols.PROTOCOLS`: "paper_text" (the
            default) or "paper_code" (the authors' code where the text is
            silent). It gives the next five fields their values where they
            are None, and may impose `epochs` (see `kzero.protocols`).
        holdout: training examples held out per run as a validation split
            (metrics.csv's holdout_loss and holdout_accuracy).
        order: "epoch" (reshuffled every epoch) or "fixed" (one order).
        bn_statistics: "moving" or "batch" statistics for test batches.
        normalization_std: "dataset" or "kuangliu" (ResNet inputs).
        crop_fill: "mean" or "black" padding of the ResNet's random crops.

    The grid (what the command line asked for; `kzero.grid` expands it):
        experiment, models, inits, bias_scales, depths, learning_rates (a
        variant per rate, named `_lr<rate>`; none: `learning_rate` alone),
        precisions (a variant per precision; none: `precision` alone),
        runs, base_seed,
        parallel_runs (1, the default: run by run; R runs of one
        architecture per group; or "auto": the size measured fastest here,
        `kzero.group_size`), output_dir,
        overwrite, shard; and extensions, the
        Python modules the runner imported first (they register datasets,
        models, schemes or optimizers).

    Provenance (filled in when the run trains):
        backend, accelerator, host, versions, input_pipeline, command,
        parallel_group, and init_stream: where the initial weights were drawn
        (`kzero.initializers.INIT_STREAM`; None in runs of kzero before 0.4,
        whose weights came from each backend's own generator).
    """

    # What the run trains.
    dataset: str = "mnist"
    model: str = "fnn"
    init: str = "lecun"
    bias_scale: Optional[float] = None
    activation: str = "elu"
    depth: Optional[int] = None
    width: Optional[int] = None
    init_scope: str = "all"
    seed: int = 0
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: Optional[float] = None
    max_examples: Optional[int] = None
    max_steps: Optional[int] = None
    bn_epsilon: Optional[float] = None
    bn_exact_mean: bool = False
    pipeline: str = "auto"
    precision: str = "float32"
    jit_compile: str = "auto"
    distribution: str = "none"
    record_gradients: bool = True
    grad_first_steps: int = 5
    grad_every: int = 1000
    record_symmetry: bool = True
    record_activations: bool = True
    save_model: bool = True
    data_dir: Optional[str] = None
    protocol: str = "paper_text"
    holdout: Optional[int] = None
    order: Optional[str] = None
    bn_statistics: Optional[str] = None
    normalization_std: Optional[str] = None
    crop_fill: Optional[str] = None
    # The grid.
    experiment: Optional[str] = None
    models: tuple = ("fnn",)
    inits: tuple = ("lecun", "zero_normal", "zero_uniform")
    bias_scales: tuple = (1.0,)
    depths: tuple = ()
    learning_rates: tuple = ()
    precisions: tuple = ()
    runs: int = 5
    base_seed: Optional[int] = None
    parallel_runs: int | str = 1
    output_dir: str = "runs"
    overwrite: bool = False
    shard: Optional[str] = None
    extensions: tuple = ()
    # Provenance.
    backend: Optional[str] = None
    accelerator: Optional[str] = None
    host: Optional[str] = None
    versions: Optional[dict] = None
    input_pipeline: Optional[str] = None
    command: Optional[str] = None
    parallel_group: Optional[tuple] = None
    init_stream: Optional[str] = None

    def __post_init__(self):
        for name in ("models", "inits", "bias_scales", "depths", "learning_rates",
                     "precisions", "parallel_group", "extensions"):
            value = getattr(self, name)
            if isinstance(value, (list, str)):
                value = (value,) if isinstance(value, str) else tuple(value)
                object.__setattr__(self, name, value)
        object.__setattr__(self, "bias_scales", tuple(
            _positive_number("bias_scales", s) for s in self.bias_scales))
        if self.bias_scale is not None:
            object.__setattr__(self, "bias_scale",
                               _positive_number("bias_scale", self.bias_scale))
        object.__setattr__(self, "depths", tuple(_whole_number("depths", d) for d in self.depths))
        object.__setattr__(self, "learning_rates", tuple(
            _positive_number("learning_rates", r) for r in self.learning_rates))
        if self.parallel_runs != "auto":  # a flag's "3", or 3
            object.__setattr__(self, "parallel_runs", _whole_number_or(
                "parallel_runs", self.parallel_runs, "auto"))
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
        for precision in self.precisions:
            _one_of("precisions", precision, PRECISIONS)
        _one_of("jit_compile", self.jit_compile, JIT_COMPILE)
        _one_of("distribution", self.distribution, DISTRIBUTIONS)
        for name in ("epochs", "runs", "batch_size"):
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
        for name in ("depth", "width"):
            if getattr(self, name) is not None:
                _integer(name, getattr(self, name), minimum=1)
        from kzero.protocols import BN_STATISTICS, CROP_FILLS, NORMALIZATION_STDS, ORDERS

        _integer("holdout", self.holdout, minimum=0)
        _one_of("order", self.order, ORDERS)
        _one_of("bn_statistics", self.bn_statistics, BN_STATISTICS)
        _one_of("normalization_std", self.normalization_std, NORMALIZATION_STDS)
        _one_of("crop_fill", self.crop_fill, CROP_FILLS)
        if self.holdout and self.groups_asked:
            raise ConfigError("parallel_runs", self.parallel_runs,
                              f"a parallel group does not evaluate a hold-out (holdout="
                              f"{self.holdout}); use --parallel_runs=1")
        _positive_number("learning_rate", self.learning_rate)
        if self.weight_decay is not None and not (
                isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ConfigError("weight_decay", self.weight_decay, "must be 0 or more")
        if self.groups_asked and self.distribution != "none":
            raise ConfigError("parallel_runs", self.parallel_runs,
                              f"not with distribution={self.distribution}; choose one")
        if self.shard is not None:
            self.shard_index()

    def _check_names(self):
        from kzero.datasets import get_dataset
        from kzero.initializers import SCHEMES
        from kzero.models import ACTIVATIONS, INIT_SCOPES, MODELS
        from kzero.optimizers import OPTIMIZERS

        _one_of("init_scope", self.init_scope, INIT_SCOPES)
        registered = (("inits", self.inits, SCHEMES), ("init", (self.init,), SCHEMES),
                      ("activation", (self.activation,), ACTIVATIONS),
                      ("optimizer", (self.optimizer,), OPTIMIZERS),
                      ("models", self.models, MODELS), ("model", (self.model,), MODELS))
        try:
            spec = get_dataset(self.dataset)
        except ValueError:
            raise ConfigError("dataset", self.dataset,
                              f"not valid; choose from {_names(_dataset_names())}") from None
        for field, values, registry in registered:
            if not values:
                raise ConfigError(field, "", f"is empty; choose from {_names(registry)}")
            for value in values:
                _one_of(field, value, registry)
                if registry is MODELS:
                    reason = MODELS.get(value).unsupported(spec.input_shape)
                    if reason:
                        raise ConfigError(field, value, f"not defined for the dataset "
                                          f"{self.dataset}; {reason}")
                    if MODELS.get(value).normalize:
                        self._check_std()
        for field, option in (("depths", "depth"), ("width", "width")):
            given = getattr(self, field)
            if given not in (None, ()) and not any(
                    option in MODELS.get(m).options for m in {*self.models, self.model}):
                takers = [m for m in MODELS if option in MODELS.get(m).options]
                shown = ",".join(map(str, given)) if isinstance(given, tuple) else given
                raise ConfigError(field, shown, f"none of the models takes a {option}; "
                                  f"only {_names(takers)} do")

    def _check_std(self):
        from kzero.protocols import alternative_std

        try:
            alternative_std(self.normalization_std, self.dataset)
        except ValueError as e:
            raise ConfigError("normalization_std", self.normalization_std,
                              f"{e}; use --normalization_std=dataset") from None

    @property
    def groups_asked(self):
        """Whether `parallel_runs` asks for groups by number (auto decides)."""
        return self.parallel_runs not in (1, "auto")

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

    @property
    def experiment_name(self):
        return self.experiment or f"{self.dataset}_{'_'.join(self.models)}"

    @property
    def variant(self):
        """`base_variant`, plus `protocol_suffix`: the name of the run's
        directory under its experiment."""
        return self.base_variant + self.protocol_suffix

    @property
    def base_variant(self):
        """`<model>_<init>`, plus `_x<scale>` for the schemes that use a bias
        scale and `_<init_scope>` for a scope other than "all"; a model's
        depth and width follow its name (`mlp8x256_lecun`), and the learning
        rate ends it in a grid over rates (`fnn_lecun_lr0.0003`)."""
        model = self.model
        if self.depth is not None or self.width is not None:
            model += f"{self.depth or ''}x{self.width or ''}"
        name = f"{model}_{self.init}"
        if self.bias_scale is not None:
            name += f"_x{self.bias_scale:g}"
        if self.init_scope != "all":
            name += f"_{self.init_scope}"
        if self.learning_rates:
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

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values, check_names=True):
        """The config of `values` (a dict as `to_dict` gives it). Unknown keys
        raise `ConfigError`; missing ones take their defaults. With
        `check_names=False`, names that no registry of this process knows (a
        dataset or model registered by another program) are let through."""
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(unknown[0], values[unknown[0]], "not a RunConfig field")
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


# Whether registry names are checked; False only while from_dict(check_names=False) runs.
_CHECK_NAMES = contextvars.ContextVar("check_names", default=True)


def _names(values):
    return ", ".join(values)


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
