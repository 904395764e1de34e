"""The paper's architectures (Tables 1 and 2), built with a named init scheme.

Each model is a `ModelSpec` in `MODELS`: a builder that takes the input and
the number of classes and creates its conv and dense layers through a
`LayerFactory`, plus what the model needs of its input pipeline (the ResNet's
normalisation and augmentation). Every conv and dense layer, the ResNet's
shortcut convs included, takes its kernel and bias initializers from the
scheme, so an experiment changes only the scheme's name. Layer names are
stable because they become TensorBoard tags and `gradients.csv` keys.

The paper has two sizes of each model, one for MNIST and one for CIFAR-10:
grayscale inputs get the MNIST one, colour inputs the CIFAR-10 one
(`paper_variant`), whatever the dataset is called.
"""

import dataclasses
from typing import Callable, Optional

import keras

from kzero.initializers import (FixupNormal, get_scheme, layer_rng,
                                move_biases_to_normalizations, zero_branch_gammas)
from kzero.layers import PadChannels, ScalarBias, ScalarScale, StableBatchNormalization
from kzero.registry import Registry

__all__ = ["ACTIVATIONS", "INIT_SCOPES", "MODELS", "LayerFactory", "ModelSpec", "build_model",
           "paper_variant", "register_model"]

ACTIVATIONS = Registry("activation")

# PyTorch's default (the paper's code).
BN_EPSILON = 1e-5
for _name in ["elu", "relu", "leaky_relu", "selu", "sigmoid", "tanh"]:
    ACTIVATIONS.register(_name, getattr(keras.activations, _name))


