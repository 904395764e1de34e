"""MNIST and CIFAR-10: loading, checking, and input pipelines (tf.data, or
NumPy where TensorFlow is not installed).

Sources, in order: a directory holding `mnist.npz` / `cifar10.npz` in the
`keras.datasets` layout (`--data_dir`, else `$KZERO_DATA_DIR`), then
tensorflow-datasets (which downloads). Local files are looked for first because
an offline `tfds.load` retries for minutes before it fails.
"""

import importlib.util
import os
import socket
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["DataError", "DATASETS", "PIPELINES", "epoch_order", "load_arrays",
           "make_pipelines", "pad_crop_flip", "pad_crop_flip_device", "pad_crop_flip_numpy",
           "probe_batch"]

DATA_DIR_ENV = "KZERO_DATA_DIR"


class DataError(Exception):
    """A dataset that cannot be found or read; the message is one line that
    names the file and the fix."""


class _Spec:
    def __init__(self, image_shape, tfds_name, download_host, mean, std):
        self.image_shape = image_shape
        self.tfds_name = tfds_name
        self.download_host = download_host
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)


DATASETS = {
    "mnist": _Spec((28, 28), "mnist", "storage.googleapis.com", [0.1307], [0.3081]),
    # Per-channel train-set statistics (shared/data/README.md).
    "cifar10": _Spec((32, 32, 3), "cifar10", "www.cs.toronto.edu",
                     [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
}

_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _check_arrays(arrays, dataset, source):
    spec = DATASETS[dataset]
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.shape[1:] != spec.image_shape:
            raise DataError(
                f"{source}: x_{split} is {x.dtype}{list(x.shape)}, expected uint8"
                f"[N, {', '.join(map(str, spec.image_shape))}] (keras.datasets layout)"
            )
        if y.shape != (len(x),):
            raise DataError(
                f"{source}: y_{split} has shape {list(y.shape)}, expected [{len(x)}]"
            )
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise DataError(
                f"{source}: y_{split} holds labels outside 0..9 "
                f"({int(y.min())}..{int(y.max())})"
            )


def _load_npz(path, dataset):
    try:
        with np.load(path) as npz:
            missing = [k for k in _KEYS if k not in npz.files]
            if missing:
                raise DataError(f"{path}: missing arrays {', '.join(missing)}"
                                " (keras.datasets layout expected)")
            arrays = {k: npz[k] for k in _KEYS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: unreadable or truncated npz ({e}); "
                        "replace it with a good copy") from None
    arrays["y_train"] = arrays["y_train"].reshape(-1)
    arrays["y_test"] = arrays["y_test"].reshape(-1)
    _check_arrays(arrays, dataset, path)
    return arrays


def _can_reach(host, port=443, timeout=3.0):
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_tfds(dataset):
    spec = DATASETS[dataset]
    hint = (f"no local {dataset}.npz: pass --data_dir=DIR (or set {DATA_DIR_ENV}) "
            f"to a directory holding {dataset}.npz in the keras.datasets layout")
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(f"{hint}, or install tensorflow-datasets to download it") from None
    builder = tfds.builder(spec.tfds_name)
    if not builder.is_prepared() and not _can_reach(spec.download_host):
        raise DataError(f"{hint}; tensorflow-datasets cannot download it "
                        f"({spec.download_host} is unreachable)")
    builder.download_and_prepare()
    arrays = {}
    for split in ("train", "test"):
        data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        arrays[f"x_{split}"] = data["image"].reshape((-1,) + spec.image_shape)
        arrays[f"y_{split}"] = data["label"].astype(np.uint8)
    _check_arrays(arrays, dataset, f"tensorflow-datasets {spec.tfds_name}")
    return arrays


def resolve_data_dir(data_dir=None):
    """The directory to read npz files from: the flag, else the environment."""
    return data_dir or os.environ.get(DATA_DIR_ENV) or None


def load_arrays(dataset, data_dir=None):
    """Returns {x_train, y_train, x_test, y_test} as numpy arrays, images uint8
    in the `keras.datasets` layout, labels 0..9.

    Raises `DataError` with a one-line message when no source works.
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    data_dir = resolve_data_dir(data_dir)
    if data_dir:
        path = os.path.join(data_dir, f"{dataset}.npz")
        if not os.path.isfile(path):
            raise DataError(f"{path} not found: put {dataset}.npz (keras.datasets layout) "
                            f"there, or unset --data_dir/{DATA_DIR_ENV} to download it")
        return _load_npz(path, dataset)
    return _load_tfds(dataset)


# The paper's ResNet-50 augmentation: pad by 4, crop back to 32x32.
CROP_PAD = 4


def pad_crop_flip(images, seed, pad=CROP_PAD):
    """Per image: zero-pad by `pad`, crop back to the original size at a random
    offset, flip left-right with probability 1/2. `images` is a float batch
    [B, H, W, C]; `seed` a stateless seed of shape [2]. Works on a whole batch at
    once, so it is cheap enough to never starve the model."""
    import tensorflow as tf

    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    offsets = tf.random.stateless_uniform([batch, 2], crop_seed, 0, 2 * pad + 1, tf.int32)
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    rows = offsets[:, :1] + tf.range(height)[None, :]
    cols = offsets[:, 1:] + tf.range(width)[None, :]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    cropped = tf.gather(cropped, cols, axis=2, batch_dims=1)
    flip = tf.random.stateless_uniform([batch], flip_seed) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(cropped, axis=[2]), cropped)


def _crop_indices(rng, batch, height, width, pad):
    """Row and column indices into the zero-padded batch that pad-crop-flip
    each image: [B, H] and [B, W]. A flip is the crop's columns reversed."""
    offsets = rng.integers(0, 2 * pad + 1, size=(batch, 2))
    rows = offsets[:, :1] + np.arange(height)[None, :]
    cols = offsets[:, 1:] + np.arange(width)[None, :]
    flip = rng.random(batch) < 0.5
    cols[flip] = cols[flip, ::-1]
    return rows, cols


def pad_crop_flip_numpy(images, rng, pad=CROP_PAD):
    """`pad_crop_flip` in NumPy, drawing from the generator `rng`: the same
    augmentation (not the same random draws) for the TensorFlow-free pipeline."""
    batch, height, width = images.shape[:3]
    rows, cols = _crop_indices(rng, batch, height, width, pad)
    padded = np.pad(images, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    return padded[np.arange(batch)[:, None, None], rows[:, :, None], cols[:, None, :]]


def pad_crop_flip_device(images, rng, pad=CROP_PAD):
    """`pad_crop_flip_numpy` on a backend tensor, where it lives (the
    accelerator), with the same draws from `rng`: only the crop's indices, a
    few hundred integers, are made on the host, and one gather does the rest."""
    rows, cols = _crop_indices(rng, *images.shape[:3], pad)
    return _crop_on_device(images, rows, cols, pad)


def _crop_on_device(images, rows, cols, pad):
    import keras

    ops = keras.ops
    batch, height, width, channels = images.shape
    padded_height, padded_width = height + 2 * pad, width + 2 * pad
    flat = (ops.arange(batch, dtype="int32")[:, None, None] * (padded_height * padded_width)
            + ops.convert_to_tensor(rows, "int32")[:, :, None] * padded_width
            + ops.convert_to_tensor(cols, "int32")[:, None, :])
    padded = ops.pad(images, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    pixels = ops.reshape(padded, (batch * padded_height * padded_width, channels))
    cropped = ops.take(pixels, ops.reshape(flat, (-1,)), axis=0)
    return ops.reshape(cropped, (batch, height, width, channels))


def _compiled(function):
    """`function` compiled under jax, where a dozen eager ops per batch cost
    more than the batch itself; the other backends run it op by op."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(function)
    return function


def _finish(images, dataset, normalize):
    """From float32 images in [0, 1] to model inputs. Plain arithmetic, so the
    same code serves NumPy arrays and TensorFlow tensors."""
    spec = DATASETS[dataset]
    if len(spec.image_shape) == 2:
        images = images[..., None]
    if normalize:
        images = (images - spec.mean) / spec.std
    return images


def epoch_order(seed, epoch, n):
    """The order of the training examples in `epoch`: a function of (seed,
    epoch) alone, so a resumed run sees the same batches as an uninterrupted one."""
    return np.random.default_rng([seed, epoch]).permutation(n)


PIPELINES = ("auto", "tf", "numpy", "device")


def count_steps(arrays, batch_size, max_examples=None):
    """Training batches per epoch, the last one possibly short."""
    return -(-len(arrays["x_train"][:max_examples]) // batch_size)


def resolve_pipeline(pipeline):
    """"tf", "numpy" or "device" for a `pipeline` of `PIPELINES`. "auto" takes the faster
    one as measured by scripts/bench.py on the MNIST FNN (CPU): tf.data under
    the tensorflow backend, NumPy under jax and torch, which spares them the
    conversion of every TensorFlow batch."""
    import keras

    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}; valid: {', '.join(PIPELINES)}")
    if pipeline != "auto":
        return pipeline
    return "tf" if keras.backend.backend() == "tensorflow" and has_tensorflow() else "numpy"


def has_tensorflow():
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except ImportError:
        return False


def make_pipelines(arrays, dataset, batch_size, seed, epochs, initial_epoch=0,
                   normalize=False, augment=False, max_examples=None, pipeline="auto"):
    """Returns `(train, steps_per_epoch, test)`: input pipelines of (float32
    images [B, H, W, C] scaled to [0, 1], int32 labels) and the number of
    training batches per epoch.

    `train` yields the batches of epochs `initial_epoch` .. `epochs - 1` back
    to back, so `model.fit` must get `steps_per_epoch` (it then keeps one
    iterator across epochs). Each epoch's order comes from `epoch_order`, and
    each batch's augmentation from a seed (seed, global batch index): a run is
    reproducible from its seed and can resume at any epoch.

    `normalize` subtracts the per-channel mean and divides by the std;
    `augment` adds pad-4 random crops and horizontal flips to the training
    split only. `max_examples` keeps the first N examples of each split.
    `pipeline` is "tf" (tf.data), "numpy" (a `keras.utils.PyDataset`, which
    needs no TensorFlow), "device" (the NumPy pipeline's batches, made from a
    copy of the dataset held as backend tensors, on the accelerator where
    there is one) or "auto" (see `resolve_pipeline`). All give the same
    batches; only tf.data's augmentation draws differently.
    """
    pipeline = resolve_pipeline(pipeline)
    limit = slice(None, max_examples)
    x, y = arrays["x_train"][limit], arrays["y_train"][limit]
    test_x, test_y = arrays["x_test"][limit], arrays["y_test"][limit]
    steps_per_epoch = count_steps(arrays, batch_size, max_examples)
    orders = np.stack([epoch_order(seed, epoch, len(x))
                       for epoch in range(initial_epoch, epochs)]).astype(np.int32)
    if pipeline == "tf":
        train, test = _tf_pipelines(x, y, test_x, test_y, orders, dataset, batch_size, seed,
                                    steps_per_epoch, initial_epoch, normalize, augment)
    else:
        train, test = _pydataset_pipelines(x, y, test_x, test_y, orders, dataset, batch_size,
                                           seed, initial_epoch, normalize, augment,
                                           on_device=pipeline == "device")
    return train, steps_per_epoch, test


def _tf_pipelines(x, y, test_x, test_y, orders, dataset, batch_size, seed, steps_per_epoch,
                  initial_epoch, normalize, augment):
    import tensorflow as tf

    def preprocess(images, labels):
        images = _finish(tf.cast(images, tf.float32) / 255.0, dataset, normalize)
        return images, tf.cast(labels, tf.int32)

    images, labels = tf.constant(x), tf.constant(y)
    train = (tf.data.Dataset.from_tensor_slices(orders)
             .flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
             .map(lambda index: preprocess(tf.gather(images, index), tf.gather(labels, index)),
                  num_parallel_calls=tf.data.AUTOTUNE))
    if augment:
        train = train.enumerate(start=initial_epoch * steps_per_epoch).map(
            lambda step, batch: (
                pad_crop_flip(batch[0], tf.stack([tf.constant(seed, tf.int64), step])),
                batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE)
    test = tf.data.Dataset.from_tensor_slices((test_x, test_y)).batch(batch_size)
    test = test.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    return train.prefetch(tf.data.AUTOTUNE), test.prefetch(tf.data.AUTOTUNE)


def _host_batches(dataset, normalize):
    """`(load, make)`: how the NumPy pipeline holds the arrays (as they are)
    and makes a batch from them with NumPy."""
    def make(images, labels, index, rng):
        images = _finish(images[index].astype(np.float32) / 255.0, dataset, normalize)
        if rng is not None:
            images = pad_crop_flip_numpy(images, rng)
        return images.astype(np.float32), labels[index].astype(np.int32)

    return (lambda array: array), make


def _device_batches(dataset, normalize):
    """`(load, make)` of the device pipeline: the arrays held as backend
    tensors, and the NumPy pipeline's batches made from them where they live;
    only the batch's indices go there from the host."""
    import keras

    ops = keras.ops
    # Every pixel value's model input per channel, made by the NumPy pipeline's
    # own arithmetic: a lookup on the device then gives the same floats bit for
    # bit (XLA's division on a CPU is not exactly rounded).
    levels = _finish(np.arange(256, dtype=np.float32)[:, None, None] / 255.0, dataset, normalize)
    channels = levels.shape[-1]
    table = ops.convert_to_tensor(levels.astype(np.float32).reshape(-1))
    channel = ops.convert_to_tensor(np.arange(channels, dtype=np.int32))

    @_compiled
    def gather(images, labels, index, rows, cols):
        images = ops.cast(ops.take(images, index, axis=0), "int32")
        if len(images.shape) == 3:  # MNIST: no channel axis
            images = ops.expand_dims(images, -1)
        images = ops.take(table, images * channels + channel)
        if rows is not None:
            images = _crop_on_device(images, rows, cols, CROP_PAD)
        return images, ops.cast(ops.take(labels, index, axis=0), "int32")

    def make(images, labels, index, rng):
        rows = cols = None
        if rng is not None:
            rows, cols = (i.astype(np.int32) for i in
                          _crop_indices(rng, len(index), *images.shape[1:3], CROP_PAD))
        return gather(images, labels, np.asarray(index, np.int32), rows, cols)

    return ops.convert_to_tensor, make


def _pydataset_pipelines(x, y, test_x, test_y, orders, dataset, batch_size, seed,
                         initial_epoch, normalize, augment, on_device):
    import keras

    load, make = (_device_batches if on_device else _host_batches)(dataset, normalize)

    class Batches(keras.utils.PyDataset):
        """Batch i is batch i % steps of epoch i // steps, a pure function of i.

        Keras' own prefetching (`workers` > 1) restarts its queue at index 0
        every epoch, which would replay the first epoch's order for ever (and
        racily), so Keras reads this dataset in order from one iterator kept
        across epochs, and the dataset prefetches the next batches itself on
        a small thread pool.
        """

        def __init__(self, x, y, orders, augment, prefetch=0):
            super().__init__()
            self.x, self.y, self.orders, self.augment = load(x), load(y), orders, augment
            self.steps = -(-orders.shape[1] // batch_size)
            self.prefetch = prefetch
            self._pool = ThreadPoolExecutor(2) if prefetch else None
            self._pending = {}

        def __len__(self):
            return len(self.orders) * self.steps

        def batch(self, i):
            steps = self.steps
            index = self.orders[i // steps, (i % steps) * batch_size:][:batch_size]
            rng = (np.random.default_rng([seed, initial_epoch * steps + i])
                   if self.augment else None)
            return make(self.x, self.y, index, rng)

        def __getitem__(self, i):
            if self._pool is None:
                return self.batch(i)
            for ahead in range(i, min(i + self.prefetch + 1, len(self))):
                if ahead not in self._pending:
                    self._pending[ahead] = self._pool.submit(self.batch, ahead)
            for stale in [j for j in self._pending if j < i]:
                del self._pending[stale]
            return self._pending.pop(i).result()

    train = Batches(x, y, orders, augment, prefetch=4)
    test = Batches(test_x, test_y, np.arange(len(test_x))[None], False)
    return train, test


def probe_batch(arrays, dataset, size, normalize=False):
    """The first `size` training examples, preprocessed as for training but not
    augmented, as numpy `(x, y)`: a fixed batch for diagnostics."""
    images = arrays["x_train"][:size].astype(np.float32) / 255.0
    return (_finish(images, dataset, normalize).astype(np.float32),
            arrays["y_train"][:size].astype(np.int32))
