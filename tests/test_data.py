import os
import time

import numpy as np
import pytest

from kzero import datasets
from kzero.datasets import DataError, get_dataset, load_dataset
from kzero.pipelines import (epoch_order, make_pipelines, pad_crop_flip, pad_crop_flip_device,
                             pad_crop_flip_numpy)


def cifar_normalization(arrays):
    return get_dataset("cifar10").normalization(arrays)


def batches(dataset):
    """The batches of a tf.data pipeline, or of a NumPy one (a PyDataset), as numpy."""
    if hasattr(dataset, "__getitem__"):
        return [tuple(np.asarray(a) for a in dataset[i]) for i in range(len(dataset))]
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def test_real_files_have_the_keras_layout(mnist, cifar10):
    assert mnist["x_train"].shape == (60000, 28, 28) and mnist["x_test"].shape == (10000, 28, 28)
    assert cifar10["x_train"].shape == (50000, 32, 32, 3)
    # The class-prior accuracy the pure-zero model must reach: class 1 is 1135 of 10000.
    assert np.bincount(mnist["y_test"]).max() == 1135
    assert np.bincount(cifar10["y_test"]).tolist() == [1000] * 10


def test_pipeline_scales_batches_and_labels(mnist):
    train, steps, test = make_pipelines(mnist, batch_size=128, seed=0, epochs=1,
                                        max_examples=300)
    train_batches, test_batches = batches(train), batches(test)
    assert steps == 3 and [len(y) for _, y in train_batches] == [128, 128, 44]
    x, y = test_batches[0]
    assert x.shape == (128, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_allclose(x[..., 0], mnist["x_test"][:128] / 255.0, rtol=1e-6)
    assert x.min() == 0.0 and x.max() == 1.0


def test_training_order_reshuffles_each_epoch_deterministically(mnist):
    train, steps, _ = make_pipelines(mnist, batch_size=100, seed=3, epochs=2,
                                     max_examples=1000)
    labels = np.concatenate([y for _, y in batches(train)])
    first, second = labels[:1000], labels[1000:]
    assert steps == 10 and len(labels) == 2000
    assert not np.array_equal(first, second)
    assert sorted(first) == sorted(second) == sorted(mnist["y_train"][:1000])
    again, _, _ = make_pipelines(mnist, batch_size=100, seed=3, epochs=2,
                                 max_examples=1000)
    np.testing.assert_array_equal(labels, np.concatenate([y for _, y in batches(again)]))


@pytest.mark.needs_tensorflow
def test_a_resumed_pipeline_yields_the_batches_of_the_uninterrupted_one(cifar10):
    kwargs = dict(batch_size=32, seed=5, epochs=3, normalization=cifar_normalization(cifar10), augment=True,
                  max_examples=96, pipeline="tf")
    full, steps, _ = make_pipelines(cifar10, **kwargs)
    resumed, _, _ = make_pipelines(cifar10, initial_epoch=2, **kwargs)
    full_batches, resumed_batches = batches(full), batches(resumed)
    assert len(full_batches) == 3 * steps and len(resumed_batches) == steps
    for (xa, ya), (xb, yb) in zip(full_batches[2 * steps:], resumed_batches):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)  # same crops and flips too


def test_evaluation_sees_unaugmented_normalized_32x32_images(cifar10):
    train, _, test = make_pipelines(cifar10, batch_size=64, seed=0, epochs=1,
                                    normalization=cifar_normalization(cifar10), augment=True, max_examples=128)
    spec = get_dataset("cifar10")
    expected = (cifar10["x_test"][:64] / 255.0 - np.float32(spec.mean)) / np.float32(spec.std)
    x, _ = batches(test)[0]
    assert x.shape == (64, 32, 32, 3)
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)
    for x, _ in batches(train):
        assert x.shape[1:] == (32, 32, 3)


def shifted(image, dy, dx, flip):
    """Reference for one pad-4 crop at offset (dy, dx) of the padded image."""
    padded = np.pad(image, [(4, 4), (4, 4), (0, 0)])
    crop = padded[dy:dy + 32, dx:dx + 32]
    return crop[:, ::-1] if flip else crop


