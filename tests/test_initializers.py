import math
import os

import keras
import numpy as np
import pytest

from kzero.initializers import (SCHEMES, FanInUniform, NumpyGlorotUniform, NumpyNormal,
                               NumpyUniform, get_scheme, small_normal_scheme)
from kzero.models import build_model

N = 1_000_000


def draw(initializer, shape=(N,)):
    return keras.ops.convert_to_numpy(initializer(shape, dtype="float32")).astype(np.float64)


def assert_uniform(values, low, high):
    """Mean and std of U[low, high) within 5 standard errors, and the range
    filled up to its edges but never beyond."""
    width = high - low
    assert abs(values.mean() - (low + high) / 2) < 5 * width / math.sqrt(12 * len(values))
    # The std of the sample std of a uniform is about width * 0.149 / sqrt(n).
    assert abs(values.std() - width / math.sqrt(12)) < 5 * 0.15 * width / math.sqrt(len(values))
    float32_slack = 1e-6 * width
    assert values.min() >= low - float32_slack and values.max() <= high + float32_slack
    assert values.min() < low + 1e-4 * width and values.max() > high - 1e-4 * width


def assert_normal(values, mean, std):
    assert abs(values.mean() - mean) < 5 * std / math.sqrt(len(values))
    assert abs(values.std() - std) < 5 * std / math.sqrt(2 * len(values))
    # Tails of a true normal: about 4.5 sigma is reached in 10^6 draws.
    assert np.abs(values - mean).max() > 4 * std


@pytest.mark.parametrize("fan_in", [1, 784, 3 * 3 * 64])
def test_fan_in_uniform_is_pytorch_default(fan_in):
    limit = 1 / math.sqrt(fan_in)
    assert_uniform(draw(FanInUniform(fan_in, seed=1)), -limit, limit)


def test_fan_in_uniform_rejects_bad_fan_in():
    with pytest.raises(ValueError, match="fan_in"):
        FanInUniform(0)


@pytest.mark.parametrize("shape,fan_in", [((784, 1000), 784), ((5, 5, 16, 2500), 400)])
def test_lecun_kernel_limit_is_one_over_sqrt_fan_in(shape, fan_in):
    kernel_init, bias_init = get_scheme("lecun").initializers(fan_in, rng=np.random.default_rng(0))
    limit = 1 / math.sqrt(fan_in)
    assert_uniform(draw(kernel_init, shape).ravel(), -limit, limit)
    assert_uniform(draw(bias_init), -limit, limit)


@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
def test_zero_normal_bias_scale(scale):
    kernel_init, bias_init = get_scheme("zero_normal").initializers(
        784, bias_scale=scale, rng=np.random.default_rng(0))
    assert not draw(kernel_init, (784, 500)).any()
    assert_normal(draw(bias_init), 0.0, scale)


@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
def test_zero_uniform_bias_scale(scale):
    kernel_init, bias_init = get_scheme("zero_uniform").initializers(
        784, bias_scale=scale, rng=np.random.default_rng(0))
    assert not draw(kernel_init, (784, 500)).any()
    assert_uniform(draw(bias_init), 0.0, scale)


def test_zero_and_keras_default():
    kernel, bias = get_scheme("zero").initializers(10, rng=np.random.default_rng(0))
    assert not draw(kernel, (10, 10)).any() and not draw(bias, (10,)).any()
    kernel, bias = get_scheme("keras_default").initializers(10, rng=np.random.default_rng(0))
    limit = math.sqrt(6 / (1000 + 1000))
    assert_uniform(draw(kernel, (1000, 1000)).ravel(), -limit, limit)
    assert not draw(bias, (10,)).any()


