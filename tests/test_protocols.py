"""The paper_code protocol, item by item, against what the authors' code does.
Tests that only read configs or NumPy pipelines are marked `once`."""

import glob
import os

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from kzero.config import ConfigError, Grid, RunConfig
from kzero.layers import StableBatchNormalization
from kzero.models import build_model
from kzero.pipelines import epoch_order, make_pipelines, split_holdout
from kzero.records import read_rows
from kzero.train import crop_fill, input_normalization, run_arrays, train

from test_run import flagfile, run_cli, run_dirs


def numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.once
def test_paper_code_sets_every_item_and_each_flag_overrides_it():
    code = RunConfig(protocol="paper_code")
    assert (code.holdout, code.order, code.bn_statistics, code.normalization_std,
            code.crop_fill) == (7000, "fixed", "batch", "kuangliu", "black")
    text = RunConfig()
    assert (text.holdout, text.order, text.bn_statistics, text.normalization_std,
            text.crop_fill) == (0, "epoch", "moving", "dataset", "mean")
    assert RunConfig(protocol="paper_code", holdout=0).holdout == 0
    # The variant names the protocol and every item that departs from it.
    assert text.variant == "fnn_lecun" and code.variant == "fnn_lecun_paper_code"
    assert RunConfig(holdout=7000).variant == "fnn_lecun_holdout7000"
    assert RunConfig(order="fixed").variant == "fnn_lecun_fixed_order"
    assert RunConfig(protocol="paper_code", order="epoch").variant == \
        "fnn_lecun_paper_code_epoch_order"


@pytest.mark.once
def test_paper_code_trains_the_logistic_baselines_for_the_notebooks_epochs():
    for dataset, epochs in [("mnist", 10), ("cifar10", 15)]:
        assert RunConfig(protocol="paper_code", dataset=dataset, model="logreg",
                         epochs=20).epochs == epochs
        assert RunConfig(dataset=dataset, model="logreg", epochs=20).epochs == 20
    assert RunConfig(protocol="paper_code", model="fnn", epochs=3).epochs == 3


@pytest.mark.once
@pytest.mark.parametrize("values,message", [
    (dict(protocol="paper"), "protocol=paper: not valid; choose from paper_text, paper_code"),
    (dict(order="random"), "order=random: not valid; choose from epoch, fixed"),
    (dict(holdout=-1), "holdout=-1: must be 0 or more"),
    (dict(holdout=7000, parallel_runs=2), "a parallel group does not evaluate a hold-out"),
])
def test_bad_protocol_values_name_the_field(values, message):
    with pytest.raises(ConfigError, match=message):
        Grid.make(**values)


@pytest.mark.once
def test_holdout_is_a_random_split_drawn_anew_for_each_seed(mnist):
    split = split_holdout(mnist, 7000, seed=0)
    assert len(split["x_train"]) == 53000 and len(split["x_holdout"]) == 7000
    # Disjoint, and together the whole training split: compare image bytes.
    def keys(x):
        return {bytes(image) for image in x}

    train_keys, held = keys(split["x_train"]), keys(split["x_holdout"])
    assert not (train_keys & held) and len(train_keys | held) == len(keys(mnist["x_train"]))
    other = split_holdout(mnist, 7000, seed=1)
    assert not np.array_equal(other["x_holdout"], split["x_holdout"])
    np.testing.assert_array_equal(split_holdout(mnist, 7000, seed=0)["y_holdout"],
                                  split["y_holdout"])
    assert split["x_test"] is mnist["x_test"]
    with pytest.raises(ValueError, match="holdout=60000 leaves no training examples"):
        split_holdout(mnist, 60000, seed=0)


@pytest.mark.once
def test_fixed_order_reuses_one_order_every_epoch(mnist):
    assert np.array_equal(epoch_order(3, 0, 100, "fixed"), epoch_order(3, 7, 100, "fixed"))
    assert not np.array_equal(epoch_order(3, 0, 100), epoch_order(3, 7, 100))
    train_data, steps, _ = make_pipelines(mnist, 64, seed=1, epochs=2, max_examples=256,
                                          pipeline="numpy", order="fixed")
    for step in range(steps):
        np.testing.assert_array_equal(train_data[step][1], train_data[steps + step][1])


