"""The paper's architectures (Tables 1 and 2), built with a named init scheme.

Every conv and dense layer, the ResNet's shortcut convs included, takes its
kernel and bias initializers from the scheme, so an experiment changes only the
scheme's name. Layer names are stable because they become TensorBoard tags and
`gradients.csv` keys.
"""

import keras
import numpy as np

from kzero.initializers import get_scheme
from kzero.layers import BatchNormalization

__all__ = ["ACTIVATIONS", "MODELS", "INPUT_SHAPES", "NUM_CLASSES", "build_model"]

INPUT_SHAPES = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
NUM_CLASSES = 10

ACTIVATIONS = {
    name: getattr(keras.activations, name)
    for name in ["elu", "relu", "leaky_relu", "selu", "sigmoid", "tanh"]
}

# BatchNormalization with PyTorch's defaults (the paper's code): momentum 0.1
# there is 0.9 here, and eps 1e-5. kzero's own layer: see kzero/layers.py.
_BN = dict(momentum=0.9, epsilon=1e-5)


class _LayerFactory:
    """Creates conv and dense layers with the scheme's initializers.

    One numpy generator seeded from the run's seed hands out a fresh pair of
    seeds per layer, in build order, so a model is a pure function of
    (architecture, scheme, bias_scale, seed).
    """

    def __init__(self, scheme, bias_scale, activation, seed, initialized_layers=None):
        self.scheme = get_scheme(scheme)
        self.bias_scale = bias_scale
        self.activation = ACTIVATIONS[activation]
        self.rng = np.random.default_rng(seed)
        self.default_scheme = get_scheme("lecun")
        self.initialized_layers = initialized_layers

    def _initializers(self, name, fan_in):
        # Draw seeds even for layers left at the default, so that choosing
        # `initialized_layers` does not shift the seeds of the other layers.
        scheme = self.scheme
        if self.initialized_layers is not None and name not in self.initialized_layers:
            scheme = self.default_scheme
        kernel_init, bias_init = scheme.initializers(fan_in, self.bias_scale, self.rng)
        return dict(kernel_initializer=kernel_init, bias_initializer=bias_init)

    def dense(self, x, units, name, activate=True):
        return keras.layers.Dense(
            units,
            activation=self.activation if activate else None,
            name=name,
            **self._initializers(name, x.shape[-1]),
        )(x)

    def conv(self, x, filters, size, name, strides=1, activate=True):
        return keras.layers.Conv2D(
            filters,
            size,
            strides=strides,
            padding="same",
            activation=self.activation if activate else None,
            name=name,
            **self._initializers(name, x.shape[-1] * size * size),
        )(x)

    def act(self, x, name):
        return keras.layers.Activation(self.activation, name=name)(x)


def _logreg(f, x, dataset):
    x = keras.layers.Flatten(name="flatten")(x)
    return f.dense(x, NUM_CLASSES, "logits", activate=False)


def _fnn(f, x, dataset):
    hidden = {"mnist": [500], "cifar10": [512, 256, 128]}[dataset]
    x = keras.layers.Flatten(name="flatten")(x)
    for i, units in enumerate(hidden, start=1):
        x = f.dense(x, units, f"dense{i}")
    return f.dense(x, NUM_CLASSES, "logits", activate=False)