def test_he_draws_kernels_with_variance_two_over_fan_in():
    # A 3x3 conv of 32 channels: fan_in 288, the std of 288 x 64 draws within 2%.
    kernel, bias = get_scheme("he").initializers(288, rng=np.random.default_rng(0))
    values = draw(kernel, (3, 3, 32, 64))
    assert np.std(values) == pytest.approx(math.sqrt(2 / 288), rel=0.02)
    assert abs(np.mean(values)) < 0.01 and np.abs(values).max() > 3 * math.sqrt(2 / 288)
    assert not draw(bias, (64,)).any()


@pytest.mark.parametrize("name,kernel_std", [("small_normal_1e-4", 1e-4),
                                              ("small_normal_1e-2", 1e-2)])
def test_small_normal_kernels_and_unit_normal_biases(name, kernel_std):
    scheme = get_scheme(name)
    assert scheme.uses_bias_scale and small_normal_scheme(kernel_std).name == name
    kernel_init, bias_init = scheme.initializers(784, bias_scale=1.0,
                                                 rng=np.random.default_rng(0))
    assert_normal(draw(kernel_init, (1000, 1000)).ravel(), 0.0, kernel_std)
    assert_normal(draw(bias_init), 0.0, 1.0)


def test_seed_determinism():
    assert np.array_equal(draw(FanInUniform(10, seed=3), (100,)),
                          draw(FanInUniform(10, seed=3), (100,)))
    assert not np.array_equal(draw(FanInUniform(10, seed=3), (100,)),
                              draw(FanInUniform(10, seed=4), (100,)))
    pair = lambda seed: get_scheme("zero_normal").initializers(  # noqa: E731
        10, rng=np.random.default_rng(seed))
    assert np.array_equal(draw(pair(5)[1], (50,)), draw(pair(5)[1], (50,)))
    assert not np.array_equal(draw(pair(5)[1], (50,)), draw(pair(6)[1], (50,)))


def test_get_config_round_trip():
    original = FanInUniform(fan_in=300, seed=7)
    assert original.get_config() == {"fan_in": 300, "seed": 7}
    restored = keras.initializers.deserialize(keras.initializers.serialize(original))
    assert type(restored) is FanInUniform and restored.fan_in == 300
    assert np.array_equal(draw(original, (64,)), draw(restored, (64,)))


def test_unknown_scheme_lists_valid_names():
    with pytest.raises(ValueError) as error:
        get_scheme("xavier")
    for name in SCHEMES:
        assert name in str(error.value)


