"""Gradient distributions, layer awakening and symmetry (Figure 12 of the paper)."""

import os

import keras
import numpy as np
import pytest
from kzero.callbacks import (ActivationRecorder, GradientRecorder, activation_statistics,
                             dead_fraction, distinct_units, gradient_statistics)
from kzero.config import RunConfig
from kzero.io import read_csv
from kzero.models import build_model
from kzero.pipelines import make_pipelines, probe_batch
from kzero.train import compile_run_model, train


def config(dataset, init, **overrides):
    config = dict(dataset=dataset, model="fnn", scheme=init, bias_scale=1.0, activation="elu",
                  seed=0, epochs=1, batch_size=128, learning_rate=1e-3)
    config.update(overrides)
    return config


@pytest.mark.slow
@pytest.mark.parametrize("init,expected", [
    # Zero weights: a layer's error signal passes through the still-zero kernel
    # of the layer above, so layers wake one per step from the output back.
    ("zero_normal", {"dense1": 4, "dense2": 3, "dense3": 2, "logits": 1}),
    ("lecun", {"dense1": 1, "dense2": 1, "dense3": 1, "logits": 1}),
    # ELU(0) = 0: no hidden layer ever gets a signal. The output kernel's
    # gradient, the hidden activations times the error, is zero too.
    ("zero", {"dense1": None, "dense2": None, "dense3": None, "logits": None}),
])
def test_cifar_fnn_layers_wake_up_one_per_step(tmp_path, cifar10, init, expected):
    _, summary = train(config("cifar10", init, max_examples=1280, record_symmetry=False),
                       str(tmp_path), cifar10)
    assert summary["awakening_step"] == expected
    rows = read_csv(tmp_path / "gradients.csv")
    steps = sorted({int(r["step"]) for r in rows})
    assert steps == [1, 2, 3, 4, 5]
    assert len(rows) == 5 * 8  # 4 layers x (kernel, bias) per recorded step


def test_a_deep_mlp_wakes_one_layer_per_step_to_the_input_at_depth_plus_1(tmp_path, mnist):
    # 7 hidden layers: the input layer wakes at step 8, which recording only
    # the first 5 steps (the default; here 1) would not see.
    _, summary = train(config("mnist", "zero_normal", model="mlp", depth=7, width=32,
                              max_examples=2048, grad_first_steps=1, record_symmetry=False),
                       str(tmp_path), mnist)
    assert summary["awakening_step"] == {"logits": 1, **{f"dense{i}": 9 - i
                                                         for i in range(1, 8)}}
    assert sorted({int(r["step"]) for r in read_csv(tmp_path / "gradients.csv")}) == list(
        range(1, 10))


def symmetry_rows(workdir):
    return [(int(r["epoch"]), r["layer"], int(r["units"]), int(r["distinct_units"]),
             float(r["dead_fraction"])) for r in read_csv(os.path.join(workdir, "symmetry.csv"))]


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["elu", "sigmoid"])
def test_pure_zero_keeps_one_distinct_unit_per_hidden_layer(tmp_path, cifar10, activation):
    train(config("cifar10", "zero", activation=activation, epochs=3, max_examples=2048,
                 record_gradients=False), str(tmp_path), cifar10)
    rows = symmetry_rows(tmp_path)
    assert {epoch for epoch, *_ in rows} == {0, 1, 2, 3}
    for epoch, layer, units, distinct, dead in rows:
        if layer != "logits":
            assert distinct == 1, (epoch, layer)
            # With ELU every hidden unit outputs ELU(0) = 0 whatever the input.
            if activation == "elu":
                assert dead == 1.0


@pytest.mark.slow
def test_zero_normal_has_all_units_distinct_after_the_first_epoch(tmp_path, mnist):
    train(config("mnist", "zero_normal", record_gradients=False), str(tmp_path), mnist)
    rows = {(epoch, layer): (units, distinct, dead)
            for epoch, layer, units, distinct, dead in symmetry_rows(tmp_path)}
    assert rows[(1, "dense1")][:2] == (500, 500) and rows[(1, "logits")][:2] == (10, 10)
    # Before training the hidden units ignore the input (zero weights): all
    # constant, yet distinct through their biases. After one epoch they are alive.
    assert rows[(0, "dense1")][2] == 1.0
    assert rows[(1, "dense1")][2] < 0.05