class LayerFactory:
    """Creates conv and dense layers with the scheme's initializers: what a
    model builder gets to make its weighted layers with.

    Each layer's kernel and bias seeds come from (the run's seed, the layer's
    name), and the initializers draw with NumPy, so a model is a pure function
    of (architecture, scheme, bias_scale, seed), the same under every backend,
    and adding a layer leaves the other layers' initial weights as they were.

    Args:
        scheme: a scheme name in `kzero.initializers.SCHEMES`, or a `Scheme`.
        bias_scale: multiplies the random biases of the `zero_*` schemes.
        activation: a name in `ACTIVATIONS`, for `dense`, `conv` and `act`.
        seed: the model's seed.
        initialized_layers: if given, only the layers of these names get
            `scheme`; the others get the reference (`lecun`) init.
        bn_statistics: what `batch_norm` layers normalise test batches with:
            "moving" or "batch" (see `kzero.layers.StableBatchNormalization`).
        bn_epsilon: what `batch_norm` layers add to the variance.
        bn_exact_mean: `batch_norm` layers centre a constant channel exactly
            (`kzero.layers.StableBatchNormalization`'s `exact_mean`).
    """

    def __init__(self, scheme, bias_scale, activation, seed, initialized_layers=None,
                 bn_statistics="moving", bn_epsilon=BN_EPSILON, bn_exact_mean=False):
        self.bn_statistics = bn_statistics
        self.bn_epsilon = bn_epsilon
        self.bn_exact_mean = bn_exact_mean
        self.scheme = get_scheme(scheme)
        self.bias_scale = bias_scale
        self.activation = ACTIVATIONS.get(activation)
        self.seed = seed
        self.default_scheme = get_scheme("lecun")
        self.initialized_layers = initialized_layers

    def _initializers(self, name, fan_in):
        scheme = self.scheme
        if self.initialized_layers is not None and name not in self.initialized_layers:
            scheme = self.default_scheme
        kernel_init, bias_init = scheme.initializers(fan_in, self.bias_scale,
                                                     layer_rng(self.seed, name))
        return dict(kernel_initializer=kernel_init, bias_initializer=bias_init)

    def _layer_initializers(self, name, fan_in, use_bias, kernel_initializer):
        if kernel_initializer is None:
            initializers = self._initializers(name, fan_in)
        else:
            initializers = dict(kernel_initializer=kernel_initializer,
                                bias_initializer=keras.initializers.Zeros())
        if not use_bias:
            initializers.pop("bias_initializer")
        return dict(use_bias=use_bias, **initializers)

    def layer_seed(self, name):
        """A seed for an initializer that a builder picks itself for layer
        `name` (as Fixup's picks its branch kernels), drawn as the scheme's are."""
        return int(layer_rng(self.seed, ("architecture", name)).integers(0, 2**31 - 1))

    def dense(self, x, units, name, activate=True, use_bias=True, kernel_initializer=None):
        """A dense layer; the scheme gives its kernel and bias, unless the
        architecture's own rule gives the kernel (`kernel_initializer`; its
        bias then starts at 0)."""
        return keras.layers.Dense(
            units,
            activation=self.activation if activate else None,
            name=name,
            **self._layer_initializers(name, x.shape[-1], use_bias, kernel_initializer),
        )(x)

    def conv(self, x, filters, size, name, strides=1, activate=True, use_bias=True,
             kernel_initializer=None):
        """A conv layer, initialised as `dense` says."""
        padding = "same"
        if strides > 1 and size > 1:
            # PyTorch's padding=size//2 on every side, as in the paper's code:
            # Keras' "same" pads an even input only at the bottom and right
            # under stride 2, which shifts the sampled pixels by one against
            # the stride-2 1x1 shortcut that the output is added to.
            x = keras.layers.ZeroPadding2D((size - 1) // 2, name=f"{name}_pad")(x)
            padding = "valid"
        return keras.layers.Conv2D(
            filters,
            size,
            strides=strides,
            padding=padding,
            activation=self.activation if activate else None,
            name=name,
            **self._layer_initializers(name, x.shape[-1] * size * size, use_bias,
                                       kernel_initializer),
        )(x)

    def batch_norm(self, x, name):
        # PyTorch's momentum (the paper's code): its 0.1 is 0.9 here.
        return StableBatchNormalization(momentum=0.9, epsilon=self.bn_epsilon,
                                        test_statistics=self.bn_statistics,
                                        exact_mean=self.bn_exact_mean, name=name)(x)

    def act(self, x, name):
        return keras.layers.Activation(self.activation, name=name)(x)


def paper_variant(input_shape):
    """Which of the paper's two sizes of a model fits `input_shape`: "mnist"
    for grayscale images, "cifar10" for colour ones."""
    return "mnist" if input_shape[-1] == 1 else "cifar10"


def _logreg(f, x, num_classes):
    x = keras.layers.Flatten(name="flatten")(x)
    return f.dense(x, num_classes, "logits", activate=False)


def _fnn(f, x, num_classes):
    hidden = {"mnist": [500], "cifar10": [512, 256, 128]}[paper_variant(x.shape)]
    x = keras.layers.Flatten(name="flatten")(x)
    for i, units in enumerate(hidden, start=1):
        x = f.dense(x, units, f"dense{i}")
    return f.dense(x, num_classes, "logits", activate=False)


def _cnn(f, x, num_classes):
    if paper_variant(x.shape) == "mnist":
        x = f.conv(x, 16, 5, "conv1")
        x = f.conv(x, 32, 5, "conv2")
        x = keras.layers.Flatten(name="flatten")(x)
        return f.dense(x, num_classes, "logits", activate=False)
    conv_index = 0
    for stage, filters in enumerate([(32, 64), (128, 128), (256, 256)], start=1):
        for width in filters:
            conv_index += 1
            x = f.conv(x, width, 3, f"conv{conv_index}")
        x = keras.layers.MaxPooling2D(2, name=f"pool{stage}")(x)
        x = f.batch_norm(x, f"bn{stage}")
    x = keras.layers.Flatten(name="flatten")(x)
    x = f.dense(x, 1024, "dense1")
    x = f.dense(x, 512, "dense2")
    return f.dense(x, num_classes, "logits", activate=False)


def _bottleneck(f, x, planes, strides, name):
    """kuangliu/pytorch-cifar's Bottleneck as the paper changed it: a bias on
    every conv, the model's activation instead of ReLU, no BN after conv1."""
    out = f.conv(x, planes, 1, f"{name}_conv1")
    out = f.conv(out, planes, 3, f"{name}_conv2", strides=strides, activate=False)
    out = f.batch_norm(out, f"{name}_bn2")
    out = f.act(out, f"{name}_act2")
    out = f.conv(out, 4 * planes, 1, f"{name}_conv3", activate=False)
    out = f.batch_norm(out, f"{name}_bn3")
    shortcut = x
    if strides != 1 or x.shape[-1] != 4 * planes:
        shortcut = f.conv(x, 4 * planes, 1, f"{name}_shortcut_conv", strides=strides,
                          activate=False)
        shortcut = f.batch_norm(shortcut, f"{name}_shortcut_bn")
    out = keras.layers.Add(name=f"{name}_add")([out, shortcut])
    return f.act(out, f"{name}_out")


# ResNet-50's stages: (planes, bottleneck blocks, stride of the first).
RESNET50_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))