@pytest.mark.parametrize("init", ["lecun", "zero_normal", "zero_uniform"])
def test_model_saved_and_reloaded_with_identical_weights(tmp_path, init):
    model = build_model("mnist", "cnn", scheme=init, seed=11)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    for a, b in zip(model.weights, reloaded.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    config = reloaded.get_layer("conv1").get_config()["bias_initializer"]
    expected = {"lecun": FanInUniform, "zero_normal": NumpyNormal,
                "zero_uniform": NumpyUniform}[init]
    assert config["registered_name"] == f"kzero>{expected.__name__}"
    assert type(reloaded.get_layer("conv1").bias_initializer) is expected


# The NumPy-drawn initializers against the Keras ones they replace, on large
# draws: same mean, std and bounds (both sides checked against the theory).
@pytest.mark.parametrize("keras_init,numpy_init,check", [
    (keras.initializers.RandomNormal(0.0, 1.0, seed=1), NumpyNormal(0.0, 1.0, seed=1),
     lambda v: assert_normal(v, 0.0, 1.0)),
    (keras.initializers.RandomNormal(0.5, 100.0, seed=1), NumpyNormal(0.5, 100.0, seed=1),
     lambda v: assert_normal(v, 0.5, 100.0)),
    (keras.initializers.RandomUniform(0.0, 1.0, seed=1), NumpyUniform(0.0, 1.0, seed=1),
     lambda v: assert_uniform(v, 0.0, 1.0)),
    (keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform", seed=1),
     FanInUniform(1000, seed=1), lambda v: assert_uniform(v, -1000 ** -0.5, 1000 ** -0.5)),
    (keras.initializers.GlorotUniform(seed=1), NumpyGlorotUniform(seed=1),
     lambda v: assert_uniform(v, -(6 / 2000) ** 0.5, (6 / 2000) ** 0.5)),
])
def test_numpy_draws_have_the_keras_distribution(keras_init, numpy_init, check):
    ours, theirs = (draw(init, (1000, 1000)).ravel() for init in (numpy_init, keras_init))
    check(ours)
    check(theirs)
    assert abs(ours.mean() - theirs.mean()) < 7 * theirs.std() / math.sqrt(len(ours))
    assert abs(ours.std() / theirs.std() - 1) < 0.005


def test_numpy_draws_are_numpy_default_rng_bits():
    """The values are NumPy's, rounded to float32 by NumPy: what makes them
    the same under every backend (the cross-backend test is in test_models)."""
    expected = (0.5 + 2.0 * np.random.default_rng(9).standard_normal((3, 4))).astype(np.float32)
    np.testing.assert_array_equal(draw(NumpyNormal(0.5, 2.0, seed=9), (3, 4)), expected)
    expected = np.random.default_rng(9).uniform(-0.1, 0.1, (7,)).astype(np.float32)
    np.testing.assert_array_equal(draw(FanInUniform(100, seed=9), (7,)), expected)


def test_numpy_initializers_keep_the_keras_config():
    assert NumpyNormal(0.0, 2.0, seed=4).get_config() == keras.initializers.RandomNormal(
        0.0, 2.0, seed=4).get_config()
    restored = keras.initializers.deserialize(keras.initializers.serialize(NumpyUniform(0, 3, 5)))
    assert type(restored) is NumpyUniform and restored.maxval == 3
    with pytest.raises(ValueError, match="NumpyNormal draws with NumPy and needs an integer"):
        NumpyNormal(seed=keras.random.SeedGenerator(1))((3,))


# ZerO's reference rule, as in jiaweizzhao/ZerO-initialization's example_mnist.ipynb
# (Algorithm 1 of the paper), in PyTorch's (out, in) layout.
def reference_zero_init_on_matrix(matrix_tensor):
    import torch
    from scipy.linalg import hadamard

    m = matrix_tensor.size(0)
    n = matrix_tensor.size(1)
    if m <= n:
        init_matrix = torch.nn.init.eye_(torch.empty(m, n))
    elif m > n:
        clog_m = math.ceil(math.log2(m))
        p = 2**(clog_m)
        init_matrix = torch.nn.init.eye_(torch.empty(m, p)) @ (
            torch.tensor(hadamard(p)).float() / (2**(clog_m / 2))) @ torch.nn.init.eye_(
                torch.empty(p, n))
    return init_matrix


# The notebook's MLP (784-784-1024-1024-10), a layer that widens past a power of
# two (10 -> 40), and a conv stem.
@pytest.mark.parametrize("fan_in,fan_out", [(784, 784), (784, 1024), (1024, 1024), (1024, 10),
                                            (10, 40), (3, 32)])
def test_zero_hadamard_equals_the_zero_reference_rule(fan_in, fan_out):
    torch = pytest.importorskip("torch")
    pytest.importorskip("scipy")
    from kzero.initializers import ZerOHadamard

    reference = reference_zero_init_on_matrix(torch.empty(fan_out, fan_in)).numpy().T
    dense = keras.ops.convert_to_numpy(ZerOHadamard()((fan_in, fan_out), "float32"))
    np.testing.assert_allclose(dense, reference, rtol=0, atol=1e-7)
    # A conv: that matrix at the centre tap of its window, zeros elsewhere.
    conv = keras.ops.convert_to_numpy(ZerOHadamard()((3, 3, fan_in, fan_out), "float32"))
    np.testing.assert_allclose(conv[1, 1], reference, rtol=0, atol=1e-7)
    conv[1, 1] = 0
    assert not conv.any()


def test_zero_widening_layers_start_with_copied_units_as_the_reference_rule_makes_them():
    """Sylvester's H_2n is [[H_n, H_n], [H_n, -H_n]], so the first in columns of
    H_p repeat with period 2^ceil(log2 in): a layer that widens starts with only
    that many distinct units (a 32 -> 64 conv, [H_32; H_32], copies each unit
    once), in the reference rule and in ResNet-20 under zero_hadamard alike.
    The report's family table measures how many copies training leaves."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("scipy")
    from kzero.callbacks import distinct_units
    from kzero.models import build_model

    reference = reference_zero_init_on_matrix(torch.empty(64, 32)).numpy()
    np.testing.assert_array_equal(reference[:32], reference[32:])
    model = build_model("cifar10", model="resnet20", scheme="zero_hadamard")
    widening = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            *_, fan_in, fan_out = kernel.shape
            distinct = distinct_units(kernel, np.zeros(fan_out))
            if fan_out > fan_in:
                widening[layer.name] = (fan_in, fan_out, distinct)
            else:
                assert distinct == fan_out, layer.name
    assert widening == {
        "stem_conv": (3, 16, 4),
        "stage2_block1_conv1": (16, 32, 16), "stage2_block1_shortcut_conv": (16, 32, 16),
        "stage3_block1_conv1": (32, 64, 32), "stage3_block1_shortcut_conv": (32, 64, 32)}


def test_zero_cifar_cnn_starts_with_four_distinct_outputs_per_conv_as_the_reference_rule_predicts(
        cifar10):
    """Why ZerO's CIFAR CNN starts with most units dead: conv1 widens 3 -> 32
    from H_32's first 3 columns, which hold only 4 sign patterns, so its 32
    channels are 4 features 8 times over. conv2's Hadamard rows sum each
    feature's 8 copies, and all but 8 of its 64 rows sum every group to
    exactly 0: 56 units get no input and, with a zero bias, output a
    constant. Every later conv mixes the same 4 features the same way.
    Predicted here from the reference rule alone (each conv a 1x1 map at
    the centre tap, zero biases; ELU, max pooling and the batch norms, which
    start as the identity map, keep equal channels equal and zero ones zero),
    and measured on the built model over real CIFAR-10 images."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("scipy")
    from kzero.callbacks import dead_fraction, distinct_units
    from kzero.datasets import get_dataset
    from kzero.pipelines import probe_batch

    model = build_model("cifar10", model="cnn", scheme="zero_hadamard")
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    predicted, features = {}, np.eye(3)  # each input channel is a feature of its own
    for layer in convs:
        *_, fan_in, fan_out = layer.kernel.shape
        # Each unit's pre-activation as a combination of the previous layer's distinct features.
        reference = reference_zero_init_on_matrix(torch.empty(fan_out, fan_in)).double().numpy()
        mix = reference @ features
        live = np.abs(mix).sum(axis=1) > 1e-9
        patterns, which = np.unique(mix[live].round(9), axis=0, return_inverse=True)
        features = np.zeros((fan_out, len(patterns)))
        features[np.flatnonzero(live), which.ravel()] = 1
        predicted[layer.name] = (float(1 - live.mean()), len(patterns))

    x, _ = probe_batch(cifar10, 32, get_dataset("cifar10").normalization(cifar10))
    outputs = keras.Model(model.inputs, [layer.output for layer in convs])([x], training=False)
    measured = {}
    for layer, output in zip(convs, outputs):
        output = keras.ops.convert_to_numpy(output).reshape(-1, layer.filters).astype(np.float64)
        live = np.ptp(output, axis=0) > 1e-6 * (1 + np.abs(output).max(axis=0))
        # Units whose outputs are equal compute the same function of the input.
        measured[layer.name] = (dead_fraction(output),
                                distinct_units(output[:, live], np.zeros(live.sum())))
    assert measured == predicted
    assert {distinct for _, distinct in measured.values()} == {4}
    assert [dead for dead, _ in measured.values()] == [0, 56 / 64, 0.5, 0.5, 15 / 16, 15 / 16]


def test_zero_hadamard_through_apply_scheme_on_a_users_model():
    from kzero.initializers import apply_scheme

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, name="head")(x)
    model = apply_scheme(keras.Model(inputs, outputs), "zero_hadamard", seed=5)
    # The 3 -> 4 conv widens: its centre tap is the scaled Hadamard block.
    centre = keras.ops.convert_to_numpy(model.get_layer("conv").kernel)[1, 1]
    np.testing.assert_allclose(np.abs(centre), np.full((3, 4), 0.5))
    head = keras.ops.convert_to_numpy(model.get_layer("head").kernel)
    np.testing.assert_array_equal(head, np.eye(256, 10))
    assert not keras.ops.convert_to_numpy(model.get_layer("head").bias).any()
    # Deterministic: no seed changes it.
    again = apply_scheme(keras.models.clone_model(model), "zero_hadamard", seed=6)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(again.get_layer("conv").kernel),
                                  keras.ops.convert_to_numpy(model.get_layer("conv").kernel))


