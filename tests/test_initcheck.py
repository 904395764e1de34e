"""The init check (kzero.check_init), the zero_normal_bn scheme that carries
random biases through batch norm, and the first-steps census they feed."""


import keras
import numpy as np
import pytest

import kzero
from kzero.config import Grid, RunConfig
from kzero.grid import run_grid
from kzero.initcheck import erasing_normalizations, input_dependence
from kzero.analysis.first_steps import first_steps_section
from kzero.io import read_csv, read_json
from kzero.models import build_model
from kzero.analysis.report import collect
from kzero.train import run_probe


def numpy(variable):
    return keras.ops.convert_to_numpy(variable)


def probe(arrays, dataset, model, size=16):
    """The first `size` training examples, preprocessed as `model` takes them."""
    return run_probe(RunConfig(dataset=dataset, model=model, batch_size=size), arrays)


def test_fnn_biases_reach_the_next_layer_and_nothing_is_warned(mnist):
    model = build_model("mnist", "fnn", scheme="zero_normal", seed=0)
    check = kzero.check_init(model, *probe(mnist, "mnist", "fnn"))
    assert check["biased_layers"] == 2 and check["removed_if_zero_kernel"] == {}
    assert check["erased_symmetry_breaking"] == []
    # Zero kernels: only the logits get a gradient at step 1 (Figure 12).
    assert check["with_gradient"] == ["logits/kernel", "logits/bias"]
    assert check["stages"]["dense1"]["input_dependence"] == 0.0
    assert kzero.init_warning(check, "fnn", "zero_normal") is None


@pytest.mark.slow
def test_cifar_cnn_batch_norms_remove_the_zero_kernel_convs_output(cifar10):
    model = build_model("cifar10", "cnn", scheme="zero_normal", seed=0)
    check = kzero.check_init(model, *probe(cifar10, "cifar10", "cnn"),
                             stages=("bn1", "bn2", "bn3"))
    # An ELU and a max-pool stand between each conv and its batch norm: the
    # bias survives a non-zero kernel, but not a zero one.
    assert check["bias_removed_by"] == {}
    assert check["removed_if_zero_kernel"] == {"conv2": "bn1", "conv4": "bn2", "conv6": "bn3"}
    assert check["erased_symmetry_breaking"] == ["conv2", "conv4", "conv6"]
    assert check["with_gradient"] == ["logits/kernel", "logits/bias"]
    for stage in ("bn1", "bn2", "bn3"):
        assert check["stages"][stage]["input_dependence"] == 0.0
        # Rounding error, far below the random biases (about 1) it replaces.
        assert check["stages"][stage]["rms"] < 0.05
    warning = kzero.init_warning(check, "cnn", "zero_normal")
    assert warning.startswith("zero_normal on cnn: 3 of 9 biased conv and dense layers feed a "
                              "batch norm that removes their random bias; at step 1 only "
                              "logits/kernel, logits/bias have a gradient")
    # The reference init: the same graph, nothing erased, every variable has a gradient.
    lecun = kzero.check_init(build_model("cifar10", "cnn", scheme="lecun", seed=0),
                             *probe(cifar10, "cifar10", "cnn"))
    assert lecun["erased_symmetry_breaking"] == []
    assert len(lecun["with_gradient"]) == lecun["variables"] == 24
    assert lecun["stages"]["logits"]["input_dependence"] > 0.1


@pytest.fixture(scope="module")
def resnet50_check(cifar10):
    model = build_model("cifar10", "resnet50", scheme="zero_normal", seed=0)
    x, y = probe(cifar10, "cifar10", "resnet50", size=8)
    return kzero.check_init(model, x, y, stages=kzero.MODELS.get("resnet50").stages)


@pytest.mark.slow
def test_resnet50_zero_normal_is_dead_below_the_logits(resnet50_check):
    check = resnet50_check
    # Of its 53 convs and 1 dense layer, the stem, conv2 and conv3 of 16
    # bottlenecks and the 4 shortcut convs feed a batch norm directly; conv1
    # of each bottleneck feeds conv2.
    assert len(check["bias_removed_by"]) == 37 and check["biased_layers"] == 54
    assert check["bias_removed_by"]["stem_conv"] == "stem_bn"
    assert check["bias_removed_by"]["stage1_block1_shortcut_conv"] == "stage1_block1_shortcut_bn"
    assert not any(name.endswith("conv1") for name in check["bias_removed_by"])
    assert len(check["erased_symmetry_breaking"]) == 37
    # Nothing below the logits has a gradient; whether the logits' kernel has
    # one (features of rounding error) depends on the backend's rounding.
    assert "logits/bias" in check["with_gradient"]
    assert set(check["with_gradient"]) <= {"logits/kernel", "logits/bias"}
    for stage, values in check["stages"].items():
        assert values["input_dependence"] < 1e-6, stage
    assert kzero.init_warning(check, "resnet50", "zero_normal").startswith(
        "zero_normal on resnet50: 37 of 54 biased conv and dense layers feed a batch norm that "
        "removes their random bias; at step 1 only logits/")


