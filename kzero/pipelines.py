"""Input pipelines: tf.data, NumPy (no TensorFlow needed) and device (the
NumPy pipeline's batches made where the backend keeps its tensors), all giving
the same batches; the epoch order and the ResNet's crop-and-flip augmentation.

Every pipeline reads arrays as `kzero.datasets.load_dataset` returns them and
gives float32 images [B, H, W, C] scaled to [0, 1] (then normalised where
asked) and int32 labels.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from kzero.config import PIPELINES
from kzero.quiet import has_tensorflow, import_tensorflow

__all__ = ["PIPELINES", "count_steps", "epoch_order", "make_pipelines", "pad_crop_flip",
           "pad_crop_flip_device", "pad_crop_flip_numpy", "probe_batch", "resolve_pipeline",
           "make_eval_pipeline", "split_holdout"]


# The paper's ResNet-50 augmentation: pad by 4, crop back to 32x32.
CROP_PAD = 4


def pad_crop_flip(images, seed, pad=CROP_PAD, fill=None):
    """Per image: pad by `pad` with `fill` (per channel; default 0), crop back
    to the original size at a random offset, flip left-right with probability
    1/2. `images` is a float batch [B, H, W, C]; `seed` a stateless seed of
    shape [2]. Works on a whole batch at once, so it is cheap enough to never
    starve the model."""
    import tensorflow as tf

    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    offsets = tf.random.stateless_uniform([batch, 2], crop_seed, 0, 2 * pad + 1, tf.int32)
    padding = [[0, 0], [pad, pad], [pad, pad], [0, 0]]
    padded = tf.pad(images, padding)
    if fill is not None:
        inside = tf.pad(tf.ones_like(images, tf.bool), padding)
        padded = tf.where(inside, padded, tf.constant(fill, images.dtype))
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


def pad_crop_flip_numpy(images, rng, pad=CROP_PAD, fill=None):
    """`pad_crop_flip` in NumPy, drawing from the generator `rng`: the same
    augmentation (not the same random draws) for the TensorFlow-free pipeline."""
    batch, height, width = images.shape[:3]
    rows, cols = _crop_indices(rng, batch, height, width, pad)
    padded = _pad(np, images, pad, fill)
    return padded[np.arange(batch)[:, None, None], rows[:, :, None], cols[:, None, :]]


def pad_crop_flip_device(images, rng, pad=CROP_PAD, fill=None):
    """`pad_crop_flip_numpy` on a backend tensor, where it lives (the
    accelerator), with the same draws from `rng`: only the crop's indices, a
    few hundred integers, are made on the host, and one gather does the rest."""
    rows, cols = _crop_indices(rng, *images.shape[:3], pad)
    return _crop_on_device(images, rows, cols, pad, fill)


def _pad(ops, images, pad, fill):
    """`images` [B, H, W, C] padded by `pad` pixels with `fill` per channel
    (None: 0), exactly: the padding is selected, not added to the image."""
    padding = [(0, 0), (pad, pad), (pad, pad), (0, 0)]
    padded = ops.pad(images, padding)
    if fill is None:
        return padded
    inside = ops.pad(ops.ones_like(images, dtype="bool"), padding)
    return ops.where(inside, padded, np.asarray(fill, np.float32))


def _crop_on_device(images, rows, cols, pad, fill=None):
    import keras

    ops = keras.ops
    batch, height, width, channels = images.shape
    padded_height, padded_width = height + 2 * pad, width + 2 * pad
    flat = (ops.arange(batch, dtype="int32")[:, None, None] * (padded_height * padded_width)
            + ops.convert_to_tensor(rows, "int32")[:, :, None] * padded_width
            + ops.convert_to_tensor(cols, "int32")[:, None, :])
    padded = _pad(ops, images, pad, fill)
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


def _finish(images, normalization):
    """From float32 images in [0, 1] to model inputs: a channel axis for
    grayscale batches [B, H, W], then `(images - mean) / std` where
    `normalization` is `(mean, std)`. Plain arithmetic, so the same code serves
    NumPy arrays and TensorFlow tensors."""
    if len(images.shape) == 3:
        images = images[..., None]
    if normalization is not None:
        mean, std = normalization
        images = (images - mean) / std
    return images


def epoch_order(seed, epoch, n, order="epoch"):
    """The order of the training examples in `epoch`: a function of (seed,
    epoch) alone, so a resumed run sees the same batches as an uninterrupted
    one. With `order="fixed"`, every epoch has epoch 0's order."""
    return np.random.default_rng([seed, epoch if order == "epoch" else 0]).permutation(n)


def split_holdout(arrays, holdout, seed, max_examples=None):
    """`arrays` with `holdout` random training examples moved to `x_holdout`
    and `y_holdout`, drawn from the run's seed, as `torch.utils.data.random_split`
    draws the paper code's validation split: a random permutation, the first
    part kept for training in that order, the last `holdout` held out.
    `max_examples` limits the training split first."""
    x, y = arrays["x_train"][:max_examples], arrays["y_train"][:max_examples]
    if not holdout:
        return arrays
    if holdout >= len(x):
        raise ValueError(f"holdout={holdout} leaves no training examples of the {len(x)}")
    permutation = np.random.default_rng([seed, len(x), holdout]).permutation(len(x))
    kept, held = permutation[:-holdout], permutation[-holdout:]
    return {**arrays, "x_train": x[kept], "y_train": y[kept],
            "x_holdout": x[held], "y_holdout": y[held]}


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


