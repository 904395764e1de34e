"""kzero as a library: the public API, the typed config, the registries and the
grid called without the command line."""

import json
import math
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import kzero
from kzero.config import ConfigError, Grid, RunConfig
from kzero.grid import expand, run_grid
from kzero.models import build_model
from kzero.io import read_csv, read_json
from kzero.optimizers import make_optimizer

from conftest import REPO


def numpy(variable):
    return keras.ops.convert_to_numpy(variable).astype(np.float64)


def readme_example():
    """The first Python block of the README's library section, as printed."""
    text = open(os.path.join(REPO, "README.md")).read()
    section = text.split("## Use kzero from your own code", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_library_example_runs_as_printed(tmp_path, monkeypatch, data_dir):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KZERO_DATA_DIR", data_dir)
    namespace = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    # Its own model: zero kernels and N(0, 1) biases after apply_scheme.
    conv, dense = namespace["conv"], namespace["dense"]
    assert not numpy(conv.kernel).any() and not numpy(dense.kernel).any()
    assert 0.5 < numpy(conv.bias).std() < 1.5
    # Its run: the directory a run writes, and a model that learnt.
    workdir = tmp_path / "runs" / "from_python"
    summary = read_json(workdir / "summary.json")
    assert summary == namespace["summary"] and summary["final_test_accuracy"] > 0.85
    assert {"config.json", "metrics.csv", "model.keras"} <= set(os.listdir(workdir))


def test_import_kzero_gives_the_public_names():
    for name in ("FanInUniform", "RunConfig", "SCHEMES", "DATASETS", "MODELS", "OPTIMIZERS",
                 "apply_scheme", "build_model", "load_dataset", "register_dataset",
                 "register_model", "register_scheme", "train"):
        assert hasattr(kzero, name), name
    assert kzero.initializers.FanInUniform is kzero.FanInUniform


def test_apply_scheme_gives_the_builders_weights():
    built = kzero.build_model("mnist", "cnn", scheme="lecun", seed=3)
    applied = kzero.apply_scheme(kzero.build_model("mnist", "cnn", scheme="zero", seed=0),
                                 "lecun", seed=3)
    for a, b in zip(built.weights, applied.weights):
        np.testing.assert_array_equal(numpy(a), numpy(b))


def nested_model():
    inner = keras.Sequential([keras.Input((6, 6, 8)), keras.layers.Conv2D(32, 3, name="inner")],
                             name="block")
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(8, 3, name="stem")(inputs)
    x = keras.layers.Flatten()(inner(x))
    x = keras.layers.Dense(64, name="hidden")(keras.layers.Reshape((16, 32))(x)[:, 0])
    return keras.Model(inputs, keras.layers.Dense(10, name="out")(x))


def test_apply_scheme_reaches_every_layer_of_any_model_with_its_own_fan_in():
    model = kzero.apply_scheme(nested_model(), "lecun", seed=0)
    fan_ins = {"stem": 3 * 3 * 4, "inner": 3 * 3 * 8, "hidden": 32, "out": 64}
    layers = kzero.initializers.weighted_layers(model)
    assert [layer.name for layer in layers] == list(fan_ins)
    for layer in layers:
        limit = 1 / math.sqrt(fan_ins[layer.name])
        for values in (numpy(layer.kernel), numpy(layer.bias)):
            assert np.abs(values).max() <= limit * (1 + 1e-6), layer.name
        assert np.abs(numpy(layer.kernel)).max() > 0.9 * limit, layer.name
    model = kzero.apply_scheme(nested_model(), "zero_normal", bias_scale=3.0, seed=0)
    layers = kzero.initializers.weighted_layers(model)
    assert not any(numpy(layer.kernel).any() for layer in layers)
    biases = np.concatenate([numpy(layer.bias) for layer in layers])
    assert 2.4 < biases.std() < 3.6  # 114 draws of N(0, 3^2)


def test_apply_scheme_needs_a_built_model_and_a_known_scheme():
    with pytest.raises(ValueError, match="needs a built model"):
        kzero.apply_scheme(keras.Sequential([keras.layers.Dense(3)]), "zero_normal")
    with pytest.raises(ValueError, match="unknown init scheme 'xavier'; valid: lecun, zero"):
        kzero.apply_scheme(nested_model(), "xavier")


def test_zero_schemes_need_no_fan_in_and_lecun_says_it_does():
    kernel, bias = kzero.get_scheme("zero_uniform").initializers(bias_scale=2.0, rng=0)
    values = numpy(bias((10_000,), "float32"))
    assert values.min() >= 0 and 1.9 < values.max() <= 2.0
    with pytest.raises(ValueError, match="FanInUniform needs the layer's fan_in"):
        kzero.get_scheme("lecun").initializers(rng=0)


def test_config_rejects_unknown_keys_and_bad_values_where_it_is_made():
    with pytest.raises(ConfigError, match="epoch=3: not a RunConfig field"):
        RunConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="epochs=0: must be at least 1"):
        RunConfig(epochs=0)
    with pytest.raises(ConfigError, match="dataset=svhn: not valid; choose from mnist, cifar10"):
        RunConfig(dataset="svhn")
    with pytest.raises(ConfigError, match="model=resnet50: not defined for the dataset mnist"):
        RunConfig(model="resnet50")
    with pytest.raises(ConfigError, match="optimizer=rmsprop: not valid; choose from adam"):
        RunConfig(optimizer="rmsprop")
    with pytest.raises(ConfigError, match="bias_scale=-1: must be a positive number"):
        Grid.make(bias_scale=(1, -1))
    with pytest.raises(ConfigError, match="runs=0: must be at least 1"):
        Grid.make(runs=0)
    with pytest.raises(ConfigError, match="model=resnet50: not defined for the dataset mnist"):
        Grid.make(model=("fnn", "resnet50"))
    with pytest.raises(ConfigError, match="seeds=3: not a RunConfig field"):
        Grid.make(seeds=3)
    config = RunConfig(epochs=3)
    with pytest.raises(ConfigError, match="batch_size=0"):
        config.replace(batch_size=0)
    with pytest.raises(Exception):  # frozen
        config.epochs = 4