@pytest.mark.slow
@pytest.mark.once
def test_a_holdout_run_writes_validation_metrics_to_csv_and_tensorboard(tmp_path, data_dir):
    run_cli(flagfile("mnist_fnn"), "--scheme=zero_normal", "--runs=1", "--epochs=2",
            "--max_examples=9048", "--protocol=paper_code", "--norecord_symmetry",
            f"--data_dir={data_dir}", f"--output_dir={tmp_path}")
    (workdir,) = run_dirs(tmp_path / "mnist_fnn")
    assert workdir.endswith("fnn_zero_normal_x1_paper_code/seed_0")
    config = RunConfig.read(os.path.join(workdir, "config.json"))
    assert (config.protocol, config.holdout, config.order) == ("paper_code", 7000, "fixed")
    rows = read_rows(os.path.join(workdir, "metrics.csv"))
    assert [row["epoch"] for row in rows] == [1, 2]
    for row in rows:
        assert 0.1 < row["holdout_accuracy"] < 1 and row["holdout_loss"] > 0
        assert row["holdout_accuracy"] != row["test_accuracy"]
    (events,) = glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
    accumulator = EventAccumulator(events, size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"]) | set(accumulator.Tags()["tensors"])
    assert {"epoch/holdout_accuracy", "epoch/holdout_loss"} <= tags


@pytest.mark.slow
def test_holdout_accuracy_is_the_models_accuracy_on_the_held_out_images(tmp_path, mnist):
    config = RunConfig(scheme="zero_normal", bias_scale=1.0, epochs=1, max_examples=3000,
                       holdout=1000, record_gradients=False, record_symmetry=False)
    model, _ = train(config, str(tmp_path), mnist, verbose=0)
    held = run_arrays(config, mnist)
    images = held["x_holdout"].astype(np.float32)[..., None] / 255.0
    predicted = np.argmax(numpy(model.predict(images, verbose=0)), axis=-1)
    (row,) = read_rows(os.path.join(tmp_path, "metrics.csv"))
    assert row["holdout_accuracy"] == pytest.approx(np.mean(predicted == held["y_holdout"]),
                                                    abs=1e-6)


def test_batch_statistics_at_test_time_normalise_each_batch_by_itself():
    x = np.random.default_rng(0).normal(3.0, 2.0, (64, 5)).astype(np.float32)
    batch = StableBatchNormalization(epsilon=1e-5, test_statistics="batch")
    moving = StableBatchNormalization(epsilon=1e-5)
    expected = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
    np.testing.assert_allclose(numpy(batch(x, training=False)), expected, rtol=1e-4, atol=1e-4)
    # Keras' rule: the moving statistics, still at mean 0 and variance 1.
    np.testing.assert_allclose(numpy(moving(x, training=False)), x / np.sqrt(1 + 1e-5),
                               rtol=1e-5)
    restored = StableBatchNormalization.from_config(batch.get_config())
    assert restored.test_statistics == "batch"


def test_the_models_batch_norm_layers_take_the_runs_statistics():
    model = build_model("cifar10", "cnn", seed=0, bn_statistics="batch")
    layers = [layer for layer in model.layers if isinstance(layer, StableBatchNormalization)]
    assert len(layers) == 3 and all(layer.test_statistics == "batch" for layer in layers)


@pytest.mark.once
def test_kuangliu_std_and_black_crop_padding(cifar10):
    text = RunConfig(dataset="cifar10", model="resnet50")
    code = text.replace(normalization_std="kuangliu", crop_fill="black")
    mean, std = input_normalization(code, cifar10)
    np.testing.assert_allclose(std, [0.2023, 0.1994, 0.2010], rtol=1e-6)
    np.testing.assert_allclose(input_normalization(text, cifar10)[1], [0.2470, 0.2435, 0.2616],
                               rtol=1e-6)
    assert crop_fill(text, (mean, std)) is None
    fill = crop_fill(code, (mean, std))
    np.testing.assert_allclose(fill, -mean / std, rtol=1e-6)
    # A crop's padded border holds black (pixel 0 normalised), not the mean colour.
    train_data, _, _ = make_pipelines(cifar10, 256, seed=0, epochs=1, max_examples=256,
                                      normalization=(mean, std), augment=True,
                                      pipeline="numpy", crop_fill=fill)
    images = train_data[0][0]
    black = np.all(np.abs(images - fill) < 1e-6, axis=-1)
    assert black.any() and black.mean() < 0.5
    plain, _, _ = make_pipelines(cifar10, 256, seed=0, epochs=1, max_examples=256,
                                 normalization=(mean, std), augment=True, pipeline="numpy")
    zero = np.all(plain[0][0] == 0, axis=-1)
    # The same crops, the padding now black; only truly black pixels add to it.
    assert zero.any() and np.all(black[zero]) and (black & ~zero).mean() < 0.01


@pytest.mark.parametrize("pipeline", ["device",
                                      pytest.param("tf", marks=pytest.mark.needs_tensorflow)])
def test_every_pipeline_pads_crops_with_the_fill(cifar10, pipeline):
    normalization = input_normalization(RunConfig(dataset="cifar10", model="resnet50"), cifar10)
    fill = (-normalization[0] / normalization[1]).astype(np.float32)
    kwargs = dict(batch_size=128, seed=0, epochs=1, max_examples=128,
                  normalization=normalization, augment=True, crop_fill=fill)
    train_data, _, _ = make_pipelines(cifar10, pipeline=pipeline, **kwargs)
    images = numpy(next(iter(train_data))[0]) if pipeline == "tf" else numpy(train_data[0][0])
    padded = np.all(np.abs(images - fill) < 1e-6, axis=-1)
    assert padded.any()
    if pipeline == "device":  # the NumPy pipeline's draws, bit for bit
        reference, _, _ = make_pipelines(cifar10, pipeline="numpy", **kwargs)
        np.testing.assert_array_equal(images, reference[0][0])


@pytest.mark.slow
@pytest.mark.once
def test_the_runner_says_when_the_protocol_sets_the_epochs(tmp_path, mnist, capsys):
    from kzero.grid import run_grid

    grid = Grid.make(protocol="paper_code", model=("logreg", "fnn"), scheme=("lecun",), runs=1,
                     experiment="mnist_logreg",
                     epochs=15, max_examples=8000, holdout=0, output_dir=str(tmp_path),
                     record_gradients=False, record_symmetry=False)
    run, other = run_grid(grid, arrays=mnist, verbose=0)
    # Each model's epochs: what the protocol imposes on the one is not the other's.
    assert (run.epochs, other.epochs) == (10, 15)
    assert ("kzero: --protocol=paper_code trains logreg on mnist for 10 epochs, not "
            "--epochs=15") in capsys.readouterr().out
    assert len(read_rows(os.path.join(tmp_path, "mnist_logreg", run.variant, "seed_0",
                                      "metrics.csv"))) == 10