def test_distinct_units_and_dead_fraction_on_hand_made_layers():
    kernel = np.zeros((3, 4), np.float32)
    kernel[:, 0] = kernel[:, 2] = [1, 2, 3]
    kernel[:, 1] = [1, 2, 3 + 1e-3]
    bias = np.array([0.5, 0.5, 0.5, 0.5], np.float32)
    assert distinct_units(kernel, bias) == 3  # unit 2 copies unit 0; unit 3 is 0-weights
    assert distinct_units(np.zeros((5, 7)), np.zeros(7)) == 1
    assert distinct_units(np.zeros((5, 7)), np.arange(7.0)) == 7
    outputs = np.stack([np.ones((4, 4)), np.arange(16.0).reshape(4, 4)], axis=-1)[None]
    assert dead_fraction(np.repeat(outputs, 3, axis=0)) == 0.5
    # A backend tensor (a layer's output where it was computed): one unit varies,
    # one is constant, one varies by less than the 1e-6 relative tolerance, which
    # is judged in float64 on the host.
    outputs = np.repeat(np.float32([[1000.0, 2.0, 5.0]]), 4, axis=0)
    outputs[0, 0] += 0.0625  # well above 1e-6 * 1001
    outputs[0, 2] += 4e-6  # below 1e-6 * 6
    assert dead_fraction(keras.ops.convert_to_tensor(outputs)) == 2 / 3


def brute_force_distinct_units(kernel, bias, rtol=1e-6):
    units = np.concatenate([kernel.reshape(-1, kernel.shape[-1]), bias[None]]).T
    units = units.astype(np.float64)
    count = 0
    for j, unit in enumerate(units):
        distances = np.linalg.norm(units[:j] - unit, axis=1)
        limits = rtol * np.maximum(np.linalg.norm(units[:j], axis=1), np.linalg.norm(unit))
        count += not np.any(distances <= limits)
    return count


def test_distinct_units_counts_like_a_brute_force_pairwise_check():
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((300, 64)).astype(np.float32)
    bias = rng.standard_normal(64).astype(np.float32)
    kernel[:, 10], bias[10] = kernel[:, 3], bias[3]              # an exact copy
    kernel[:, 11], bias[11] = kernel[:, 3] * (1 + 2e-7), bias[3]  # within rtol of unit 3
    kernel[:, 12], bias[12] = kernel[:, 3], bias[3] + 1e-3        # beyond it
    kernel[:, 40:48], bias[40:48] = 0.0, 2.0                      # 8 symmetric units
    cases = [(kernel, bias), (np.zeros_like(kernel), bias), (np.zeros_like(kernel), 0 * bias),
             (rng.standard_normal((3, 3, 8, 16)), np.repeat(rng.standard_normal(4), 4))]
    for k, b in cases:
        assert distinct_units(k, b) == brute_force_distinct_units(k, b)
    assert distinct_units(kernel, bias) == 64 - 2 - 7


def numpy_fnn_gradients(weights, x, y):
    """Backpropagation for dense(ELU) -> dense -> softmax cross-entropy, in
    float64 numpy: independent of every backend."""
    w1, b1, w2, b2 = (np.asarray(w, np.float64) for w in weights)
    x = x.reshape(len(x), -1).astype(np.float64)
    a = x @ w1 + b1
    h = np.where(a > 0, a, np.expm1(np.minimum(a, 0)))
    z = h @ w2 + b2
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    dz = (p - np.eye(10)[y]) / len(x)
    da = (dz @ w2.T) * np.where(a > 0, 1.0, np.exp(np.minimum(a, 0)))
    return [x.T @ da, da.sum(axis=0), h.T @ dz, dz.sum(axis=0)]


class WeightSnapshots(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_train_batch_begin(self, batch, logs=None):
        self.weights.append([keras.ops.convert_to_numpy(v) for v in self.model.trainable_weights])


def test_recorded_statistics_equal_an_independent_computation(tmp_path, mnist):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = compile_run_model(build_model("mnist", "fnn", scheme="zero_normal", seed=1),
                              RunConfig())
    train_data, steps, _ = make_pipelines(mnist, 128, seed=0, epochs=1, max_examples=512)
    probe = probe_batch(mnist, 128)
    snapshots = WeightSnapshots()
    recorder = GradientRecorder(str(tmp_path / "gradients.csv"), probe, log_dir=str(tmp_path),
                                first_steps=3, every=2)
    model.fit(train_data, epochs=1, steps_per_epoch=steps, callbacks=[snapshots, recorder],
              verbose=0, shuffle=False)
    assert [int(r["step"]) for r in read_csv(tmp_path / "gradients.csv")][::4] == [1, 2, 3, 4]

    recorded_steps = [1, 2, 3, 4]  # the first 3, then every 2nd of the 4 steps
    assert sorted({row["step"] for row in recorder.rows}) == recorded_steps
    names = [("dense1", "kernel"), ("dense1", "bias"), ("logits", "kernel"), ("logits", "bias")]
    rows = {(r["step"], r["layer"], r["param"]): r for r in recorder.rows}
    for step in recorded_steps:
        expected = numpy_fnn_gradients(snapshots.weights[step - 1], *probe)
        for (layer, param), grad in zip(names, expected):
            want, got = gradient_statistics(grad), rows[(step, layer, param)]
            for key, value in want.items():
                np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-7,
                                           err_msg=f"step {step} {layer}/{param} {key}")

    accumulator = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0})
    accumulator.Reload()
    for layer, param in names:
        events = accumulator.Histograms(f"gradients/{layer}/{param}")
        assert [e.step for e in events] == recorded_steps
        for event in events:
            row = rows[(event.step, layer, param)]
            assert event.histogram_value.num == row["count"]
            np.testing.assert_allclose([event.histogram_value.min, event.histogram_value.max],
                                       [row["min"], row["max"]], rtol=1e-6, atol=1e-12)


