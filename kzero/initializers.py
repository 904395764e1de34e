"""Initializers and the named init schemes of the paper.

A *scheme* decides the kernel and bias initializer of every conv and dense
layer of a model. Every random value a scheme draws comes from NumPy, from
an integer seed: Keras' own random initializers draw from each backend's
generator, so the same seed would give different initial weights under jax,
tensorflow and torch. With the initializers here, one seed gives bit-identical
initial weights under every backend, and runs can be compared run for run.

`FanInUniform` is PyTorch's default bias init, U(-1/sqrt(fan_in), +1/sqrt(fan_in)),
whose bounds depend on the *kernel's* fan-in, which a bias initializer cannot
see.

`apply_scheme` gives any built Keras model (Sequential, functional, nested) a
scheme's initial weights; the paper's builders pass the scheme's initializers
to each layer as they create it.
"""

import math
import zlib

import keras
import numpy as np

from kzero.registry import Registry

__all__ = ["INIT_STREAM", "FanInUniform", "FixupNormal", "NumpyGlorotUniform", "NumpyNormal",
           "NumpyUniform", "Scheme", "SCHEMES", "apply_scheme", "fan_in_of", "get_scheme",
           "layer_rng", "move_biases_to_normalizations", "register_scheme", "small_normal_scheme",
           "weighted_layers", "ZerOHadamard", "zero_branch_gammas", "zero_matrix"]

# Which random stream initial weights are drawn from; a run's config.json
# records it. Runs without it drew from each backend's own generator.
INIT_STREAM = "numpy-1"


def _numpy_seed(initializer):
    seed = initializer.seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{type(initializer).__name__} draws with NumPy and needs an integer "
                         f"seed (or None); got {seed!r}")
    return seed


def _to_tensor(values, dtype):
    """float64 NumPy draws as a backend tensor of `dtype`, rounded by NumPy so
    that every backend gets the same bits."""
    dtype = keras.backend.standardize_dtype(dtype)
    if dtype in ("float16", "float32", "float64"):
        return keras.ops.convert_to_tensor(values.astype(dtype), dtype=dtype)
    return keras.ops.cast(keras.ops.convert_to_tensor(values.astype(np.float32)), dtype)


@keras.saving.register_keras_serializable(package="kzero")
class NumpyNormal(keras.initializers.RandomNormal):
    """Normal initializer N(mean, stddev^2), drawn by NumPy.

    `keras.initializers.RandomNormal` with the same arguments and config, but
    the values come from `numpy.random.default_rng(seed)`, so they are the
    same under every Keras backend. An initializer seeded with an integer
    produces the same values on every call.

    Examples:

    >>> initializer = NumpyNormal(mean=0.0, stddev=1.0, seed=0)
    >>> values = initializer(shape=(500,))
    >>> layer = keras.layers.Dense(500, bias_initializer=NumpyNormal(seed=1))

    Args:
        mean: mean of the values.
        stddev: standard deviation of the values.
        seed: a Python integer, or None for a seed drawn once, at construction.
    """

    def __call__(self, shape, dtype=None):
        rng = np.random.default_rng(_numpy_seed(self))
        return _to_tensor(self.mean + self.stddev * rng.standard_normal(shape), dtype)


@keras.saving.register_keras_serializable(package="kzero")
class NumpyUniform(keras.initializers.RandomUniform):
    """Uniform initializer U[minval, maxval), drawn by NumPy.

    `keras.initializers.RandomUniform` with the same arguments and config, but
    the values come from `numpy.random.default_rng(seed)`, so they are the
    same under every Keras backend.

    Examples:

    >>> initializer = NumpyUniform(minval=0.0, maxval=1.0, seed=0)
    >>> values = initializer(shape=(500,))

    Args:
        minval: lower bound of the values (included).
        maxval: upper bound of the values (excluded).
        seed: a Python integer, or None for a seed drawn once, at construction.
    """

    def __call__(self, shape, dtype=None):
        rng = np.random.default_rng(_numpy_seed(self))
        return _to_tensor(rng.uniform(self.minval, self.maxval, shape), dtype)


@keras.saving.register_keras_serializable(package="kzero")
class NumpyGlorotUniform(keras.initializers.GlorotUniform):
    """Glorot (Xavier) uniform initializer, U(-limit, limit) with limit
    sqrt(6 / (fan_in + fan_out)), fans as Keras computes them, drawn by NumPy.

    `keras.initializers.GlorotUniform` with the same config, but the values
    come from `numpy.random.default_rng(seed)`.

    Args:
        seed: a Python integer, or None for a seed drawn once, at construction.
    """

    def __call__(self, shape, dtype=None):
        shape = tuple(int(d) for d in shape)
        receptive_field = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        fan_in = shape[-2] * receptive_field if len(shape) > 1 else shape[0]
        fan_out = shape[-1] * receptive_field
        limit = math.sqrt(6.0 / max(1, fan_in + fan_out))
        rng = np.random.default_rng(_numpy_seed(self))
        return _to_tensor(rng.uniform(-limit, limit, shape), dtype)


