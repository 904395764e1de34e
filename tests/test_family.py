"""The zero-initialisation family beside the paper's scheme: Fixup's ResNet-20
against hongyi-zhang/Fixup's own CIFAR model (run here on torch CPU), and
SkipInit's alpha, each in kzero's builders and in a user's own block."""

import math

import keras
import numpy as np
import pytest

from kzero.initializers import FixupNormal
from kzero.layers import PadChannels, ScalarBias, ScalarScale
from kzero.models import build_model

CIFAR = dict(input_shape=(32, 32, 3), num_classes=10)


def _numpy(variable):
    return keras.ops.convert_to_numpy(variable)


def _reference_fixup_resnet20():
    torch = pytest.importorskip("torch")
    from reference.fixup_resnet_cifar import fixup_resnet20

    torch.manual_seed(0)
    return torch, fixup_resnet20()


def _kzero_name(reference_name):
    """hongyi-zhang/Fixup's parameter name -> (kzero layer, weight)."""
    parts = reference_name.split(".")
    if parts[0].startswith("layer"):
        block = f"stage{parts[0][len('layer'):]}_block{int(parts[1]) + 1}"
        if parts[2].startswith("conv") or parts[2] == "downsample":
            return f"{block}_{parts[2]}", "kernel"
        return f"{block}_{parts[2]}", "scale" if parts[2] == "scale" else "bias"
    return {"conv1.weight": ("stem_conv", "kernel"), "bias1": ("stem_bias", "bias"),
            "bias2": ("avgpool_bias", "bias"), "fc.weight": ("logits", "kernel"),
            "fc.bias": ("logits", "bias")}[reference_name]


def _to_keras_layout(values):
    if values.ndim == 4:  # (out, in, kh, kw) -> (kh, kw, in, out)
        return values.transpose(2, 3, 1, 0)
    if values.ndim == 2:  # (out, in) -> (in, out)
        return values.T
    return values


def _kzero_weight(model, reference_name):
    layer, weight = _kzero_name(reference_name)
    return getattr(model.get_layer(layer), weight)