def _cnn(f, x, dataset):
    if dataset == "mnist":
        x = f.conv(x, 16, 5, "conv1")
        x = f.conv(x, 32, 5, "conv2")
        x = keras.layers.Flatten(name="flatten")(x)
        return f.dense(x, NUM_CLASSES, "logits", activate=False)
    conv_index = 0
    for stage, filters in enumerate([(32, 64), (128, 128), (256, 256)], start=1):
        for width in filters:
            conv_index += 1
            x = f.conv(x, width, 3, f"conv{conv_index}")
        x = keras.layers.MaxPooling2D(2, name=f"pool{stage}")(x)
        x = BatchNormalization(name=f"bn{stage}", **_BN)(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = f.dense(x, 1024, "dense1")
    x = f.dense(x, 512, "dense2")
    return f.dense(x, NUM_CLASSES, "logits", activate=False)


def _bottleneck(f, x, planes, strides, name):
    """kuangliu/pytorch-cifar's Bottleneck as the paper changed it: a bias on
    every conv, the model's activation instead of ReLU, no BN after conv1."""
    out = f.conv(x, planes, 1, f"{name}_conv1")
    out = f.conv(out, planes, 3, f"{name}_conv2", strides=strides, activate=False)
    out = BatchNormalization(name=f"{name}_bn2", **_BN)(out)
    out = f.act(out, f"{name}_act2")
    out = f.conv(out, 4 * planes, 1, f"{name}_conv3", activate=False)
    out = BatchNormalization(name=f"{name}_bn3", **_BN)(out)
    shortcut = x
    if strides != 1 or x.shape[-1] != 4 * planes:
        shortcut = f.conv(x, 4 * planes, 1, f"{name}_shortcut_conv", strides=strides,
                          activate=False)
        shortcut = BatchNormalization(name=f"{name}_shortcut_bn", **_BN)(shortcut)
    out = keras.layers.Add(name=f"{name}_add")([out, shortcut])
    return f.act(out, f"{name}_out")


def _resnet50(f, x, dataset):
    x = f.conv(x, 64, 3, "stem_conv", activate=False)
    x = BatchNormalization(name="stem_bn", **_BN)(x)
    x = f.act(x, "stem_act")
    for stage, (planes, blocks, strides) in enumerate(
        [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], start=1
    ):
        for block in range(blocks):
            x = _bottleneck(f, x, planes, strides if block == 0 else 1,
                            f"stage{stage}_block{block + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    return f.dense(x, NUM_CLASSES, "logits", activate=False)


# name -> (builder, datasets it is defined for)
MODELS = {
    "logreg": (_logreg, ("mnist", "cifar10")),
    "fnn": (_fnn, ("mnist", "cifar10")),
    "cnn": (_cnn, ("mnist", "cifar10")),
    "resnet50": (_resnet50, ("cifar10",)),
}

# What the paper's public code actually zero-initialised in ResNet-50: its loop
# tested the container instead of each sub-layer, so only these two were reached.
PAPER_RESNET_INITIALIZED_LAYERS = ("stem_conv", "logits")


def check_choice(kind, value, valid):
    if value not in valid:
        raise ValueError(f"unknown {kind} {value!r}; valid: {', '.join(valid)}")


def build_model(dataset, model, init="lecun", bias_scale=1.0, activation="elu", seed=0,
                initialized_layers=None):
    """Builds one of the paper's models, uncompiled, with logits as output.

    Args:
        dataset: "mnist" or "cifar10"; fixes the input shape and the widths.
        model: a name in `MODELS`.
        init: a scheme name in `kzero.initializers.SCHEMES`.
        bias_scale: multiplies the random biases of the `zero_*` schemes.
        activation: a name in `ACTIVATIONS`, applied after every conv and
            dense layer except the last.
        seed: makes the initial weights reproducible.
        initialized_layers: if given, only the layers with these names get
            `init`; the rest get the reference (`lecun`) init. `None` means
            every layer.
    """
    check_choice("dataset", dataset, INPUT_SHAPES)
    check_choice("model", model, MODELS)
    check_choice("activation", activation, ACTIVATIONS)
    builder, datasets = MODELS[model]
    if dataset not in datasets:
        raise ValueError(
            f"model {model!r} is not defined for dataset {dataset!r}; "
            f"it is for: {', '.join(datasets)}"
        )
    factory = _LayerFactory(init, bias_scale, activation, seed, initialized_layers)
    inputs = keras.Input(INPUT_SHAPES[dataset], name="images")
    outputs = builder(factory, inputs, dataset)
    return keras.Model(inputs, outputs, name=f"{dataset}_{model}")