@keras.saving.register_keras_serializable(package="kzero")
class FanInUniform(NumpyUniform):
    """Uniform initializer U(-1/sqrt(fan_in), +1/sqrt(fan_in)), drawn by NumPy.

    This is PyTorch's default for the weights *and* biases of `Linear` and
    `Conv2d`, the reference initialization of the paper. It differs from Keras'
    `LecunUniform`, whose limit is sqrt(3 / fan_in).

    Examples:

    >>> # Standalone usage:
    >>> initializer = FanInUniform(fan_in=784)
    >>> values = initializer(shape=(500,))

    >>> # Usage in a Keras layer, as the bias of a 784 -> 500 dense layer:
    >>> layer = keras.layers.Dense(500, bias_initializer=FanInUniform(784))

    Args:
        fan_in: Number of inputs of the layer the values are drawn for:
            `in_features` for a dense layer, `in_channels * kh * kw` for a
            convolution. Given explicitly because a bias initializer only sees
            the bias' own shape.
        seed: a Python integer, or None for a seed drawn once, at construction.
            An initializer seeded with an integer produces the same values on
            every call, under every backend.
    """

    def __init__(self, fan_in, seed=None):
        if fan_in is None or fan_in <= 0:
            raise ValueError(f"FanInUniform needs the layer's fan_in, a positive number; "
                             f"got {fan_in}")
        self.fan_in = int(fan_in)
        limit = 1.0 / math.sqrt(self.fan_in)
        super().__init__(minval=-limit, maxval=limit, seed=seed)

    def get_config(self):
        # minval/maxval are derived from fan_in, so they are not part of the config.
        return {"fan_in": self.fan_in, "seed": super().get_config()["seed"]}


def _hadamard(size):
    """Sylvester's Hadamard matrix of `size` (a power of 2), entries +-1."""
    matrix = np.ones((1, 1))
    while len(matrix) < size:
        matrix = np.block([[matrix, matrix], [matrix, -matrix]])
    return matrix


def zero_matrix(fan_out, fan_in):
    """ZerO's matrix for a layer of `fan_in` inputs and `fan_out` outputs, in
    PyTorch's (out, in) layout (Zhao et al. 2022, Algorithm 1, as in
    jiaweizzhao/ZerO-initialization's `ZerO_Init_on_matrix`): the partial
    identity where the layer does not widen (out <= in), else I* H I* with H
    the normalised Hadamard matrix of size 2^ceil(log2 out), I* its partial
    identities."""
    if fan_out <= fan_in:
        return np.eye(fan_out, fan_in)
    log_size = math.ceil(math.log2(fan_out))
    size = 2 ** log_size
    return (np.eye(fan_out, size) @ (_hadamard(size) / 2 ** (log_size / 2))
            @ np.eye(size, fan_in))