def test_fixup_resnet20_is_the_reference_model_layer_for_layer():
    """The same parameters, one for one, and with the reference's weights
    copied in, the same function of the input: the architecture is Fixup's."""
    torch, reference = _reference_fixup_resnet20()
    model = build_model(model="resnet20_fixup", scheme="lecun", activation="relu", seed=0, **CIFAR)
    named = dict(reference.named_parameters())
    assert len(named) == len(model.trainable_variables)
    assert sum(p.numel() for p in named.values()) == sum(
        int(np.prod(v.shape)) for v in model.trainable_variables)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in named.items():
            # Random values everywhere (the initial ones are mostly zeros and
            # ones), so that every parameter shows in the output.
            parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
            _kzero_weight(model, name).assign(_to_keras_layout(parameter.numpy()))
    images = np.random.default_rng(2).standard_normal((4, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(_numpy(model(images)), expected, rtol=1e-4, atol=1e-5)


def test_fixup_initial_weights_follow_the_reference_rule():
    """Every weight the reference sets by rule is the same here: the branch's
    second conv, the classifier and every scalar exactly; the branch's first
    conv drawn with the reference's standard deviation (the rule's value, and
    the spread of the draws, against the reference's own draws)."""
    _, reference = _reference_fixup_resnet20()
    model = build_model(model="resnet20_fixup", scheme="lecun", seed=0, **CIFAR)
    for name, parameter in reference.named_parameters():
        values = _to_keras_layout(parameter.detach().numpy())
        ours = _numpy(_kzero_weight(model, name))
        if name.endswith("conv1.weight") and name.startswith("layer"):
            layer = model.get_layer(_kzero_name(name)[0])
            # The reference's expression, on the reference's weight shape.
            shape = parameter.shape
            reference_std = (np.sqrt(2 / (shape[0] * np.prod(shape[2:])))
                             * reference.num_layers ** (-0.5))
            assert math.isclose(layer.kernel_initializer.stddev_for(ours.shape), reference_std,
                                rel_tol=1e-12)
            # About 2,300 or more draws each: the sample spreads agree within 8%
            # (over 3 standard errors of each).
            assert np.std(ours) == pytest.approx(np.std(values), rel=0.08)
            assert np.std(ours) == pytest.approx(reference_std, rel=0.06)
        elif name == "conv1.weight":  # the stem: PyTorch's default, the scheme's lecun
            bound = 1 / math.sqrt(np.prod(ours.shape[:-1]))
            assert np.abs(ours).max() <= bound and np.abs(values).max() <= bound
        else:
            np.testing.assert_array_equal(ours, values, err_msg=name)


def _reference_fixup_imagenet():
    torch = pytest.importorskip("torch")
    from reference import fixup_resnet_imagenet

    torch.manual_seed(0)
    return torch, fixup_resnet_imagenet


def test_fixup_bottleneck_is_the_references_block():
    """Fixup's bottleneck with a downsampling shortcut: the same parameters,
    and with the reference's weights copied in, the same function."""
    from kzero.models import LayerFactory, _fixup_bottleneck

    torch, reference = _reference_fixup_imagenet()
    block = reference.FixupBottleneck(256, 128, 2, reference.conv1x1(256, 512, 2))
    inputs = keras.Input((8, 8, 256))
    ours = keras.Model(inputs, _fixup_bottleneck(LayerFactory("lecun", 1.0, "relu", 0),
                                                 inputs, 128, 2, "b"))
    named = dict(block.named_parameters())
    assert len(named) == len(ours.trainable_variables) == 11  # 4 convs, 6 biases, the scale
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in named.items():
            parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
            layer = ours.get_layer(f"b_{name.split('.')[0]}")
            weight = layer.kernel if name.endswith("weight") else (
                layer.scale if name == "scale" else layer.bias)
            weight.assign(_to_keras_layout(parameter.numpy()))
    images = np.random.default_rng(2).standard_normal((2, 8, 8, 256)).astype(np.float32)
    with torch.no_grad():
        expected = block(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(_numpy(ours(images)), expected.transpose(0, 2, 3, 1),
                               rtol=1e-4, atol=1e-5)


def test_fixup_resnet50_has_the_references_parameters_and_initial_weights():
    """Every parameter of the reference's `fixup_resnet50` but its ImageNet
    stem, one for one and of the same shape, set by the same rule: conv3 of
    each branch, the classifier and every scalar exactly; conv1 and conv2
    drawn with the reference's standard deviation (L = 16 branches of m = 3:
    L^(-1/4)), the shortcut with He's over the fan-out."""
    _, reference = _reference_fixup_imagenet()
    reference = reference.fixup_resnet50(num_classes=10)
    model = build_model(model="resnet50_fixup", scheme="lecun", seed=0, **CIFAR)
    named = dict(reference.named_parameters())
    # 16 blocks of 3 convs, 6 scalar biases and a multiplier; 4 shortcuts; the stem
    # conv and its bias, the bias before the classifier, the classifier.
    assert len(named) == len(model.trainable_variables) == 16 * 10 + 4 + 5
    for name, parameter in named.items():
        values = _to_keras_layout(parameter.detach().numpy())
        ours = _numpy(_kzero_weight(model, name))
        if name == "conv1.weight":  # ImageNet's 7x7 stem; kzero's is CIFAR's 3x3
            assert (ours.shape, values.shape) == ((3, 3, 3, 64), (7, 7, 3, 64))
            continue
        assert ours.shape == values.shape, name
        shape = parameter.shape
        he = np.sqrt(2 / (shape[0] * np.prod(shape[2:])))
        if name.endswith(("conv1.weight", "conv2.weight", "downsample.weight")):
            factor = 1.0 if "downsample" in name else reference.num_layers ** (-0.25)
            layer = model.get_layer(_kzero_name(name)[0])
            assert math.isclose(layer.kernel_initializer.stddev_for(ours.shape), he * factor,
                                rel_tol=1e-12), name
            assert np.std(ours) == pytest.approx(np.std(values), rel=0.08), name
        else:
            np.testing.assert_array_equal(ours, values, err_msg=name)


def test_fixup_normal_is_a_keras_initializer_for_a_users_model():
    initializer = FixupNormal(num_branches=16, branch_layers=3, seed=4)
    restored = keras.initializers.deserialize(keras.initializers.serialize(initializer))
    assert restored.get_config() == initializer.get_config()
    values = _numpy(restored((3, 3, 64, 256), "float32"))
    np.testing.assert_array_equal(values, _numpy(initializer((3, 3, 64, 256), "float32")))
    # m = 3 layers per branch: L^(-1/4).
    assert np.std(values) == pytest.approx(math.sqrt(2 / (9 * 256)) * 16 ** -0.25, rel=0.02)
    with pytest.raises(ValueError, match="branch_layers >= 2"):
        FixupNormal(num_branches=4, branch_layers=1)


def _users_block(alpha):
    """A user's residual block with SkipInit's alpha at the end of its branch."""
    inputs = keras.Input((8, 8, 4))
    branch = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="branch_conv1")(
        inputs)
    branch = keras.layers.Conv2D(4, 3, padding="same", name="branch_conv2")(branch)
    branch = ScalarScale(alpha, name="alpha")(branch)
    outputs = keras.layers.Add()([inputs, branch])
    return keras.Model(inputs, outputs)


def test_skipinit_alpha_makes_each_block_start_as_its_shortcut():
    x = np.random.default_rng(3).standard_normal((2, 8, 8, 4)).astype(np.float32)
    np.testing.assert_array_equal(_numpy(_users_block(0.0)(x)), x)
    assert not np.allclose(_numpy(_users_block(0.5)(x)), x)
    # kzero's ResNets: each stride-1 block's output is the activation of its input.
    _check_blocks_start_as_shortcuts("resnet20_skipinit", 32, "stage1_block1", "stage1_block2", 9)
    # ResNet-50's bottlenecks, on a small image.
    _check_blocks_start_as_shortcuts("resnet50_skipinit", 8, "stage3_block2", "stage3_block3", 16)


def _check_blocks_start_as_shortcuts(model_name, size, first_block, second_block, branches):
    model = build_model(model=model_name, scheme="lecun", seed=0, input_shape=(size, size, 3),
                        num_classes=10)
    probe = keras.Model(model.input, [model.get_layer(f"{first_block}_out").output,
                                      model.get_layer(f"{second_block}_out").output])
    first, second = (_numpy(t) for t in probe(np.random.default_rng(4).standard_normal(
        (2, size, size, 3)).astype(np.float32)))
    np.testing.assert_allclose(second, _numpy(keras.activations.elu(first)), rtol=1e-6,
                               atol=1e-7)
    assert not [layer for layer in model.layers if "bn" in layer.name]
    alphas = [layer for layer in model.layers if isinstance(layer, ScalarScale)]
    assert len(alphas) == branches and all(_numpy(layer.scale)[0] == 0 for layer in alphas)


def test_alpha_and_the_scalar_biases_get_a_gradient_at_step_one():
    """At init the branch convs of a SkipInit block get no gradient (alpha is
    0), alpha does: what wakes the branch. Fixup's zero classifier gets one."""
    from kzero.gradients import gradient_function

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x = np.random.default_rng(5).standard_normal((8, 32, 32, 3)).astype(np.float32)
    y = np.arange(8) % 10
    model = build_model(model="resnet20_skipinit", scheme="lecun", seed=0, **CIFAR)
    gradients = dict(zip((v.path for v in model.trainable_variables),
                         gradient_function(model, loss)(x, y)))
    assert np.any(gradients["stage1_block1_alpha/scale"])
    assert not np.any(gradients["stage1_block1_conv2/kernel"])
    fixup = build_model(model="resnet20_fixup", scheme="lecun", seed=0, **CIFAR)
    gradients = dict(zip((v.path for v in fixup.trainable_variables),
                         gradient_function(fixup, loss)(x, y)))
    assert np.any(gradients["logits/kernel"])
    assert not np.any(gradients["stage3_block3_conv1/kernel"])  # behind the zero classifier


@pytest.mark.parametrize("layer", [ScalarBias(0.25, name="b"), ScalarScale(0.5, name="s"),
                                   PadChannels(6, name="p")])
def test_the_family_layers_save_and_load(tmp_path, layer):
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, layer(inputs))
    x = np.random.default_rng(6).standard_normal((2, 4, 4, 3)).astype(np.float32)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(_numpy(loaded(x)), _numpy(model(x)))
    if isinstance(layer, PadChannels):
        out = _numpy(model(x))
        np.testing.assert_array_equal(out[..., :3], x)
        assert not out[..., 3:].any()


def test_docs_fixup_block_of_a_users_own_starts_as_its_shortcut():
    """docs/library.md's Fixup block, as printed there, in a model of one's own."""
    import os
    import re

    import kzero
    from conftest import REPO

    text = open(os.path.join(REPO, "docs", "library.md")).read()
    snippet = re.search(r"## The zero-init family in your own model.*?```python\n(.*?)```", text,
                        re.S).group(1)
    x = keras.Input((8, 8, 64))
    scope = {"keras": keras, "kzero": kzero, "x": x}
    exec(snippet, scope)
    model = keras.Model(x, scope["out"])
    images = np.random.default_rng(7).standard_normal((2, 8, 8, 64)).astype(np.float32)
    np.testing.assert_array_equal(_numpy(model(images)), images)
    first = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert np.std(_numpy(first.kernel)) == pytest.approx(math.sqrt(2 / (9 * 64)) / math.sqrt(8),
                                                         rel=0.05)