def _resnet50_stages(f, x, block):
    for stage, (planes, blocks, strides) in enumerate(RESNET50_STAGES, start=1):
        for index in range(blocks):
            x = block(f, x, planes, strides if index == 0 else 1,
                      f"stage{stage}_block{index + 1}")
    return x


def _resnet50(f, x, num_classes):
    x = f.conv(x, 64, 3, "stem_conv", activate=False)
    x = f.batch_norm(x, "stem_bn")
    x = f.act(x, "stem_act")
    x = _resnet50_stages(f, x, _bottleneck)
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    return f.dense(x, num_classes, "logits", activate=False)


def _fixup_bottleneck(f, x, planes, strides, name):
    """hongyi-zhang/Fixup's `FixupBottleneck` (imagenet/models/
    fixup_resnet_imagenet.py), layer for layer: bias-free convs, no batch norm,
    a scalar bias before each conv and activation and after the multiplier,
    the stride on the 3x3 conv, and a bias-free 1x1 conv shortcut of
    `x + bias1a` where the shape changes. Its rule: conv1 and conv2
    `FixupNormal` with m = 3 (L^(-1/4)), conv3 zero, the shortcut He's normal
    over the fan-out."""
    num_branches = sum(blocks for _, blocks, _ in RESNET50_STAGES)

    def branch_normal(layer):
        return FixupNormal(num_branches, branch_layers=3, seed=f.layer_seed(layer))

    shifted = ScalarBias(name=f"{name}_bias1a")(x)
    out = f.conv(shifted, planes, 1, f"{name}_conv1", activate=False, use_bias=False,
                 kernel_initializer=branch_normal(f"{name}_conv1"))
    out = ScalarBias(name=f"{name}_bias1b")(out)
    out = f.act(out, f"{name}_act1")
    out = ScalarBias(name=f"{name}_bias2a")(out)
    out = f.conv(out, planes, 3, f"{name}_conv2", strides=strides, activate=False,
                 use_bias=False, kernel_initializer=branch_normal(f"{name}_conv2"))
    out = ScalarBias(name=f"{name}_bias2b")(out)
    out = f.act(out, f"{name}_act2")
    out = ScalarBias(name=f"{name}_bias3a")(out)
    out = f.conv(out, 4 * planes, 1, f"{name}_conv3", activate=False, use_bias=False,
                 kernel_initializer=keras.initializers.Zeros())
    out = ScalarScale(1.0, name=f"{name}_scale")(out)
    out = ScalarBias(name=f"{name}_bias3b")(out)
    shortcut = x
    if strides != 1 or x.shape[-1] != 4 * planes:
        # One branch of one layer: He's normal over the fan-out, unscaled.
        shortcut = f.conv(shifted, 4 * planes, 1, f"{name}_downsample", strides=strides,
                          activate=False, use_bias=False, kernel_initializer=FixupNormal(
                              1, seed=f.layer_seed(f"{name}_downsample")))
    out = keras.layers.Add(name=f"{name}_add")([out, shortcut])
    return f.act(out, f"{name}_out")