def test_config_json_reads_back_into_the_same_config(tmp_path):
    config = RunConfig(dataset="cifar10", model="cnn", scheme="zero_uniform", bias_scale=0.5,
                       optimizer="adamw", weight_decay=0.05,
                       provenance=dict(sweep={"bias_scale": [0.5, 2.0], "model": ["cnn"]},
                                       parallel_group=["a", "b"], versions={"kzero": "x"}))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    again = RunConfig.read(str(path))
    assert again == config and again.provenance.sweep == {"bias_scale": (0.5, 2.0),
                                                          "model": ("cnn",)}
    # The file holds the run's settings, and where it came from in a block of its own.
    assert set(json.loads(path.read_text())) == {*config.settings(), "provenance"}
    # A name that only another program registered still reads, when asked to.
    values = {**config.to_dict(), "dataset": "someone_elses", "model": "theirs"}
    assert RunConfig.from_dict(values, check_names=False).dataset == "someone_elses"
    with pytest.raises(ConfigError, match="dataset=someone_elses"):
        RunConfig.from_dict(values)


def test_every_committed_run_reads_back_into_its_own_directory():
    """The flat config.json of kzero before 0.6 (grid and provenance fields
    beside the run's) reads into a run's settings and a provenance block."""
    import glob

    paths = glob.glob(os.path.join(REPO, "docs", "results", "runs", "*", "*", "seed_*",
                                   "config.json"))
    assert len(paths) > 400
    for path in paths:
        config = RunConfig.read(path)
        # The scheme was called init before kzero 0.7.
        assert config.scheme == read_json(path).get("scheme", read_json(path).get("init")), path
        workdir = os.path.dirname(path)
        assert config.variant == os.path.basename(os.path.dirname(workdir)), path
        assert f"seed_{config.seed}" == os.path.basename(workdir), path
        assert config.provenance.runs >= 1 and config.provenance.command.startswith("python")
        # The grid it names holds it.
        assert (config.variant, config.seed) in {
            (run.variant, run.seed) for run in Grid.of_run(config).expand()}, path


def test_the_schemes_older_name_init_still_works_where_users_wrote_it():
    with pytest.warns(DeprecationWarning, match="scheme="):
        older = build_model("mnist", "fnn", init="zero_normal", seed=0)
    newer = build_model("mnist", "fnn", scheme="zero_normal", seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(older.get_weights(), newer.get_weights()))
    # A config.json of kzero 0.6, its axes included.
    config = RunConfig.from_dict({"init": "zero_uniform", "bias_scale": 2.0, "provenance": {
        "sweep": {"init": ["lecun", "zero_uniform"]}, "runs": 1}})
    assert (config.scheme, config.provenance.sweep) == ("zero_uniform", {
        "scheme": ("lecun", "zero_uniform")})
    assert config.variant == "fnn_zero_uniform_x2"
    for make in (lambda: Grid.make(init=("lecun",)), lambda: Grid.make(init="lecun"),
                 lambda: Grid(axes={"init": ("lecun",)})):
        with pytest.raises(ConfigError, match=r"init.*\(init is now called scheme\)"):
            make()