@pytest.mark.needs_tensorflow
def test_pad_crop_flip_is_a_shift_and_flip_of_each_image(cifar10):
    import tensorflow as tf

    images = cifar10["x_train"][:32].astype(np.float32) / 255.0
    out = pad_crop_flip(tf.constant(images), tf.constant([1, 2], tf.int64)).numpy()
    seen = set()
    for image, result in zip(images, out):
        matches = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (0, 1)
                   if np.array_equal(shifted(image, dy, dx, flip), result)]
        assert matches, "an output is not a pad-4 crop (or its mirror) of its input"
        seen.add(matches[0])
    assert len(seen) > 16  # offsets and flips are drawn per image, not per batch


def test_training_augmentation_differs_between_epochs(cifar10):
    # Batch i of an epoch holds example order[i]: compare each example with
    # itself, unaugmented and in the other epoch (CIFAR's labels repeat, so
    # sorting by label could not tell a crop from a reordering).
    kwargs = dict(batch_size=32, seed=0, epochs=2, max_examples=32,
                  normalization=cifar_normalization(cifar10))
    augmented, _, _ = make_pipelines(cifar10, augment=True, **kwargs)
    plain, _, _ = make_pipelines(cifar10, augment=False, **kwargs)
    by_example = {}
    for name, pipeline in (("augmented", augmented), ("plain", plain)):
        for epoch, (x, _) in enumerate(batches(pipeline)):
            by_example[name, epoch] = x[np.argsort(epoch_order(0, epoch, 32))]
    np.testing.assert_array_equal(by_example["plain", 0], by_example["plain", 1])

    def changed(a, b):
        return np.mean([not np.array_equal(x, y) for x, y in zip(a, b)])

    # A crop offset or flip leaves an image unchanged with probability 1/162.
    assert changed(by_example["augmented", 0], by_example["plain", 0]) > 0.8
    assert changed(by_example["augmented", 0], by_example["augmented", 1]) > 0.8


def write_npz(path, **overrides):
    arrays = dict(x_train=np.zeros((20, 28, 28), np.uint8), y_train=np.arange(20) % 10,
                  x_test=np.zeros((10, 28, 28), np.uint8), y_test=np.arange(10))
    arrays.update(overrides)
    np.savez(path, **arrays)


@pytest.mark.parametrize("overrides,message", [
    (dict(x_train=np.zeros((20, 32, 32), np.uint8)), "x_train is uint8\\[20, 32, 32\\]"),
    (dict(x_test=np.zeros((10, 28, 28), np.float32)), "x_test is float32"),
    (dict(y_train=np.arange(20)), "y_train holds labels outside 0..9"),
    (dict(y_test=np.arange(5)), "y_test has shape \\[5\\]"),
])
def test_bad_arrays_name_the_file(tmp_path, overrides, message):
    write_npz(tmp_path / "mnist.npz", **overrides)
    with pytest.raises(DataError, match=f"mnist.npz: {message}"):
        load_dataset("mnist", str(tmp_path))


def test_truncated_npz_names_the_file(tmp_path, data_dir):
    with open(os.path.join(data_dir, "mnist.npz"), "rb") as f:
        (tmp_path / "mnist.npz").write_bytes(f.read(100_000))
    with pytest.raises(DataError, match="mnist.npz: unreadable or truncated"):
        load_dataset("mnist", str(tmp_path))


def test_missing_file_in_data_dir_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match=r"cifar10.npz not found: put cifar10.npz"):
        load_dataset("cifar10", str(tmp_path))