def _resnet50_fixup(f, x, num_classes):
    """Fixup's ResNet-50 (`fixup_resnet50`) on CIFAR-10's stem, as kzero's
    `resnet50` has it (a 3x3 conv, no max pool, where ImageNet's is a 7x7
    stride-2 conv and a max pool): a bias-free stem conv and a scalar bias,
    the blocks of `_fixup_bottleneck`, a scalar bias before the classifier,
    and the classifier zero. The scheme gives only the stem's kernel."""
    return _fixup_network(f, x, num_classes, 64, _resnet50_stages, _fixup_bottleneck)


def _fixup_network(f, x, num_classes, stem_filters, stages, block):
    """Fixup's network around its blocks: a bias-free stem conv and a scalar
    bias, `stages` of `block`, a scalar bias before the classifier, and the
    classifier zero."""
    x = f.conv(x, stem_filters, 3, "stem_conv", activate=False, use_bias=False)
    x = ScalarBias(name="stem_bias")(x)
    x = f.act(x, "stem_act")
    x = stages(f, x, block)
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    x = ScalarBias(name="avgpool_bias")(x)
    return f.dense(x, num_classes, "logits", activate=False,
                   kernel_initializer=keras.initializers.Zeros())


def _skipinit_bottleneck(f, x, planes, strides, name):
    """SkipInit / ReZero on `_bottleneck`: its batch norms gone, its branch
    times a learnable alpha that starts at 0."""
    out = f.conv(x, planes, 1, f"{name}_conv1")
    out = f.conv(out, planes, 3, f"{name}_conv2", strides=strides)
    out = f.conv(out, 4 * planes, 1, f"{name}_conv3", activate=False)
    return _alpha_residual(f, x, out, strides, name)


def _alpha_residual(f, x, branch, strides, name):
    """SkipInit's end of a block: the branch times alpha (0 at first), plus
    the shortcut (a 1x1 conv where the shape changes), activated."""
    branch = ScalarScale(0.0, name=f"{name}_alpha")(branch)
    shortcut = x
    if strides != 1 or x.shape[-1] != branch.shape[-1]:
        shortcut = f.conv(x, branch.shape[-1], 1, f"{name}_shortcut_conv", strides=strides,
                          activate=False)
    out = keras.layers.Add(name=f"{name}_add")([branch, shortcut])
    return f.act(out, f"{name}_out")


def _resnet50_skipinit(f, x, num_classes):
    """ResNet-50 without batch norm, each branch behind SkipInit's alpha
    (`_skipinit_bottleneck`); the scheme gives every conv and the classifier."""
    return _skipinit_network(f, x, num_classes, 64, _resnet50_stages, _skipinit_bottleneck)


def _skipinit_network(f, x, num_classes, stem_filters, stages, block):
    """A stem conv without batch norm, `stages` of `block`, the classifier."""
    x = f.conv(x, stem_filters, 3, "stem_conv", activate=False)
    x = f.act(x, "stem_act")
    x = stages(f, x, block)
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    return f.dense(x, num_classes, "logits", activate=False)


def _basic_block(f, x, planes, strides, name):
    """kuangliu/pytorch-cifar's BasicBlock with the paper's changes to the
    bottleneck carried over: a bias on every conv, the model's activation
    instead of ReLU, and no batch norm after conv1."""
    out = f.conv(x, planes, 3, f"{name}_conv1", strides=strides)
    out = f.conv(out, planes, 3, f"{name}_conv2", activate=False)
    out = f.batch_norm(out, f"{name}_bn2")
    shortcut = x
    if strides != 1 or x.shape[-1] != planes:
        shortcut = f.conv(x, planes, 1, f"{name}_shortcut_conv", strides=strides,
                          activate=False)
        shortcut = f.batch_norm(shortcut, f"{name}_shortcut_bn")
    out = keras.layers.Add(name=f"{name}_add")([out, shortcut])
    return f.act(out, f"{name}_out")


# He et al.'s CIFAR ResNet-20: 3 stages of 3 blocks, (channels, first stride).
RESNET20_STAGES = ((16, 1), (32, 2), (64, 2))
RESNET20_BLOCKS = 3


def _resnet20_stages(f, x, block):
    for stage, (planes, strides) in enumerate(RESNET20_STAGES, start=1):
        for index in range(RESNET20_BLOCKS):
            x = block(f, x, planes, strides if index == 0 else 1,
                      f"stage{stage}_block{index + 1}")
    return x