@keras.saving.register_keras_serializable(package="kzero")
class ZerOHadamard(keras.initializers.Initializer):
    """ZerO's deterministic kernel (Zhao, Schaefer, Anandkumar, TMLR 2022):
    only zeros, ones and (where a layer widens) a scaled Hadamard block.

    A dense kernel, Keras' (in, out), is `zero_matrix(out, in)` transposed.
    A conv kernel (kh, kw, in, out) has that matrix at its centre tap
    (kh // 2, kw // 2) and zeros at every other tap: the paper's Algorithm 2
    read as "each output channel starts as the identity (or Hadamard) map of
    the input channels at the centre of its window", which makes a 3x3 conv
    start as the matching 1x1 map.

    >>> keras.layers.Dense(4, kernel_initializer=ZerOHadamard())
    """

    def __call__(self, shape, dtype=None):
        *taps, fan_in, fan_out = shape
        values = np.zeros(shape)
        centre = tuple(size // 2 for size in taps)
        values[centre] = zero_matrix(fan_out, fan_in).T
        return _to_tensor(values, dtype or keras.config.floatx())

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="kzero")
class FixupNormal(NumpyNormal):
    """Fixup's rule for the layers of a residual branch but its last (Zhang,
    Dauphin, Ma, ICLR 2019): He's normal over the fan-out, N(0, 2 / fan_out),
    scaled by L^(-1 / (2m - 2)) for L residual branches of m layers each,
    drawn by NumPy. The fan-out is `out * kh * kw` for a conv, as in
    hongyi-zhang/Fixup's CIFAR model (`weight.shape[0] * prod(weight.shape[2:])`
    in PyTorch's layout), and `out` for a dense layer. The branch's last layer
    and the classifier start at zero (`keras.initializers.Zeros`).

    >>> keras.layers.Conv2D(16, 3, kernel_initializer=FixupNormal(num_branches=9, seed=0))

    Args:
        num_branches: L, the residual branches of the network.
        branch_layers: m, the weighted layers of each branch (at least 2).
        seed: a Python integer, or None for a seed drawn once, at construction.
    """

    def __init__(self, num_branches, branch_layers=2, seed=None):
        if num_branches < 1 or branch_layers < 2:
            raise ValueError(f"FixupNormal needs num_branches >= 1 and branch_layers >= 2; "
                             f"got {num_branches} and {branch_layers}")
        self.num_branches = int(num_branches)
        self.branch_layers = int(branch_layers)
        super().__init__(mean=0.0, stddev=1.0, seed=seed)

    def stddev_for(self, shape):
        """The standard deviation of a kernel of `shape` (Keras' layout)."""
        fan_out = int(shape[-1]) * int(np.prod(shape[:-2]))
        return (math.sqrt(2.0 / fan_out)
                * self.num_branches ** (-1.0 / (2 * self.branch_layers - 2)))

    def __call__(self, shape, dtype=None):
        rng = np.random.default_rng(_numpy_seed(self))
        return _to_tensor(self.stddev_for(shape) * rng.standard_normal(shape), dtype)

    def get_config(self):
        return {"num_branches": self.num_branches, "branch_layers": self.branch_layers,
                "seed": self.seed}


def layer_rng(seed, layer_key):
    """The generator a layer's kernel and bias seeds are drawn from: a
    function of the run's seed and the layer's name (or other key) alone, so
    that a layer's initial weights do not depend on the other layers."""
    return np.random.default_rng([seed, zlib.crc32(str(layer_key).encode())])


class Scheme:
    """A named rule that gives each layer its kernel and bias initializers.

    Args:
        name: registry name.
        description: one line for `--helpfull` and docs/running.md.
        make: `make(fan_in, bias_scale, kernel_seed, bias_seed)` returning a
            `(kernel_initializer, bias_initializer)` pair.
        uses_bias_scale: whether `bias_scale` changes anything; schemes that
            ignore it get one variant per grid instead of one per scale.
        bias_to_normalization: where a batch norm would remove a layer's
            bias (and, its kernel being zero, its whole output), that layer
            gets a zero bias and the batch norm's shift (beta) gets the values
            the bias would have had (`move_biases_to_normalizations`).
        zero_branch_gamma: the batch norm that ends each residual branch
            starts with its scale (gamma) at 0, so that each block starts as
            its shortcut (`zero_branch_gammas`).
    """

    def __init__(self, name, description, make, uses_bias_scale=False,
                 bias_to_normalization=False, zero_branch_gamma=False):
        self.name = name
        self.description = description
        self._make = make
        self.uses_bias_scale = uses_bias_scale
        self.bias_to_normalization = bias_to_normalization
        self.zero_branch_gamma = zero_branch_gamma

    def initializers(self, fan_in=None, bias_scale=1.0, rng=None):
        """Returns `(kernel_initializer, bias_initializer)` for one layer.

        `fan_in` (the kernel's inputs per unit) is needed only by schemes whose
        bounds depend on it, such as `lecun`. `rng` is a `numpy.random.Generator`
        or an integer seed, from which the kernel's and the bias' seeds are
        drawn; the model builders pass `layer_rng(run_seed, layer_name)`.
        """
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        kernel_seed, bias_seed = (int(s) for s in rng.integers(0, 2**31 - 1, size=2))
        return self._make(fan_in, bias_scale, kernel_seed, bias_seed)

    def __repr__(self):
        return f"Scheme({self.name!r})"


SCHEMES = Registry("init scheme")


def register_scheme(scheme, replace=False):
    """Adds a `Scheme` to `SCHEMES` under its name (for `--scheme` and
    `build_model(scheme=...)`); returns it."""
    return SCHEMES.register(scheme.name, scheme, replace=replace)


def _lecun(fan_in, scale, kernel_seed, bias_seed):
    return FanInUniform(fan_in, seed=kernel_seed), FanInUniform(fan_in, seed=bias_seed)


def _zero_normal(fan_in, scale, kernel_seed, bias_seed):
    return keras.initializers.Zeros(), NumpyNormal(mean=0.0, stddev=scale, seed=bias_seed)