def test_zero_normal_bn_moves_the_removed_biases_into_the_batch_norms_shift():
    plain = build_model("cifar10", "resnet50", scheme="zero_normal", seed=0)
    moved = build_model("cifar10", "resnet50", scheme="zero_normal_bn", seed=0)
    removed = {layer.name: norm.name for layer, norm in erasing_normalizations(plain).items()}
    assert len(removed) == 37
    for layer in plain.layers:
        if not isinstance(layer, keras.layers.Conv2D | keras.layers.Dense):
            continue
        other = moved.get_layer(layer.name)
        assert not numpy(other.kernel).any()
        if layer.name in removed:
            # The values zero_normal draws for the bias, in the shift instead.
            assert not numpy(other.bias).any()
            np.testing.assert_array_equal(numpy(moved.get_layer(removed[layer.name]).beta),
                                          numpy(layer.bias))
        else:
            np.testing.assert_array_equal(numpy(other.bias), numpy(layer.bias))
    # The paper_code scope moves only the stem's.
    scoped = build_model("cifar10", "resnet50", scheme="zero_normal_bn", seed=0,
                         initialized_layers=("stem_conv", "logits"))
    assert numpy(scoped.get_layer("stem_bn").beta).std() > 0.5
    assert not numpy(scoped.get_layer("stage1_block1_bn2").beta).any()


def test_apply_scheme_on_a_users_model_warns_then_carries_the_biases(mnist):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(8, 3, activation="elu", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.BatchNormalization(name="norm")(x)
    x = keras.layers.Flatten(name="flat")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="out")(x))
    x, y = probe(mnist, "mnist", "fnn")
    kzero.apply_scheme(model, "zero_normal", seed=0)
    check = kzero.check_init(model, x, y)
    assert check["removed_if_zero_kernel"] == {"conv": "norm"}
    assert kzero.init_warning(check, "mine", "zero_normal").startswith(
        "zero_normal on mine: 1 of 2 biased")
    bias = numpy(model.get_layer("conv").bias).copy()
    kzero.apply_scheme(model, "zero_normal_bn", seed=0)
    np.testing.assert_array_equal(numpy(model.get_layer("norm").beta), bias)
    assert not numpy(model.get_layer("conv").bias).any()
    check = kzero.check_init(model, x, y)
    assert check["erased_symmetry_breaking"] == []
    assert kzero.init_warning(check, "mine", "zero_normal_bn") is None
    # Another scheme over it leaves nothing of it: the shift is zero again.
    kzero.apply_scheme(model, "lecun", seed=0)
    assert not numpy(model.get_layer("norm").beta).any()


def test_input_dependence_is_zero_for_a_constant_batch_and_near_one_for_noise():
    assert input_dependence(np.ones((4, 3, 3, 2)) * [1.0, -2.0]) == (0.0, pytest.approx(2.5**0.5))
    dependence, _ = input_dependence(np.random.default_rng(0).standard_normal((256, 10)))
    assert 0.9 < dependence < 1.1


CENSUS = dict(dataset="cifar10", model=("cnn",), epochs=1, max_steps=12, grad_first_steps=12,
              runs=1, batch_size=32, record_symmetry=False, record_activations=False,
              save_model=False, max_examples=12 * 32, parallel_runs=1)