def _resnet20(f, x, num_classes):
    """He et al.'s CIFAR ResNet-20 (3 stages of 3 basic blocks, 16/32/64
    channels) with the layout of the ResNet-50 here: a stem conv + batch norm,
    the blocks of `_basic_block`, 1x1 conv shortcuts where the shape changes."""
    x = f.conv(x, 16, 3, "stem_conv", activate=False)
    x = f.batch_norm(x, "stem_bn")
    x = f.act(x, "stem_act")
    x = _resnet20_stages(f, x, _basic_block)
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    return f.dense(x, num_classes, "logits", activate=False)


def _fixup_block(f, x, planes, strides, name):
    """hongyi-zhang/Fixup's `FixupBasicBlock` (cifar/models/fixup_resnet_cifar.py),
    layer for layer: bias-free convs, no batch norm, a scalar bias before each
    conv and activation and after the multiplier, and the parameter-free
    shortcut (stride-2 subsampling, zero channels appended) where the shape
    changes. Its rule for the branch: conv1 `FixupNormal`, conv2 zero. The
    model's activation stands in for ReLU (the paper's change)."""
    num_branches = len(RESNET20_STAGES) * RESNET20_BLOCKS
    shifted = ScalarBias(name=f"{name}_bias1a")(x)
    out = f.conv(shifted, planes, 3, f"{name}_conv1", strides=strides, activate=False,
                 use_bias=False,
                 kernel_initializer=FixupNormal(num_branches, seed=f.layer_seed(f"{name}_conv1")))
    out = ScalarBias(name=f"{name}_bias1b")(out)
    out = f.act(out, f"{name}_act1")
    out = ScalarBias(name=f"{name}_bias2a")(out)
    out = f.conv(out, planes, 3, f"{name}_conv2", activate=False, use_bias=False,
                 kernel_initializer=keras.initializers.Zeros())
    out = ScalarScale(1.0, name=f"{name}_scale")(out)
    out = ScalarBias(name=f"{name}_bias2b")(out)
    shortcut = x
    if strides != 1 or x.shape[-1] != planes:
        shortcut = keras.layers.AveragePooling2D(1, strides, name=f"{name}_shortcut_pool")(shifted)
        shortcut = PadChannels(planes, name=f"{name}_shortcut_pad")(shortcut)
    out = keras.layers.Add(name=f"{name}_add")([out, shortcut])
    return f.act(out, f"{name}_out")


def _resnet20_fixup(f, x, num_classes):
    """Fixup's CIFAR ResNet-20 (`fixup_resnet20`): a bias-free stem conv and
    a scalar bias, the blocks of `_fixup_block`, a scalar bias before the
    classifier, and the classifier zero. The scheme gives only the stem's
    kernel (the reference leaves it at PyTorch's default: `lecun`)."""
    return _fixup_network(f, x, num_classes, 16, _resnet20_stages, _fixup_block)


def _skipinit_block(f, x, planes, strides, name):
    """SkipInit (De & Smith 2020) / ReZero (Bachlechner et al. 2020): the
    block of `_basic_block` without its batch norms, its branch multiplied by
    a learnable scalar alpha that starts at 0, so that each block starts as
    its shortcut."""
    out = f.conv(x, planes, 3, f"{name}_conv1", strides=strides)
    out = f.conv(out, planes, 3, f"{name}_conv2", activate=False)
    return _alpha_residual(f, x, out, strides, name)