def test_expand_makes_one_config_per_run():
    grid = Grid.make(model=("logreg", "fnn"), scheme=("lecun", "zero_normal"),
                     bias_scale=(0.01, 100), runs=2, seed=7)
    runs = expand(grid)
    assert [(r.variant, r.seed) for r in runs[:6]] == [
        ("logreg_lecun", 7), ("logreg_lecun", 8), ("logreg_zero_normal_x0.01", 7),
        ("logreg_zero_normal_x0.01", 8), ("logreg_zero_normal_x100", 7),
        ("logreg_zero_normal_x100", 8)]
    assert len(runs) == 2 * (1 + 2) * 2
    assert {r.provenance.base_seed for r in runs} == {7} and runs[0].bias_scale is None
    assert runs[0].provenance.sweep["scheme"] == ("lecun", "zero_normal")


@pytest.mark.once
def test_an_mlp_grid_has_a_variant_per_depth_and_builds_it():
    runs = expand(Grid.make(model=("fnn", "mlp"), depth=("4", 16), width=32,
                            scheme=("lecun",), runs=1))
    assert [(r.variant, r.depth, r.width) for r in runs] == [
        ("fnn_lecun", None, None), ("mlp4x32_lecun", 4, 32), ("mlp16x32_lecun", 16, 32)]
    assert [r.variant for r in expand(Grid.make(model=("mlp",), scheme=("lecun",), runs=1))] == [
        "mlp2x256_lecun"]
    runs = expand(Grid.make(scheme=("lecun",), learning_rate=("3e-4", 0.003), runs=1))
    assert [(r.variant, r.learning_rate) for r in runs] == [("fnn_lecun_lr0.0003", 3e-4),
                                                          ("fnn_lecun_lr0.003", 3e-3)]
    runs = expand(Grid.make(scheme=("lecun",), precision=("float32", "mixed_bfloat16"), runs=1))
    assert [(r.variant, r.precision, r.protocol_label) for r in runs] == [
        ("fnn_lecun", "float32", "paper_text"),
        ("fnn_lecun_mixed_bfloat16", "mixed_bfloat16", "paper_text + mixed_bfloat16")]
    model = build_model("mnist", "mlp", depth=3, width=7)
    assert [(layer.name, layer.units) for layer in model.layers
            if isinstance(layer, keras.layers.Dense)] == [
        ("dense1", 7), ("dense2", 7), ("dense3", 7), ("logits", 10)]
    assert model.count_params() == 784 * 7 + 7 + 2 * (7 * 7 + 7) + 7 * 10 + 10
    with pytest.raises(ValueError, match="model 'fnn' takes no depth"):
        build_model("mnist", "fnn", depth=3)


@pytest.mark.parametrize("name,kind,settings", [
    ("adam", keras.optimizers.Adam, {"epsilon": 1e-8, "weight_decay": None}),
    ("sgd", keras.optimizers.SGD, {"momentum": 0.0, "weight_decay": None}),
    ("momentum", keras.optimizers.SGD, {"momentum": 0.9, "weight_decay": None}),
    ("adamw", keras.optimizers.AdamW, {"epsilon": 1e-8, "weight_decay": 0.01}),
])
def test_optimizers_are_keras_optimizers_with_the_papers_defaults(name, kind, settings):
    optimizer = make_optimizer(name, 0.25)
    # Under torch, Keras hands out its torch subclass of the same name.
    assert isinstance(optimizer, kind) and type(optimizer).__name__ == kind.__name__
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == 0.25
    for key, value in settings.items():
        assert getattr(optimizer, key) == value, key
    assert make_optimizer(name, 0.25, weight_decay=0.5).weight_decay == 0.5


@pytest.mark.slow
def test_sgd_trains_the_mnist_fnn_to_90_percent_in_one_epoch(tmp_path, mnist):
    _, summary = kzero.train(RunConfig(optimizer="sgd", learning_rate=0.1, epochs=1,
                                       record_gradients=False, record_symmetry=False),
                             str(tmp_path), mnist, verbose=0)
    assert summary["final_test_accuracy"] >= 0.9
    assert read_json(tmp_path / "config.json")["optimizer"] == "sgd"


@pytest.mark.slow
def test_the_grid_runs_from_a_config_without_flags(tmp_path, mnist, capsys):
    grid = Grid.make(model=("logreg",), scheme=("lecun", "zero"), runs=2, epochs=1,
                     max_examples=512, output_dir=str(tmp_path), experiment="direct",
                     record_gradients=False)
    runs = run_grid(grid, arrays=mnist, verbose=0)
    assert [(r.variant, r.seed) for r in runs] == [("logreg_lecun", 0), ("logreg_lecun", 1),
                                                   ("logreg_zero", 0), ("logreg_zero", 1)]
    for run in runs:
        workdir = tmp_path / "direct" / run.variant / f"seed_{run.seed}"
        assert RunConfig.read(str(workdir / "config.json")).with_provenance(
            backend=None, accelerator=None, processor=None, host=None, versions=None,
            input_pipeline=None, init_stream=None) == run
        assert len(read_csv(workdir / "metrics.csv")) == 1
    capsys.readouterr()
    run_grid(grid.replace(shard="1/2"), arrays=mnist, verbose=0)
    assert capsys.readouterr().out.count("skipped") == 2