def _gammas(model):
    return {layer.name: keras.ops.convert_to_numpy(layer.gamma) for layer in model.layers
            if hasattr(layer, "gamma")}


# torchvision's zero_init_residual (Goyal et al. 2017): bn2 of a basic block and
# bn3 of a bottleneck start with gamma 0; every other batch norm, shortcut
# projections and the stem included, keeps 1.
@pytest.mark.parametrize("model,last", [("resnet20", "bn2"), ("resnet50", "bn3")])
def test_zero_gamma_zeroes_the_last_batch_norm_of_each_residual_branch(model, last):
    zero_gamma = build_model("cifar10", model, scheme="zero_gamma", seed=2)
    gammas = _gammas(zero_gamma)
    zeroed = {name for name, gamma in gammas.items() if not gamma.any()}
    assert zeroed == {name for name in gammas if name.endswith(f"_{last}")}
    assert len(zeroed) == {"resnet20": 9, "resnet50": 16}[model]
    assert all((gamma == 1).all() for name, gamma in gammas.items() if name not in zeroed)
    # Its kernels and biases are lecun's.
    lecun = build_model("cifar10", model, scheme="lecun", seed=2)
    for ours, theirs in zip(zero_gamma.weights, lecun.weights):
        if "gamma" not in ours.path:
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours),
                                          keras.ops.convert_to_numpy(theirs))