def _resnet20_skipinit(f, x, num_classes):
    """ResNet-20 without batch norm, each branch behind SkipInit's alpha
    (`_skipinit_block`); the scheme gives every conv and the classifier."""
    return _skipinit_network(f, x, num_classes, 16, _resnet20_stages, _skipinit_block)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model kzero can build by name.

    Args:
        name: registry name (`--model`).
        build: `build(layers, inputs, num_classes)` returning the logits;
            `layers` is the `LayerFactory` that makes its conv and dense
            layers with the run's init scheme and activation.
        description: one line for the help text.
        normalize: the model wants per-channel normalised inputs.
        augment: the model trains on pad-4 random crops and horizontal flips.
        channels: the image channels it is defined for (None: any).
        options: what else `build` takes as keyword arguments, with their
            defaults; the `RunConfig` fields `depth` and `width` (`--depth`,
            `--width`) set those of these names.
        stages: the layers whose outputs the init check and the stage
            recorder measure the input dependence of (`kzero.initcheck`);
            those a built variant lacks are left out, and where none is
            left, every batch norm and hidden conv or dense layer is taken.
    """

    name: str
    build: Callable
    description: str = ""
    normalize: bool = False
    augment: bool = False
    channels: Optional[int] = None
    options: dict = dataclasses.field(default_factory=dict)
    stages: tuple = ()

    def unsupported(self, input_shape):
        """Why this model cannot take `input_shape`, or None if it can."""
        if self.channels is not None and input_shape[-1] != self.channels:
            return f"it needs {self.channels}-channel images"
        return None


MODELS = Registry("model")


def register_model(spec, replace=False):
    """Adds a `ModelSpec` to `MODELS` (for `--model` and `build_model`);
    returns it."""
    return MODELS.register(spec.name, spec, replace=replace)


register_model(ModelSpec("logreg", _logreg, "logistic regression, the paper's baseline"))
register_model(ModelSpec("fnn", _fnn, "the paper's FNN: 500 units (MNIST), or 512-256-128"))


def _mlp(f, x, num_classes, depth, width):
    x = keras.layers.Flatten(name="flatten")(x)
    for i in range(1, depth + 1):
        x = f.dense(x, width, f"dense{i}")
    return f.dense(x, num_classes, "logits", activate=False)


register_model(ModelSpec("cnn", _cnn, "the paper's CNN (Tables 1 and 2)",
                         stages=("bn1", "bn2", "bn3", "dense1", "dense2")))
register_model(ModelSpec("resnet50", _resnet50, "bias-enabled ELU ResNet-50 (CIFAR-10)",
                         normalize=True, augment=True, channels=3,
                         stages=("stem_bn", "stem_act", "stage1_block3_out", "stage2_block4_out",
                                 "stage3_block6_out", "stage4_block3_out")))
register_model(ModelSpec("resnet20", _resnet20, "bias-enabled ELU ResNet-20 (CIFAR-10), "
                         "the residual net a CPU trains", normalize=True, augment=True, channels=3,
                         stages=("stem_bn", "stem_act", "stage1_block3_out", "stage2_block3_out",
                                 "stage3_block3_out")))
_RESNET20_STAGE_OUTPUTS = ("stem_act", "stage1_block3_out", "stage2_block3_out",
                          "stage3_block3_out")
register_model(ModelSpec("resnet20_fixup", _resnet20_fixup, "ResNet-20 as Fixup builds it "
                         "(Zhang et al. 2019): no batch norm, scalar biases and multipliers, "
                         "branch convs by Fixup's rule; the scheme sets the stem",
                         normalize=True, augment=True, channels=3,
                         stages=_RESNET20_STAGE_OUTPUTS))
register_model(ModelSpec("resnet20_skipinit", _resnet20_skipinit, "ResNet-20 without batch "
                         "norm, each residual branch times a learnable alpha that starts at 0 "
                         "(SkipInit / ReZero)", normalize=True, augment=True, channels=3,
                         stages=_RESNET20_STAGE_OUTPUTS))
_RESNET50_STAGE_OUTPUTS = ("stem_act", "stage1_block3_out", "stage2_block4_out",
                           "stage3_block6_out", "stage4_block3_out")
register_model(ModelSpec("resnet50_fixup", _resnet50_fixup, "ResNet-50 as Fixup builds it "
                         "(Zhang et al. 2019) on the CIFAR stem: no batch norm, scalar biases "
                         "and multipliers, branch convs by Fixup's rule; the scheme sets the stem",
                         normalize=True, augment=True, channels=3,
                         stages=_RESNET50_STAGE_OUTPUTS))
register_model(ModelSpec("resnet50_skipinit", _resnet50_skipinit, "ResNet-50 without batch "
                         "norm, each residual branch times a learnable alpha that starts at 0 "
                         "(SkipInit / ReZero)", normalize=True, augment=True, channels=3,
                         stages=_RESNET50_STAGE_OUTPUTS))
register_model(ModelSpec("mlp", _mlp, "`depth` hidden dense layers of `width` units (--depth, "
                         "--width), for studies beyond the paper",
                         options={"depth": 2, "width": 256}))

# What the paper's public code actually zero-initialised in ResNet-50: its loop
# tested the container instead of each sub-layer, so only these two were reached.
PAPER_RESNET_INITIALIZED_LAYERS = ("stem_conv", "logits")

# Which layers an init scheme reaches. "paper_code" reproduces the paper's public
# ResNet-50 code; every other layer keeps the reference init.
INIT_SCOPES = {"all": None, "paper_code": PAPER_RESNET_INITIALIZED_LAYERS}


def build_model(dataset=None, model="fnn", scheme="lecun", bias_scale=1.0, activation="elu",
                seed=0, initialized_layers=None, *, input_shape=None, num_classes=None,
                bn_statistics="moving", bn_epsilon=BN_EPSILON, bn_exact_mean=False, **options):
    """Builds a registered model, uncompiled, with logits as output.

    Args:
        dataset: a dataset name (see `kzero.datasets.get_dataset`) or
            `DatasetSpec`: fixes the input shape and the number of classes.
            Or leave it out and give `input_shape` and `num_classes`.
        model: a name in `MODELS`.
        scheme: a scheme name in `kzero.initializers.SCHEMES`, or a `Scheme`
            (`init=`, its name before kzero 0.7, still works).
        bias_scale: multiplies the random biases of the `zero_*` schemes.
        activation: a name in `ACTIVATIONS`, applied after every conv and
            dense layer except the last.
        seed: makes the initial weights reproducible.
        initialized_layers: if given, only the layers with these names get
            `scheme`; the rest get the reference (`lecun`) init. `None` means
            every layer.
        input_shape, num_classes: the input (with a channel axis) and the
            number of classes, where no dataset is given.
        bn_statistics: "moving" (Keras' rule) or "batch": what the batch
            norm layers normalise test batches with.
        bn_epsilon: what the batch norm layers add to the variance.
        bn_exact_mean: the batch norm layers centre a constant channel exactly.
        **options: the model's own (`ModelSpec.options`, e.g. `depth` and
            `width` of "mlp"); those left out take their defaults.
    """
    from kzero.datasets import get_dataset

    if "init" in options:
        import warnings

        warnings.warn("build_model's init= is now scheme=", DeprecationWarning, stacklevel=2)
        scheme = options.pop("init")
    name = "custom"
    if dataset is not None:
        spec = get_dataset(dataset) if isinstance(dataset, str) else dataset
        name, input_shape, num_classes = spec.name, spec.input_shape, spec.num_classes
    elif input_shape is None or num_classes is None:
        raise ValueError("build_model needs a dataset, or input_shape and num_classes")
    model_spec = MODELS.get(model)
    reason = model_spec.unsupported(input_shape)
    if reason:
        raise ValueError(f"model {model!r} is not defined for dataset {name!r}: {reason}")
    unknown = sorted(set(options) - set(model_spec.options))
    if unknown:
        raise ValueError(f"model {model!r} takes no {', '.join(unknown)}")
    options = {**model_spec.options,
               **{name: value for name, value in options.items() if value is not None}}
    factory = LayerFactory(scheme, bias_scale, activation, seed, initialized_layers,
                           bn_statistics, bn_epsilon, bn_exact_mean)
    inputs = keras.Input(tuple(input_shape), name="images")
    outputs = model_spec.build(factory, inputs, num_classes, **options)
    built = keras.Model(inputs, outputs, name=f"{name}_{model}")
    if factory.scheme.bias_to_normalization:
        move_biases_to_normalizations(built, initialized_layers)
    if factory.scheme.zero_branch_gamma and initialized_layers is None:
        zero_branch_gammas(built)
    return built