@pytest.mark.slow
def test_the_runner_warns_records_the_check_and_the_census(tmp_path, cifar10, capsys):
    grid = Grid.make(scheme=("zero_normal", "zero_normal_bn"), output_dir=str(tmp_path),
                     experiment="census_cnn", **CENSUS)
    run_grid(grid, arrays=cifar10, verbose=0)
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("kzero: warning:")]
    assert warnings == [line for line in warnings if "zero_normal on cnn: 3 of 9" in line]
    assert len(warnings) == 1
    plain, moved = (tmp_path / "census_cnn" / f"cnn_{init}_x1_12steps" / "seed_0"
                    for init in ("zero_normal", "zero_normal_bn"))
    assert read_json(plain / "summary.json")["init_check"]["erased_symmetry_breaking"] == [
        "conv2", "conv4", "conv6"]
    # The census: every step's loss, whose mean is the epoch's loss Keras logged.
    steps = read_csv(moved / "steps.csv")
    metrics = read_csv(moved / "metrics.csv")
    assert [int(row["step"]) for row in steps] == list(range(1, 13)) and len(metrics) == 1
    assert np.mean([float(row["loss"]) for row in steps]) == pytest.approx(
        float(metrics[0]["loss"]), rel=1e-4)
    # zero_normal_bn wakes one kernel per step from the output back, as the
    # FNN of Figure 12 does, through exact arithmetic under any backend: the
    # batch norms' random shifts carry the symmetry breaking. Once conv1 has
    # taken its first update, every stage depends on the input.
    awakening = read_json(moved / "summary.json")["awakening_step"]
    layers = ["logits", "dense2", "dense1", "conv6", "conv5", "conv4", "conv3", "conv2", "conv1"]
    assert [awakening[layer] for layer in layers] == list(range(1, 10)), awakening
    stages = read_csv(moved / "stages.csv")
    for stage in ("bn1", "bn2", "bn3", "dense1", "dense2", "logits"):
        curve = [float(r["input_dependence"]) for r in stages if r["stage"] == stage]
        # Rounding error (under 1e-6) until then, under any backend; above it
        # by the last step. Between, the logits' dependence can dip below 1e-6
        # for a step (9.2e-7 at step 11 under jax on one CPU of this workplace).
        assert len(curve) == 12 and max(curve[:9]) < 1e-6 < curve[-1], stage
    # Over a thousand times the rounding level (0.004 on an AMD EPYC under jax).
    assert [float(r["input_dependence"]) for r in stages if r["stage"] == "bn1"][-1] > 1e-3
    # The report's census section, computed from these two runs.
    lines = first_steps_section(collect([str(tmp_path)]), str(tmp_path))
    backend = keras.backend.backend()
    rows = {line.split(" | ")[1]: line for line in lines if line.startswith("| cnn |")}
    assert rows["cnn_zero_normal_bn_x1"].startswith(
        f"| cnn | cnn_zero_normal_bn_x1 | {backend} | 1 | 12 | 0 of 9 | 0.083 | 1.000 | "
        "9.0 of 9 | 9 |")
    assert rows["cnn_zero_normal_x1"].startswith(
        f"| cnn | cnn_zero_normal_x1 | {backend} | 1 | 12 | 3 of 9 | 0.083 |")
    assert (tmp_path / "first_steps_cnn.png").stat().st_size > 10_000


def test_bn_epsilon_names_the_variant_and_reaches_every_batch_norm():
    from kzero.train import build_run_model

    config = RunConfig(dataset="cifar10", model="cnn", scheme="zero_normal", bias_scale=1.0)
    larger = config.replace(bn_epsilon=1e-3)
    assert (config.variant, larger.variant) == ("cnn_zero_normal_x1",
                                                "cnn_zero_normal_x1_bn_eps0.001")
    for run, epsilon in ((config, 1e-5), (larger, 1e-3)):
        norms = [layer for layer in build_run_model(run).layers
                 if isinstance(layer, kzero.StableBatchNormalization)]
        assert len(norms) == 3 and {norm.epsilon for norm in norms} == {epsilon}


def test_exact_mean_centres_a_constant_channel_exactly_and_changes_nothing_else():
    rng = np.random.default_rng(0)
    # Channel 0 is one constant over batch and positions, as a zero-kernel
    # conv's output is; channel 1 varies.
    constant = np.full((16, 4, 4, 1), 0.7310586, np.float32)
    x = np.concatenate([constant, rng.standard_normal((16, 4, 4, 1)).astype(np.float32)], -1)
    exact = kzero.StableBatchNormalization(epsilon=1e-5, exact_mean=True)
    plain = kzero.StableBatchNormalization(epsilon=1e-5)
    out_exact = numpy(exact(x, training=True))
    out_plain = numpy(plain(x, training=True))
    assert not out_exact[..., 0].any()
    np.testing.assert_allclose(out_exact[..., 1], out_plain[..., 1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(numpy(exact.moving_variance), numpy(plain.moving_variance),
                               rtol=1e-5, atol=1e-9)
    config = RunConfig(dataset="cifar10", model="cnn", scheme="zero_normal", bias_scale=1.0,
                       bn_exact_mean=True)
    assert config.variant == "cnn_zero_normal_x1_exact_bn_mean"