def numpy_forward(model, weights, x):
    """Each dense and conv layer's (pre-activation, activation) for the paper's
    MNIST MLP and CNN (stride-1 `same` convs, ELU, flatten, dense), in float64
    numpy from the weights alone."""
    elu = lambda a: np.where(a > 0, a, np.expm1(np.minimum(a, 0)))  # noqa: E731
    layers = [layer for layer in model.layers
              if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))]
    h, out = x.astype(np.float64), []
    for layer, (kernel, bias) in zip(layers, zip(weights[::2], weights[1::2])):
        kernel, bias = np.asarray(kernel, np.float64), np.asarray(bias, np.float64)
        if isinstance(layer, keras.layers.Conv2D):
            pad = kernel.shape[0] // 2
            padded = np.pad(h, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
            windows = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[:2], (1, 2))
            pre = np.einsum("nhwcij,ijcf->nhwf", windows, kernel) + bias
        else:
            pre = h.reshape(len(h), -1) @ kernel + bias
        h = pre if layer.name == "logits" else elu(pre)
        out.append((layer.name, pre, h))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("model_name,init,bias_scale", [
    ("mlp", "zero_normal", 10.0),  # zero kernels: the pre-activations are the biases
    # The other cases exercise the same backend code on other layers and weights.
    pytest.param("mlp", "lecun", 1.0, marks=pytest.mark.once),
    pytest.param("cnn", "zero_uniform", 100.0, marks=pytest.mark.once),
])
def test_activation_statistics_equal_a_numpy_forward_pass(tmp_path, mnist, model_name, init,
                                                          bias_scale):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = compile_run_model(build_model("mnist", model_name, scheme=init, bias_scale=bias_scale,
                                          seed=2, depth=2, width=64) if model_name == "mlp"
                              else build_model("mnist", model_name, scheme=init,
                                               bias_scale=bias_scale, seed=2), RunConfig())
    train_data, steps, _ = make_pipelines(mnist, 128, seed=0, epochs=1, max_examples=640)
    probe = probe_batch(mnist, 32)
    snapshots = WeightSnapshots()
    recorder = ActivationRecorder(str(tmp_path / "activations.csv"), probe, log_dir=str(tmp_path),
                                  first_steps=2, every=4)
    model.fit(train_data, epochs=1, steps_per_epoch=steps, callbacks=[snapshots, recorder],
              verbose=0, shuffle=False)
    recorded_steps = [1, 2, 4]  # the first 2 steps, then every 4th of the 5
    rows = {(int(r["step"]), r["layer"]): r for r in read_csv(tmp_path / "activations.csv")}
    assert sorted({step for step, _ in rows}) == recorded_steps
    saturated = 0.0
    for step in recorded_steps:
        for name, pre, out in numpy_forward(model, snapshots.weights[step - 1], probe[0]):
            want, got = activation_statistics(pre, out), rows[(step, name)]
            for key, value in want.items():
                np.testing.assert_allclose(float(got[key]), value, rtol=1e-4, atol=1e-5,
                                           err_msg=f"step {step} {name} {key}")
            saturated = max(saturated, want["saturated_fraction"])
    # The biases of scale 10 and 100 push many units below -5; lecun's none.
    assert (saturated > 0.1) == (bias_scale > 1)
    accumulator = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0})
    accumulator.Reload()
    for kind, column in (("pre_activation", "pre_max_abs"), ("activation", "max_abs")):
        events = accumulator.Histograms(f"activations/dense1/{kind}" if model_name == "mlp"
                                        else f"activations/conv2/{kind}")
        assert [e.step for e in events] == recorded_steps
        for event in events:
            row = rows[(event.step, "dense1" if model_name == "mlp" else "conv2")]
            assert max(abs(event.histogram_value.min), abs(event.histogram_value.max)) == \
                pytest.approx(float(row[column]), rel=1e-5)
