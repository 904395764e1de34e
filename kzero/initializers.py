"""Initializers and the named init schemes of the paper.

A *scheme* decides the kernel and bias initializer of every conv and dense
layer of a model. Keras' own initializers express every distribution the paper
uses except one: PyTorch's default bias init, U(-1/sqrt(fan_in), +1/sqrt(fan_in)),
whose bounds depend on the *kernel's* fan-in, which a bias initializer cannot
see. `FanInUniform` fills that gap.

`apply_scheme` gives any built Keras model (Sequential, functional, nested) a
scheme's initial weights; the paper's builders pass the scheme's initializers
to each layer as they create it.
"""

import math

import keras
import numpy as np

from kzero.registry import Registry

__all__ = ["FanInUniform", "Scheme", "SCHEMES", "apply_scheme", "fan_in_of", "get_scheme",
           "register_scheme", "weighted_layers"]


@keras.saving.register_keras_serializable(package="kzero")
class FanInUniform(keras.initializers.RandomUniform):
    """Uniform initializer U(-1/sqrt(fan_in), +1/sqrt(fan_in)).

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
        seed: A Python integer or instance of `keras.random.SeedGenerator`,
            as for Keras' own random initializers. An initializer seeded with
            an integer produces the same values on every call.
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


def _pytorch_default_kernel(seed):
    # VarianceScaling(1/3, fan_in, uniform) has limit sqrt(3 * (1/3) / fan_in),
    # i.e. 1/sqrt(fan_in), with Keras computing fan_in = in_channels * kh * kw.
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform", seed=seed
    )


class Scheme:
    """A named rule that gives each layer its kernel and bias initializers.

    Args:
        name: registry name.
        description: one line for `--helpfull` and the README.
        make: `make(fan_in, bias_scale, kernel_seed, bias_seed)` returning a
            `(kernel_initializer, bias_initializer)` pair.
        uses_bias_scale: whether `bias_scale` changes anything; schemes that
            ignore it get one variant per grid instead of one per scale.
    """

    def __init__(self, name, description, make, uses_bias_scale=False):
        self.name = name
        self.description = description
        self._make = make
        self.uses_bias_scale = uses_bias_scale

    def initializers(self, fan_in=None, bias_scale=1.0, rng=None):
        """Returns `(kernel_initializer, bias_initializer)` for one layer.

        `fan_in` (the kernel's inputs per unit) is needed only by schemes whose
        bounds depend on it, such as `lecun`. `rng` is a `numpy.random.Generator`
        or an integer seed; a model builder passes one generator for all its
        layers, so that every layer gets its own seeds and the whole model is
        reproducible from one base seed.
        """
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        kernel_seed, bias_seed = (int(s) for s in rng.integers(0, 2**31 - 1, size=2))
        return self._make(fan_in, bias_scale, kernel_seed, bias_seed)

    def __repr__(self):
        return f"Scheme({self.name!r})"


SCHEMES = Registry("init scheme")


def register_scheme(scheme, replace=False):
    """Adds a `Scheme` to `SCHEMES` under its name (for `--inits` and
    `build_model(init=...)`); returns it."""
    return SCHEMES.register(scheme.name, scheme, replace=replace)


for _scheme in [
    Scheme(
        "lecun",
        "the paper's reference: PyTorch's default, kernel and bias "
        "U(-1/sqrt(fan_in), 1/sqrt(fan_in))",
        lambda fan_in, scale, ks, bs: (
            _pytorch_default_kernel(ks),
            FanInUniform(fan_in, seed=bs),
        ),
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
        lambda fan_in, scale, ks, bs: (
            keras.initializers.Zeros(),
            keras.initializers.RandomNormal(mean=0.0, stddev=scale, seed=bs),
        ),
        uses_bias_scale=True,
    ),
    Scheme(
        "zero_uniform",
        "zero kernels, biases U[0, 1) * bias_scale",
        lambda fan_in, scale, ks, bs: (
            keras.initializers.Zeros(),
            keras.initializers.RandomUniform(minval=0.0, maxval=scale, seed=bs),
        ),
        uses_bias_scale=True,
    ),
    Scheme(
        "keras_default",
        "Keras' default: glorot_uniform kernels, zero biases",
        lambda fan_in, scale, ks, bs: (
            keras.initializers.GlorotUniform(seed=ks),
            keras.initializers.Zeros(),
        ),
    ),
]:
    register_scheme(_scheme)


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


def apply_scheme(model, scheme, bias_scale=1.0, seed=0):
    """Gives every dense and convolution layer of a built Keras model the
    initial weights of `scheme` (a name or a `Scheme`), each layer's fan-in
    worked out from its kernel. Layers are visited in `model.layers` order and
    seeded from one generator, so the result is a function of (model, scheme,
    bias_scale, seed). The layers also keep the initializers, so a saved model
    records them. Returns `model`.

    >>> model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)])
    >>> model = apply_scheme(model, "zero_normal", bias_scale=1.0, seed=0)
    """
    scheme = get_scheme(scheme)
    if not model.built:
        raise ValueError("apply_scheme needs a built model: give it a keras.Input "
                         "or call it on a batch first")
    rng = np.random.default_rng(seed)
    for layer in weighted_layers(model):
        kernel_init, bias_init = scheme.initializers(fan_in_of(layer), bias_scale, rng)
        layer.kernel_initializer = kernel_init
        layer.kernel.assign(kernel_init(layer.kernel.shape, layer.kernel.dtype))
        if getattr(layer, "bias", None) is not None:
            layer.bias_initializer = bias_init
            layer.bias.assign(bias_init(layer.bias.shape, layer.bias.dtype))
    return model