def make_pipelines(arrays, batch_size, seed, epochs, initial_epoch=0, normalization=None,
                   augment=False, max_examples=None, pipeline="auto", order="epoch",
                   crop_fill=None):
    """Returns `(train, steps_per_epoch, test)`: input pipelines of (float32
    images [B, H, W, C] scaled to [0, 1], int32 labels) and the number of
    training batches per epoch.

    `train` yields the batches of epochs `initial_epoch` .. `epochs - 1` back
    to back, so `model.fit` must get `steps_per_epoch` (it then keeps one
    iterator across epochs). Each epoch's order comes from `epoch_order`, and
    each batch's augmentation from a seed (seed, global batch index): a run is
    reproducible from its seed and can resume at any epoch.

    `normalization`, a per-channel `(mean, std)` pair (see
    `kzero.datasets.DatasetSpec.normalization`), subtracts the mean and
    divides by the std;
    `augment` adds pad-4 random crops and horizontal flips to the training
    split only, padded with `crop_fill` (a per-channel model input; default 0).
    `order` is "epoch" or "fixed" (see `epoch_order`).
    `max_examples` keeps the first N examples of each split.
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
    # A run resumed with every epoch done (its checkpoint holds them all)
    # trains none, but `fit` still takes data: one epoch's, never read.
    orders = np.stack([epoch_order(seed, epoch, len(x), order)
                       for epoch in range(initial_epoch, max(epochs, initial_epoch + 1))]
                      ).astype(np.int32)
    if pipeline == "tf":
        train, test = _tf_pipelines(x, y, test_x, test_y, orders, batch_size, seed,
                                    steps_per_epoch, initial_epoch, normalization, augment,
                                    crop_fill)
    else:
        train, test = _pydataset_pipelines(x, y, test_x, test_y, orders, batch_size, seed,
                                           initial_epoch, normalization, augment,
                                           on_device=pipeline == "device", crop_fill=crop_fill)
    return train, steps_per_epoch, test


def make_eval_pipeline(x, y, batch_size, normalization=None, pipeline="auto"):
    """An evaluation pipeline over `(x, y)` in order, unaugmented, as
    `make_pipelines` makes the test split's."""
    pipeline = resolve_pipeline(pipeline)
    if pipeline == "tf":
        return _tf_pipelines(x[:1], y[:1], x, y, np.zeros((1, 1), np.int32), batch_size, 0,
                             1, 0, normalization, False, None)[1]
    return _pydataset_pipelines(x[:1], y[:1], x, y, np.zeros((1, 1), np.int32), batch_size, 0,
                                0, normalization, False, on_device=pipeline == "device")[1]


def _tf_pipelines(x, y, test_x, test_y, orders, batch_size, seed, steps_per_epoch,
                  initial_epoch, normalization, augment, crop_fill):
    tf = import_tensorflow()

    def preprocess(images, labels):
        images = _finish(tf.cast(images, tf.float32) / 255.0, normalization)
        return images, tf.cast(labels, tf.int32)

    images, labels = tf.constant(x), tf.constant(y)
    train = (tf.data.Dataset.from_tensor_slices(orders)
             .flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
             .map(lambda index: preprocess(tf.gather(images, index), tf.gather(labels, index)),
                  num_parallel_calls=tf.data.AUTOTUNE))
    if augment:
        train = train.enumerate(start=initial_epoch * steps_per_epoch).map(
            lambda step, batch: (
                pad_crop_flip(batch[0], tf.stack([tf.constant(seed, tf.int64), step]),
                              fill=crop_fill),
                batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE)
    test = tf.data.Dataset.from_tensor_slices((test_x, test_y)).batch(batch_size)
    test = test.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    return train.prefetch(tf.data.AUTOTUNE), test.prefetch(tf.data.AUTOTUNE)


def _host_batches(normalization, crop_fill):
    """`(load, make)`: how the NumPy pipeline holds the arrays (as they are)
    and makes a batch from them with NumPy."""
    def make(images, labels, index, rng):
        images = _finish(images[index].astype(np.float32) / 255.0, normalization)
        if rng is not None:
            images = pad_crop_flip_numpy(images, rng, fill=crop_fill)
        return images.astype(np.float32), labels[index].astype(np.int32)

    return (lambda array: array), make


def _device_batches(normalization, crop_fill):
    """`(load, make)` of the device pipeline: the arrays held as backend
    tensors, and the NumPy pipeline's batches made from them where they live;
    only the batch's indices go there from the host."""
    import keras

    ops = keras.ops
    # Every pixel value's model input per channel, made by the NumPy pipeline's
    # own arithmetic: a lookup on the device then gives the same floats bit for
    # bit (XLA's division on a CPU is not exactly rounded).
    levels = _finish(np.arange(256, dtype=np.float32)[:, None, None] / 255.0, normalization)
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
            images = _crop_on_device(images, rows, cols, CROP_PAD, crop_fill)
        return images, ops.cast(ops.take(labels, index, axis=0), "int32")

    def make(images, labels, index, rng):
        rows = cols = None
        if rng is not None:
            rows, cols = (i.astype(np.int32) for i in
                          _crop_indices(rng, len(index), *images.shape[1:3], CROP_PAD))
        return gather(images, labels, np.asarray(index, np.int32), rows, cols)

    return ops.convert_to_tensor, make


def _pydataset_pipelines(x, y, test_x, test_y, orders, batch_size, seed, initial_epoch,
                         normalization, augment, on_device, crop_fill=None):
    import keras

    load, make = (_device_batches if on_device else _host_batches)(normalization, crop_fill)

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


def probe_batch(arrays, size, normalization=None):
    """The first `size` training examples, preprocessed as for training but not
    augmented, as numpy `(x, y)`: a fixed batch for diagnostics."""
    images = arrays["x_train"][:size].astype(np.float32) / 255.0
    return (_finish(images, normalization).astype(np.float32),
            arrays["y_train"][:size].astype(np.int32))