for _scheme in [
    Scheme(
        "lecun",
        "the paper's reference: PyTorch's default, kernel and bias "
        "U(-1/sqrt(fan_in), 1/sqrt(fan_in))",
        _lecun,
    ),
    Scheme(
        "zero",
        "all weights and biases zero (never breaks symmetry)",
        lambda fan_in, scale, ks, bs: (
            keras.initializers.Zeros(),
            keras.initializers.Zeros(),
        ),
    ),
    Scheme(
        "zero_normal",
        "zero kernels, biases N(0, 1) * bias_scale",
        _zero_normal,
        uses_bias_scale=True,
    ),
    Scheme(
        "zero_normal_bn",
        "zero_normal carried through batch norm: zero kernels, biases N(0, 1) * bias_scale, "
        "except where a batch norm would remove them: there the bias is 0 and the batch "
        "norm's shift (beta) takes the random values",
        _zero_normal,
        uses_bias_scale=True,
        bias_to_normalization=True,
    ),
    Scheme(
        "zero_uniform",
        "zero kernels, biases U[0, 1) * bias_scale",
        lambda fan_in, scale, ks, bs: (
            keras.initializers.Zeros(),
            NumpyUniform(minval=0.0, maxval=scale, seed=bs),
        ),
        uses_bias_scale=True,
    ),
    Scheme(
        "zero_gamma",
        "lecun, and the last batch norm of each residual branch starts with gamma 0 "
        "(Goyal et al. 2017; torchvision's zero_init_residual)",
        _lecun,
        zero_branch_gamma=True,
    ),
    Scheme(
        "zero_hadamard",
        "ZerO (Zhao et al. 2022): kernels the partial identity, or a scaled Hadamard block "
        "where a layer widens, at a conv's centre tap; zero biases; deterministic",
        lambda fan_in, scale, ks, bs: (
            ZerOHadamard(),
            keras.initializers.Zeros(),
        ),
    ),
    Scheme(
        "keras_default",
        "Keras' default: glorot_uniform kernels, zero biases",
        lambda fan_in, scale, ks, bs: (
            NumpyGlorotUniform(seed=ks),
            keras.initializers.Zeros(),
        ),
    ),
    Scheme(
        "he",
        "He et al. 2015: kernels N(0, 2 / fan_in), zero biases (untruncated, unlike Keras' "
        "HeNormal)",
        lambda fan_in, scale, ks, bs: (
            NumpyNormal(mean=0.0, stddev=math.sqrt(2.0 / fan_in), seed=ks),
            keras.initializers.Zeros(),
        ),
    ),
]:
    register_scheme(_scheme)


def small_normal_scheme(kernel_std):
    """`zero_normal` with kernels N(0, kernel_std^2) instead of zero: whether
    a little kernel diversity closes the gap to the reference init (a study
    beyond the paper). Named `small_normal_<kernel_std>`, e.g.
    `small_normal_1e-4`; register it with `register_scheme`."""
    label = f"{kernel_std:.0e}".replace("e-0", "e-").replace("e+0", "e")
    return Scheme(
        f"small_normal_{label}",
        f"kernels N(0, {label}^2), biases N(0, 1) * bias_scale",
        lambda fan_in, scale, ks, bs: (
            NumpyNormal(mean=0.0, stddev=kernel_std, seed=ks),
            NumpyNormal(mean=0.0, stddev=scale, seed=bs),
        ),
        uses_bias_scale=True,
    )


for _kernel_std in (1e-4, 1e-2):
    register_scheme(small_normal_scheme(_kernel_std))


def get_scheme(name):
    """Returns the registered `Scheme` called `name` (a `Scheme` is returned
    as it is), or raises a `ValueError` that lists the valid names."""
    return name if isinstance(name, Scheme) else SCHEMES.get(name)


# Layers a scheme initializes, with a kernel whose last axis is the units and
# whose other axes are each unit's inputs.
_WEIGHTED = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def weighted_layers(model):
    """The dense and convolution layers of `model`, nested models included,
    in the order of `model.layers`."""
    found = []
    for layer in model.layers:
        if isinstance(layer, _WEIGHTED):
            found.append(layer)
        elif hasattr(layer, "layers"):
            found.extend(weighted_layers(layer))
    return found


def fan_in_of(layer):
    """Inputs per unit of a built dense or convolution layer: `in_features`,
    or `in_channels * kernel size` (what PyTorch and Keras call fan-in)."""
    return int(np.prod(layer.kernel.shape[:-1]))