@pytest.mark.needs_tensorflow
def test_no_local_file_and_no_network_fails_fast(tmp_path, monkeypatch):
    monkeypatch.delenv(datasets.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(datasets, "_can_reach", lambda host, **kw: False)
    start = time.perf_counter()
    with pytest.raises(DataError) as error:
        load_dataset("mnist")
    assert time.perf_counter() - start < 30
    message = str(error.value)
    assert "--data_dir" in message and "KZERO_DATA_DIR" in message
    assert "tensorflow-datasets cannot download" in message and "\n" not in message


def test_environment_variable_is_a_source(monkeypatch, data_dir):
    monkeypatch.setenv(datasets.DATA_DIR_ENV, data_dir)
    assert load_dataset("mnist")["x_test"].shape == (10000, 28, 28)


@pytest.mark.needs_tensorflow
@pytest.mark.parametrize("normalize", [False, True])
def test_numpy_and_tf_pipelines_give_the_same_batches(cifar10, normalize):
    kwargs = dict(batch_size=48, seed=2, epochs=2, max_examples=100,
                  normalization=cifar_normalization(cifar10) if normalize else None)
    tf_train, steps, tf_test = make_pipelines(cifar10, pipeline="tf", **kwargs)
    np_train, np_steps, np_test = make_pipelines(cifar10, pipeline="numpy", **kwargs)
    assert steps == np_steps == 3 and len(np_train) == 2 * steps
    np_batches = [np_train[i] for i in range(len(np_train))]
    for (xa, ya), (xb, yb) in zip(batches(tf_train), np_batches, strict=True):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_allclose(xa, xb, rtol=1e-6, atol=1e-6)
        assert xb.dtype == np.float32 and yb.dtype == np.int32
    for (xa, ya), i in zip(batches(tf_test), range(len(np_test)), strict=True):
        np.testing.assert_array_equal(ya, np_test[i][1])
        np.testing.assert_allclose(xa, np_test[i][0], rtol=1e-6, atol=1e-6)


def test_numpy_pad_crop_flip_is_a_shift_and_flip_of_each_image(cifar10):
    images = cifar10["x_train"][:32].astype(np.float32) / 255.0
    out = pad_crop_flip_numpy(images, np.random.default_rng(0))
    seen = set()
    for image, result in zip(images, out):
        matches = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (0, 1)
                   if np.array_equal(shifted(image, dy, dx, flip), result)]
        assert matches
        seen.add(matches[0])
    assert len(seen) > 16


def test_a_resumed_numpy_pipeline_yields_the_batches_of_the_uninterrupted_one(cifar10):
    kwargs = dict(batch_size=32, seed=5, epochs=3, normalization=cifar_normalization(cifar10), augment=True,
                  max_examples=96, pipeline="numpy")
    full, steps, _ = make_pipelines(cifar10, **kwargs)
    resumed, _, _ = make_pipelines(cifar10, initial_epoch=2, **kwargs)
    assert len(resumed) == steps
    for i in range(steps):
        for a, b in zip(full[2 * steps + i], resumed[i]):
            np.testing.assert_array_equal(a, b)


def test_fit_reads_every_epoch_of_a_numpy_pipeline(mnist, monkeypatch):
    import keras

    train, steps, _ = make_pipelines(mnist, batch_size=100, seed=0, epochs=3,
                                     max_examples=1000, pipeline="numpy")
    computed = []
    batch = type(train).batch
    monkeypatch.setattr(type(train), "batch", lambda self, i: computed.append(i) or batch(self, i))
    inputs = keras.Input((28, 28, 1))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train, epochs=3, steps_per_epoch=steps, verbose=0, shuffle=False)
    # Each epoch reads its own batches (Keras' worker queue would restart at
    # batch 0 every epoch and replay the first epoch's order).
    assert sorted(set(computed)) == list(range(3 * steps))


@pytest.mark.parametrize("dataset,normalize,augment", [("mnist", False, False),
                                                       ("cifar10", True, True)])
def test_device_pipeline_gives_the_numpy_pipelines_batches_bit_for_bit(
        mnist, cifar10, dataset, normalize, augment):
    import keras

    arrays = {"mnist": mnist, "cifar10": cifar10}[dataset]
    kwargs = dict(batch_size=48, seed=4, epochs=2, augment=augment, max_examples=100,
                  normalization=cifar_normalization(arrays) if normalize else None)
    np_train, steps, np_test = make_pipelines(arrays, pipeline="numpy", **kwargs)
    dev_train, _, dev_test = make_pipelines(arrays, pipeline="device", **kwargs)
    assert len(dev_train) == len(np_train) == 2 * steps and len(dev_test) == len(np_test)
    pairs = [(np_train[i], dev_train[i]) for i in range(len(np_train))]
    pairs += [(np_test[i], dev_test[i]) for i in range(len(np_test))]
    for (x, y), (dev_x, dev_y) in pairs:
        assert keras.ops.is_tensor(dev_x)  # made where the backend keeps tensors
        dev_x, dev_y = keras.ops.convert_to_numpy(dev_x), keras.ops.convert_to_numpy(dev_y)
        assert dev_x.dtype == np.float32 and dev_y.dtype == np.int32
        np.testing.assert_array_equal(dev_x, x)
        np.testing.assert_array_equal(dev_y, y)