def test_zero_gamma_on_a_users_model_finds_the_branch_or_takes_its_name():
    from kzero.initializers import apply_scheme

    inputs = keras.Input((8, 8, 4))
    stem = keras.layers.BatchNormalization(name="stem")(inputs)
    branch = keras.layers.Conv2D(4, 3, padding="same", name="c1")(stem)
    branch = keras.layers.Conv2D(4, 3, padding="same", name="c2")(branch)
    branch = keras.layers.BatchNormalization(name="norm_a")(branch)
    projection = keras.layers.Conv2D(4, 1, name="p")(stem)
    projection = keras.layers.BatchNormalization(name="norm_b")(projection)
    joined = keras.layers.Add()([projection, branch])
    outputs = keras.layers.Dense(3, name="head")(keras.layers.Flatten()(joined))
    model = apply_scheme(keras.Model(inputs, outputs), "zero_gamma", seed=1)
    assert {name for name, gamma in _gammas(model).items() if not gamma.any()} == {"norm_a"}
    # Another scheme over it leaves nothing of it.
    apply_scheme(model, "lecun", seed=1)
    assert all((gamma == 1).all() for gamma in _gammas(model).values())
    # Named by the user, where the rule does not read the block.
    apply_scheme(model, "zero_gamma", seed=1, branch_ends=["norm_b"])
    assert {name for name, gamma in _gammas(model).items() if not gamma.any()} == {"norm_b"}