def move_biases_to_normalizations(model, layers=None):
    """For each conv and dense layer of `model` (of the names in `layers`,
    if given) whose output a batch norm would remove while its kernel is zero
    (`kzero.initcheck.erasing_normalizations`): the batch norm's shift takes
    the layer's bias values, and the bias becomes zero. Returns the names of
    the layers moved."""
    from kzero.initcheck import erasing_normalizations

    moved = []
    for layer, normalization in erasing_normalizations(model).items():
        if (layers is not None and layer.name not in layers) or \
                getattr(normalization, "beta", None) is None:
            continue
        normalization.beta.assign(keras.ops.cast(layer.bias, normalization.beta.dtype))
        layer.bias.assign(keras.ops.zeros(layer.bias.shape, layer.bias.dtype))
        layer.bias_initializer = keras.initializers.Zeros()
        moved.append(layer.name)
    return moved


def _branch_ends(model, branch_ends=None):
    from kzero.initcheck import residual_branch_ends

    if branch_ends is None:
        return residual_branch_ends(model)
    return [model.get_layer(name) for name in branch_ends]


def zero_branch_gammas(model, branch_ends=None):
    """Sets the scale (gamma) of the batch norm that ends each residual
    branch of `model` to 0 (`kzero.initcheck.residual_branch_ends`, or the
    batch norms named in `branch_ends`, for blocks that rule does not read).
    Returns their names."""
    names = []
    for normalization in _branch_ends(model, branch_ends):
        if getattr(normalization, "gamma", None) is not None:
            normalization.gamma.assign(keras.ops.zeros(normalization.gamma.shape,
                                                       normalization.gamma.dtype))
            names.append(normalization.name)
    return names


def _reset_shifts(model, branch_ends=None):
    """The shift (beta) of every batch norm that `move_biases_to_normalizations`
    could have filled back to its initial zeros, and the scale (gamma) that
    `zero_branch_gammas` could have zeroed back to ones."""
    from kzero.initcheck import erasing_normalizations

    for normalization in set(erasing_normalizations(model).values()):
        if getattr(normalization, "beta", None) is not None:
            normalization.beta.assign(keras.ops.zeros(normalization.beta.shape, normalization.beta.dtype))
    for normalization in _branch_ends(model, branch_ends):
        if getattr(normalization, "gamma", None) is not None:
            normalization.gamma.assign(keras.ops.ones(normalization.gamma.shape,
                                                      normalization.gamma.dtype))


def apply_scheme(model, scheme, bias_scale=1.0, seed=0, branch_ends=None):
    """Gives every dense and convolution layer of a built Keras model the
    initial weights of `scheme` (a name or a `Scheme`), each layer's fan-in
    worked out from its kernel. Each layer is seeded from (seed, its name), as
    the paper's builders seed theirs, so a model built by `build_model` with
    one scheme and given another here has the weights `build_model` gives the
    other. Name your layers: Keras' generated names (`dense_1`, ...) depend on
    what the process built before. The result is then a function of
    (architecture, layer names, scheme, bias_scale, seed), the same under
    every backend. The shifts (beta) of the batch norms that follow a conv
    or dense layer are reset to zero, and a `bias_to_normalization` scheme
    (`zero_normal_bn`) then fills them. Likewise the scales (gamma) of the
    batch norms that end residual branches are reset to one, and a
    `zero_branch_gamma` scheme (`zero_gamma`) zeroes them: those
    `kzero.initcheck.residual_branch_ends` finds, or those named in
    `branch_ends`. The layers also keep the initializers, so a saved model
    records them. Returns `model`.

    >>> model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)])
    >>> model = apply_scheme(model, "zero_normal", bias_scale=1.0, seed=0)
    """
    scheme = get_scheme(scheme)
    if not model.built:
        raise ValueError("apply_scheme needs a built model: give it a keras.Input "
                         "or call it on a batch first")
    for layer in weighted_layers(model):
        kernel_init, bias_init = scheme.initializers(fan_in_of(layer), bias_scale,
                                                     layer_rng(seed, layer.name))
        layer.kernel_initializer = kernel_init
        layer.kernel.assign(kernel_init(layer.kernel.shape, layer.kernel.dtype))
        if getattr(layer, "bias", None) is not None:
            layer.bias_initializer = bias_init
            layer.bias.assign(bias_init(layer.bias.shape, layer.bias.dtype))
    # A scheme applied over another leaves nothing of it, the batch norms'
    # shifts that a bias_to_normalization scheme fills included.
    _reset_shifts(model, branch_ends)
    if scheme.bias_to_normalization:
        move_biases_to_normalizations(model)
    if scheme.zero_branch_gamma:
        zero_branch_gammas(model, branch_ends)
    return model
