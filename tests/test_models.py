import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from kzero.models import ACTIVATIONS, build_model

# Parameter counts of the paper's Tables 1 and 2 (shared/paper/DIGEST.md).
COUNTS = {
    ("mnist", "logreg"): (7_850, 7_850),
    ("mnist", "fnn"): (397_510, 397_510),
    ("mnist", "cnn"): (264_138, 264_138),
    ("cifar10", "logreg"): (30_730, 30_730),
    ("cifar10", "fnn"): (1_738_890, 1_738_890),
    ("cifar10", "cnn"): (5_852_234, 5_853_130),
    ("cifar10", "resnet50"): (23_539_850, 23_585_418),
}


def numpy(variable):
    return keras.ops.convert_to_numpy(variable)


def weighted_layers(model):
    return [layer for layer in model.layers
            if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))]


@pytest.fixture(scope="module")
def resnet_zero_normal():
    return build_model("cifar10", "resnet50", scheme="zero_normal", seed=0)


@pytest.mark.parametrize("dataset,model", list(COUNTS))
def test_parameter_counts_match_the_paper(dataset, model, resnet_zero_normal):
    built = resnet_zero_normal if model == "resnet50" else build_model(dataset, model)
    trainable = sum(int(np.prod(w.shape)) for w in built.trainable_weights)
    assert (trainable, built.count_params()) == COUNTS[(dataset, model)]


def test_every_resnet_conv_and_dense_gets_the_scheme(resnet_zero_normal):
    layers = weighted_layers(resnet_zero_normal)
    assert len(layers) == 1 + 16 * 3 + 4 + 1  # stem, bottleneck convs, shortcuts, logits
    assert sum("shortcut" in layer.name for layer in layers) == 4
    for layer in layers:
        assert not numpy(layer.kernel).any(), layer.name
        assert layer.use_bias and numpy(layer.bias).std() > 0.5, layer.name


def test_paper_code_scope_only_reaches_stem_and_logits():
    model = build_model("cifar10", "resnet50", scheme="zero_normal", seed=0,
                        initialized_layers=("stem_conv", "logits"))
    zeroed = {layer.name for layer in weighted_layers(model) if not numpy(layer.kernel).any()}
    assert zeroed == {"stem_conv", "logits"}


def test_layer_names_are_stable_and_readable():
    assert [layer.name for layer in weighted_layers(build_model("cifar10", "fnn"))] == [
        "dense1", "dense2", "dense3", "logits"]
    assert [layer.name for layer in weighted_layers(build_model("mnist", "cnn"))] == [
        "conv1", "conv2", "logits"]


# Each activation written out in NumPy, with Keras' constants (leaky_relu's
# slope 0.2, selu's alpha and scale).
NUMPY_ACTIVATIONS = {
    "elu": lambda a: np.where(a > 0, a, np.expm1(np.minimum(a, 0))),
    "relu": lambda a: np.maximum(a, 0),
    "leaky_relu": lambda a: np.where(a > 0, a, 0.2 * a),
    "selu": lambda a: 1.0507009873554805 * np.where(
        a > 0, a, 1.6732632423543772 * np.expm1(np.minimum(a, 0))),
    "sigmoid": lambda a: 1 / (1 + np.exp(-a)),
    "tanh": np.tanh,
}


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_activation_is_a_parameter(activation):
    model = build_model("mnist", "fnn", scheme="lecun", activation=activation, seed=2)
    x = np.random.default_rng(0).uniform(-10, 10, (2, 28, 28, 1)).astype("float32")
    dense1, logits = model.get_layer("dense1"), model.get_layer("logits")
    kernel, bias = numpy(dense1.kernel).astype(np.float64), numpy(dense1.bias).astype(np.float64)
    hidden = NUMPY_ACTIVATIONS[activation](x.reshape(2, -1) @ kernel + bias)
    # The last layer stays linear: its outputs are the logits themselves.
    expected = hidden @ numpy(logits.kernel) + numpy(logits.bias)
    np.testing.assert_allclose(numpy(model(x)), expected, rtol=1e-5, atol=1e-5)
    # Pre-activations well on both sides of zero, where the activations differ.
    pre_activation = x.reshape(2, -1) @ kernel + bias
    assert pre_activation.min() < -2 and pre_activation.max() > 2


