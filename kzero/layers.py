"""Layers that Keras has, rewritten where its version breaks under zero init."""

import keras
import numpy as np
from keras import ops

__all__ = ["PadChannels", "ScalarBias", "ScalarScale", "StableBatchNormalization",
           "recompute_moving_statistics"]


@keras.saving.register_keras_serializable(package="kzero")
class BatchNormalization(keras.layers.Layer):
    """Batch normalization over the last axis, with a batch variance that is
    never negative.

    Zero weights make every activation of a layer (nearly) the same for all
    inputs, so the batch variance is (nearly) zero. Keras 3.15's torch backend
    computes it as E[x^2] - E[x]^2, which then rounds to a negative number, and
    1 / sqrt(variance + epsilon) is NaN: the CIFAR CNN with zero weights gives
    NaN from its first step under torch. This layer takes the mean squared
    deviation from the mean (two passes), which is never negative, on every
    backend. Otherwise it is `keras.layers.BatchNormalization(axis=-1)`:
    the same weights (gamma, beta, moving_mean, moving_variance) and update rule.

    Args:
        momentum: momentum of the moving statistics (PyTorch's 0.1 is 0.9 here).
        epsilon: added to the variance before the square root.
        test_statistics: "moving" (Keras' rule) or "batch": outside training
            too, normalise with the batch's own statistics, as a PyTorch model
            never switched to `eval()` does (the paper's code); the moving
            statistics are then still updated in training, and never used.
        exact_mean: centre each channel on its first value before averaging
            (the shifted-data algorithm). The same statistics in exact
            arithmetic, but a channel that is one constant over the batch (a
            zero-kernel conv's output) comes out exactly 0, where the plain
            mean leaves rounding error that 1 / sqrt(epsilon) amplifies.
    """

    def __init__(self, momentum=0.99, epsilon=1e-3, test_statistics="moving", exact_mean=False,
                 **kwargs):
        super().__init__(**kwargs)
        if test_statistics not in ("moving", "batch"):
            raise ValueError(f"test_statistics must be moving or batch; got {test_statistics!r}")
        self.momentum = momentum
        self.epsilon = epsilon
        self.test_statistics = test_statistics
        self.exact_mean = exact_mean

    def build(self, input_shape):
        shape = (input_shape[-1],)
        # Statistics and the affine map stay in float32 under mixed precision,
        # as in Keras' own layer; only the output takes the compute dtype.
        self.gamma = self.add_weight(shape=shape, initializer="ones", name="gamma",
                                     autocast=False)
        self.beta = self.add_weight(shape=shape, initializer="zeros", name="beta",
                                    autocast=False)
        self.moving_mean = self.add_weight(shape=shape, initializer="zeros",
                                           trainable=False, name="moving_mean", autocast=False)
        self.moving_variance = self.add_weight(shape=shape, initializer="ones", trainable=False,
                                               name="moving_variance", autocast=False)

    def call(self, inputs, training=False):
        inputs = ops.cast(inputs, "float32")
        centered = None
        if training or self.test_statistics == "batch":
            axes = list(range(len(inputs.shape) - 1))
            if self.exact_mean:
                first = ops.reshape(inputs, (-1, inputs.shape[-1]))[0]
                shifted = inputs - first
                shift_mean = ops.mean(shifted, axis=axes)
                mean = first + shift_mean
                centered = shifted - shift_mean
            else:
                mean = ops.mean(inputs, axis=axes)
                centered = inputs - mean
            variance = ops.mean(ops.square(centered), axis=axes)
        if training:
            self.moving_mean.assign(
                self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        elif self.test_statistics == "moving":
            mean, variance = self.moving_mean, self.moving_variance
            centered = inputs - mean
        scale = self.gamma * ops.rsqrt(variance + self.epsilon)
        return ops.cast(centered * scale + self.beta, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon,
                "test_statistics": self.test_statistics, "exact_mean": self.exact_mean}


# The public name, which does not shadow Keras' own layer. The class keeps its
# name: a saved model files each layer's weights under its class name, so a
# renamed class would no longer find the weights of the runs saved before.
StableBatchNormalization = BatchNormalization


def recompute_moving_statistics(model, images, batch_size=500):
    """Replaces each batch norm's moving mean and variance by the exact
    statistics of its input over `images`, as the model computes it outside
    training, with its current weights ("precise BN", Wu & Johnson 2021).

    A moving average follows the weights of the last few dozen steps and the
    noise of their batches; a model whose test accuracy with moving
    statistics is far below that with batch statistics may lack only these.
    The batch norms are redone in the model's layer order, so each sees the
    recomputed statistics of those before it; each costs a forward pass
    over `images` up to it, so a deep network takes many. Works on Keras'
    batch norm and kzero's, normalising over the last axis (Keras' default);
    `images` are model inputs, preprocessed as for the model.
    Returns the model.
    """
    if len(images) == 0:
        raise ValueError("recompute_moving_statistics needs at least one image")
    for layer in model.layers:
        if not (hasattr(layer, "moving_mean") and hasattr(layer, "moving_variance")):
            continue
        inputs_of = keras.Model(model.input, layer.input)
        count, mean, squares = 0, 0.0, 0.0  # squares: sum of squared deviations from mean
        for start in range(0, len(images), batch_size):
            values = ops.convert_to_numpy(inputs_of(images[start:start + batch_size],
                                                    training=False))
            values = values.reshape(-1, values.shape[-1]).astype(np.float64)
            batch_mean = values.mean(axis=0)
            batch_squares = ((values - batch_mean) ** 2).sum(axis=0)
            # Chan et al.'s pairwise update: exact in one pass over the batches.
            total = count + len(values)
            delta = batch_mean - mean
            squares = squares + batch_squares + delta ** 2 * count * len(values) / total
            mean = mean + delta * len(values) / total
            count = total
        layer.moving_mean.assign(mean.astype("float32"))
        layer.moving_variance.assign((squares / count).astype("float32"))
    return model


class _LearnedScalar(keras.layers.Layer):
    """One learnable scalar, named `weight_name`, that it combines with
    every element of the input (`_combine`)."""

    weight_name = None

    def __init__(self, initial, **kwargs):
        super().__init__(**kwargs)
        self.initial = float(initial)

    def build(self, input_shape):
        setattr(self, self.weight_name, self.add_weight(
            shape=(1,), name=self.weight_name,
            initializer=keras.initializers.Constant(self.initial)))

    def call(self, inputs):
        return self._combine(inputs, ops.cast(getattr(self, self.weight_name), inputs.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "initial": self.initial}


@keras.saving.register_keras_serializable(package="kzero")
class ScalarBias(_LearnedScalar):
    """Adds one learnable scalar to every element of its input: Fixup's
    scalar biases (Zhang et al. 2019), which stand in for the shifts of the
    batch norms a Fixup network does without.

    Args:
        initial: the scalar's starting value (Fixup: 0).
    """

    weight_name = "bias"

    def __init__(self, initial=0.0, **kwargs):
        super().__init__(initial, **kwargs)

    def _combine(self, inputs, scalar):
        return inputs + scalar


@keras.saving.register_keras_serializable(package="kzero")
class ScalarScale(_LearnedScalar):
    """Multiplies its input by one learnable scalar: Fixup's multiplier
    (starts at 1) or SkipInit's / ReZero's alpha at the end of a residual
    branch (starts at 0, so that each block starts as its shortcut).

    Args:
        initial: the scalar's starting value.
    """

    weight_name = "scale"

    def __init__(self, initial=1.0, **kwargs):
        super().__init__(initial, **kwargs)

    def _combine(self, inputs, scalar):
        return inputs * scalar


@keras.saving.register_keras_serializable(package="kzero")
class PadChannels(keras.layers.Layer):
    """Appends zero channels up to `channels`: the parameter-free shortcut of
    He et al.'s CIFAR ResNets (option A), which Fixup's CIFAR model uses where
    a stage widens.

    Args:
        channels: the channels of the output, at least those of the input.
    """

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)

    def call(self, inputs):
        extra = self.channels - inputs.shape[-1]
        if extra < 0:
            raise ValueError(f"PadChannels({self.channels}) got {inputs.shape[-1]} channels")
        return ops.pad(inputs, [[0, 0]] * (len(inputs.shape) - 1) + [[0, extra]])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}