def test_only_the_runner_reads_flags():
    for name in sorted(os.listdir(os.path.join(REPO, "kzero"))):
        if name.endswith(".py") and name != "run.py":
            assert "FLAGS" not in open(os.path.join(REPO, "kzero", name)).read(), name


CORE_IMPORTS = """
import sys
import kzero, kzero.models, kzero.train, kzero.grid, kzero.run, kzero.initializers
print(sorted(m for m in sys.modules if m.startswith("kzero.analysis") or m == "kzero.report"))
"""


def test_the_core_imports_nothing_of_the_analysis():
    result = subprocess.run([sys.executable, "-c", CORE_IMPORTS], capture_output=True,
                            text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["[]"], result.stdout


def test_kzeros_batch_norm_has_its_own_name_and_saved_runs_still_load(tmp_path):
    import keras

    import kzero

    namespace = {}
    exec("from kzero import *", namespace)
    assert "BatchNormalization" not in namespace  # Keras' layer keeps its name
    with pytest.warns(DeprecationWarning, match="StableBatchNormalization"):
        assert kzero.BatchNormalization is kzero.StableBatchNormalization
    # A saved model files each layer's weights under its class name: the class
    # keeps the name it had when every saved run so far was written, or their
    # batch norms would not find their weights on resume.
    assert kzero.StableBatchNormalization.__name__ == "BatchNormalization"
    model = keras.Sequential([keras.Input((4,)), kzero.StableBatchNormalization()])
    model.layers[0].gamma.assign([1.0, 2.0, 3.0, 4.0])
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.layers[0], kzero.StableBatchNormalization)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded.layers[0].gamma),
                                  [1.0, 2.0, 3.0, 4.0])


def test_docs_grid_snippet_makes_the_grid_it_prints(capsys):
    """docs/library.md's Grid block, as printed there."""
    text = open(os.path.join(REPO, "docs", "library.md")).read()
    snippet = re.search(r"## The typed config.*?```python\n(.*?)```", text, re.S).group(1)
    scope = {"kzero": kzero}
    exec(snippet, scope)
    runs = scope["grid"].expand()
    assert [(run.variant, run.seed) for run in runs[::3]] == [
        ("fnn_lecun", 0), ("fnn_zero_normal_x0.01", 0), ("fnn_zero_normal_x1", 0)]
    assert len(runs) == 9 and {run.epochs for run in runs} == {2}
    assert capsys.readouterr().out.strip() == \
        "['fnn_lecun', 'fnn_zero_normal_x0.01', 'fnn_zero_normal_x1']"


def test_recompute_moving_statistics_gives_each_batch_norm_its_inputs_exact_statistics(cifar10):
    from kzero.datasets import get_dataset
    from kzero.pipelines import probe_batch

    images, _ = probe_batch(cifar10, 256, get_dataset("cifar10").normalization(cifar10))
    model = build_model("cifar10", model="cnn", scheme="lecun", seed=1)
    norms = [layer for layer in model.layers if isinstance(layer, kzero.StableBatchNormalization)]
    for layer in norms:  # far from any statistics the model can have
        layer.moving_mean.assign(np.full(layer.moving_mean.shape, 5.0, np.float32))
        layer.moving_variance.assign(np.full(layer.moving_variance.shape, 100.0, np.float32))
    # Chunks of 100 leave a short last one: the pooled statistics must still be exact.
    assert kzero.recompute_moving_statistics(model, images, batch_size=100) is model
    for layer in norms:
        inputs = numpy(keras.Model(model.input, layer.input)(images, training=False))
        inputs = inputs.reshape(-1, inputs.shape[-1])
        np.testing.assert_allclose(numpy(layer.moving_mean), inputs.mean(axis=0),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(numpy(layer.moving_variance), inputs.var(axis=0), rtol=1e-5)
    # So on those images, testing with the moving statistics is testing with
    # the batch's own, as one batch of all 256.
    moving = numpy(model(images, training=False))
    for layer in norms:
        layer.test_statistics = "batch"
    np.testing.assert_allclose(moving, numpy(model(images, training=False)), atol=2e-4)
    with pytest.raises(ValueError, match="needs at least one image"):
        kzero.recompute_moving_statistics(model, images[:0])