def test_cifar_cnn_has_elu_after_every_conv_and_pool_then_bn():
    model = build_model("cifar10", "cnn")
    for layer in weighted_layers(model)[:-1]:
        assert layer.activation is keras.activations.elu, layer.name
    names = [layer.name for layer in model.layers]
    assert names.index("pool1") + 1 == names.index("bn1")
    assert model.get_layer("conv6").output.shape[1:] == (8, 8, 256)


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = (build_model("mnist", "fnn", scheme="lecun", seed=s) for s in (1, 1, 2))
    for wa, wb, wc in zip(a.weights, b.weights, c.weights):
        np.testing.assert_array_equal(numpy(wa), numpy(wb))
        assert not np.array_equal(numpy(wa), numpy(wc))


def test_layers_get_distinct_seeds():
    model = build_model("cifar10", "fnn", scheme="zero_normal", seed=0)
    biases = [numpy(model.get_layer(name).bias)[:128] for name in ("dense1", "dense2", "dense3")]
    assert not np.array_equal(biases[0], biases[1])
    assert not np.array_equal(biases[1], biases[2])


@pytest.mark.parametrize("kwargs,message", [
    (dict(dataset="mnist", model="resnet50"),
     "not defined for dataset 'mnist': it needs 3-channel images"),
    (dict(dataset="svhn", model="fnn"), "valid: mnist, cifar10"),
    (dict(dataset="mnist", model="vgg"), "valid: logreg, fnn, cnn, resnet50"),
    (dict(dataset="mnist", model="fnn", activation="gelu"), "valid: elu, relu"),
    (dict(dataset="mnist", model="fnn", scheme="xavier"), "valid: lecun, zero"),
])
def test_bad_choices_name_the_valid_ones(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(**kwargs)


def test_batch_norm_matches_keras_and_survives_constant_inputs():
    from kzero.layers import StableBatchNormalization

    x = np.random.default_rng(0).normal(3.0, 2.0, size=(64, 4, 4, 8)).astype("float32")
    ours = StableBatchNormalization(momentum=0.9, epsilon=1e-5)
    theirs = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    for training in (True, False, True):
        np.testing.assert_allclose(numpy(ours(x, training=training)),
                                   numpy(theirs(x, training=training)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(numpy(ours.moving_variance), numpy(theirs.moving_variance),
                               rtol=1e-5)
    # What zero weights feed it: one value per channel, large against epsilon.
    constant = np.broadcast_to(np.linspace(50, 200, 8, dtype="float32"), x.shape).copy()
    out = numpy(ours(constant, training=True))
    assert np.isfinite(out).all() and np.abs(out).max() < 0.1


@pytest.mark.slow
def test_zero_weight_cifar_cnn_has_finite_gradients(cifar10):
    from kzero.config import RunConfig
    from kzero.gradients import gradient_function
    from kzero.pipelines import probe_batch
    from kzero.train import compile_run_model

    model = compile_run_model(build_model("cifar10", "cnn", scheme="zero_normal", seed=0),
                              RunConfig())
    grads = gradient_function(model)(*probe_batch(cifar10, 128))
    assert all(np.isfinite(g).all() for g in grads)


def test_batch_norm_keeps_float32_statistics_under_bfloat16():
    from kzero.layers import StableBatchNormalization

    layer = StableBatchNormalization(dtype="mixed_bfloat16")
    x = np.random.default_rng(0).normal(3.0, 2.0, (64, 8)).astype(np.float32)
    y = keras.ops.convert_to_numpy(
        keras.ops.cast(layer(keras.ops.cast(x, "bfloat16"), training=True), "float32"))
    assert layer.compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in layer.weights)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=0.05)
    np.testing.assert_allclose(y.std(axis=0), 1.0, atol=0.05)
    moving_mean = keras.ops.convert_to_numpy(layer.moving_mean)
    np.testing.assert_allclose(moving_mean, 0.01 * x.mean(axis=0), rtol=0.02)


# The initial weights of the paper's CNN and ResNet-50 as one backend draws
# them: every conv and dense kernel and bias, by layer, into an .npz file.
DUMP_INITIAL_WEIGHTS = """
import sys
import keras
import numpy as np
import kzero
from kzero.initializers import weighted_layers
weights = {}
for dataset, model, init in [("mnist", "cnn", "lecun"), ("mnist", "cnn", "zero_normal"),
                             ("mnist", "cnn", "zero_uniform"), ("cifar10", "resnet50", "lecun")]:
    built = kzero.build_model(dataset, model, scheme=init, seed=3)
    for layer in weighted_layers(built):
        for variable in (layer.kernel, layer.bias):
            weights[f"{model}/{init}/{layer.name}/{variable.name}"] = (
                keras.ops.convert_to_numpy(variable))
np.savez(sys.argv[1], **weights)
print(keras.backend.backend())
"""


@pytest.mark.slow
@pytest.mark.once
def test_one_seed_gives_bit_identical_initial_weights_under_every_backend(tmp_path):
    backends = ["jax", "torch"] + (["tensorflow"] if importlib.util.find_spec("tensorflow")
                                   else [])
    drawn = {}
    for backend in backends:
        path = tmp_path / f"{backend}.npz"
        result = subprocess.run([sys.executable, "-c", DUMP_INITIAL_WEIGHTS, str(path)],
                                env={**os.environ, "KERAS_BACKEND": backend},
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.split()[-1] == backend
        drawn[backend] = dict(np.load(path))
    reference = drawn["jax"]
    # 4 + 4 + 4 layers of the CNN, 53 convs and the logits layer of ResNet-50.
    assert len(reference) == 2 * (3 * 3 + 54)
    assert np.std(reference["resnet50/lecun/stage2_block1_conv2/kernel"]) > 0
    assert np.std(reference["cnn/zero_normal/conv1/bias"]) > 0.5
    for backend in backends[1:]:
        assert drawn[backend].keys() == reference.keys()
        for key, values in reference.items():
            assert drawn[backend][key].dtype == values.dtype
            assert np.array_equal(drawn[backend][key], values), (backend, key)


def test_resnet_stride_2_convolution_pads_one_pixel_on_every_side():
    """The stride-2 3x3 convs against NumPy with PyTorch's padding=1 (the
    paper's code): Keras' "same" would pad only the bottom and right."""
    model = build_model("cifar10", "resnet50", scheme="lecun", seed=0)
    pad, conv = model.get_layer("stage2_block1_conv2_pad"), model.get_layer("stage2_block1_conv2")
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 128)).astype(np.float32)
    ours = numpy(conv(pad(x)))
    kernel, bias = numpy(conv.kernel).astype(np.float64), numpy(conv.bias).astype(np.float64)
    padded = np.pad(x.astype(np.float64), [(0, 0), (1, 1), (1, 1), (0, 0)])
    expected = np.zeros((2, 16, 16, 128)) + bias
    for i in range(3):
        for j in range(3):
            window = padded[:, i:i + 32:2, j:j + 32:2, :]
            expected += np.einsum("bhwc,cf->bhwf", window, kernel[i, j])
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
    # The asymmetric padding of "same" is off by far more than that tolerance.
    shifted = np.pad(x.astype(np.float64), [(0, 0), (0, 1), (0, 1), (0, 0)])
    same = np.zeros_like(expected) + bias
    for i in range(3):
        for j in range(3):
            same += np.einsum("bhwc,cf->bhwf", shifted[:, i:i + 32:2, j:j + 32:2, :], kernel[i, j])
    assert np.abs(same - expected).max() > 0.5