def test_device_pad_crop_flip_draws_like_the_numpy_one(cifar10):
    import keras

    images = cifar10["x_train"][:64].astype(np.float32) / 255.0
    on_device = pad_crop_flip_device(keras.ops.convert_to_tensor(images),
                                     np.random.default_rng(7))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(on_device),
                                  pad_crop_flip_numpy(images, np.random.default_rng(7)))


# tf.data's batches equal NumPy's to float rounding, the device pipeline's bit for bit.
@pytest.mark.slow
@pytest.mark.parametrize("pipeline,rtol", [
    pytest.param("tf", 1e-5, marks=pytest.mark.needs_tensorflow), ("device", 1e-6)])
def test_pipelines_train_to_the_numpy_pipelines_metrics(tmp_path, mnist, pipeline, rtol):
    from kzero.io import read_csv
    from kzero.train import train

    config = dict(dataset="mnist", model="fnn", scheme="zero_normal", bias_scale=1.0,
                  activation="elu", seed=1, epochs=3, batch_size=128, learning_rate=1e-3,
                  max_examples=1024, record_gradients=False, record_symmetry=False)
    metrics = {}
    for name in ("numpy", pipeline):
        train({**config, "pipeline": name}, str(tmp_path / name), mnist, verbose=0)
        metrics[name] = read_csv(tmp_path / name / "metrics.csv")
    for column in ("loss", "test_loss", "test_accuracy"):
        np.testing.assert_allclose([float(r[column]) for r in metrics[pipeline]],
                                   [float(r[column]) for r in metrics["numpy"]], rtol=rtol)


def cifar10_tarball(path, arrays):
    """CIFAR-10's python tarball, as its site serves it, holding `arrays`."""
    import io
    import pickle
    import tarfile

    def batch(x, y):
        return pickle.dumps({b"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1),
                             b"labels": [int(label) for label in y]})

    parts = {f"data_batch_{i + 1}": batch(arrays["x_train"][i::5], arrays["y_train"][i::5])
             for i in range(5)}
    parts["test_batch"] = batch(arrays["x_test"], arrays["y_test"])
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in parts.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def test_a_fresh_machine_downloads_the_datasets_once_into_the_tests_cache(tmp_path, cifar10,
                                                                         data_dir):
    from conftest import find_data_dir

    # What the download origins serve, as files (no network here).
    small = {k: v[:40] for k, v in cifar10.items()}
    cifar10_tarball(tmp_path / "cifar-10-python.tar.gz", small)
    origins = {"mnist": f"file://{data_dir}/mnist.npz",
               "cifar10": f"file://{tmp_path}/cifar-10-python.tar.gz"}
    cache = tmp_path / "cache"
    found = find_data_dir({}, str(tmp_path / "no_shared"), str(cache), origins)
    assert found == str(cache)
    # The tarball's batches, unpacked to the keras.datasets layout: the same
    # images, in the same order, as the files they were made from.
    loaded = load_dataset("cifar10", found)
    train_order = np.concatenate([np.arange(i, 40, 5) for i in range(5)])
    np.testing.assert_array_equal(loaded["x_train"], small["x_train"][train_order])
    np.testing.assert_array_equal(loaded["y_train"], small["y_train"][train_order])
    np.testing.assert_array_equal(loaded["x_test"], small["x_test"])
    assert load_dataset("mnist", found)["x_train"].shape == (60000, 28, 28)
    # Once there, nothing is fetched again: the origins may be gone.
    assert find_data_dir({}, str(tmp_path / "no_shared"), str(cache), {
        "mnist": "http://127.0.0.1:9/mnist.npz", "cifar10": "http://127.0.0.1:9/c.tar.gz"}) == \
        str(cache)


def test_an_unreachable_download_fails_at_once_with_what_to_do(tmp_path):
    from conftest import find_data_dir

    start = time.perf_counter()
    with pytest.raises(DataError) as error:
        find_data_dir({}, str(tmp_path / "no_shared"), str(tmp_path / "cache"),
                      {"mnist": "http://127.0.0.1:9/mnist.npz"})
    assert time.perf_counter() - start < 30
    assert str(error.value) == ("cannot download mnist: 127.0.0.1:9 is unreachable; set "
                                "KZERO_DATA_DIR to a directory holding mnist.npz")
    with pytest.raises(DataError, match="KZERO_DATA_DIR=/nowhere holds no mnist.npz"):
        find_data_dir({"KZERO_DATA_DIR": "/nowhere"}, str(tmp_path), str(tmp_path))
