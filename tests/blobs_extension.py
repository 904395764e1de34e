"""A study's own dataset, model and init scheme, registered from outside
kzero: imported by tests/test_extension.py, and by the runner through
`--extensions=blobs_extension`."""

import keras
import numpy as np

import kzero


def load_blobs(data_dir):
    """Three classes of 8x8 grayscale noise, each with a bright square in its
    own place: easy to learn, so a model that trains must get it right."""
    rng = np.random.default_rng(0)

    def split(n):
        labels = rng.integers(0, 3, n)
        images = rng.integers(0, 100, (n, 8, 8)).astype(np.uint8)
        for image, label in zip(images, labels):
            image[2 * label:2 * label + 3, 2 * label:2 * label + 3] = 255
        return images, labels

    (x_train, y_train), (x_test, y_test) = split(1024), split(256)
    return dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def tiny_mlp(layers, inputs, num_classes):
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = layers.dense(x, 16, "hidden")
    return layers.dense(x, num_classes, "logits", activate=False)


def zero_half_normal(fan_in, bias_scale, kernel_seed, bias_seed):
    # Drawn by NumPy, so that a seed gives the same weights under every backend.
    return (keras.initializers.Zeros(),
            kzero.NumpyNormal(stddev=0.5 * bias_scale, seed=bias_seed))


kzero.register_dataset(kzero.DatasetSpec("blobs", load_blobs, image_shape=(8, 8), num_classes=3,
                                         baseline="blobs_logreg"), replace=True)
kzero.register_model(kzero.ModelSpec("tiny_mlp", tiny_mlp, "one hidden layer of 16"),
                     replace=True)
kzero.register_scheme(kzero.Scheme("zero_half_normal",
                                   "zero kernels, biases N(0, 0.25) * bias_scale",
                                   zero_half_normal, uses_bias_scale=True), replace=True)
