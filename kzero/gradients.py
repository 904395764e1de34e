"""Gradients of the training loss with respect to the trainable variables, for
any Keras backend. This is the only backend-specific code of kzero.

Keras' TensorBoard callback logs weights, never gradients, so the recording
callbacks compute them themselves, on a probe batch.
"""

import keras
import numpy as np

__all__ = ["gradient_function"]


def _jax(model, loss):
    import jax

    def loss_fn(trainable, non_trainable, x, y):
        # Stateless: BN moving statistics come back as a second output, dropped.
        logits, _ = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss(y, logits)

    grad = jax.jit(jax.grad(loss_fn))
    return lambda x, y: grad([v.value for v in model.trainable_variables],
                             [v.value for v in model.non_trainable_variables], x, y)


def _tensorflow(model, loss):
    import tensorflow as tf

    def gradients(x, y):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        return tape.gradient(value, [v.value for v in model.trainable_variables])

    return gradients


def _torch(model, loss):
    import torch

    def gradients(x, y):
        value = loss(y, model(x, training=True))
        return torch.autograd.grad(value, [v.value for v in model.trainable_variables],
                                   allow_unused=True)

    return gradients


_BACKENDS = {"jax": _jax, "tensorflow": _tensorflow, "torch": _torch}


def gradient_function(model, loss=None):
    """Returns `f(x, y)`: the gradients of `loss` (default `model.loss`, the
    compiled one) on the batch `(x, y)` at the model's current weights, as
    numpy arrays in `model.trainable_variables` order.

    The model runs in training mode (BN uses batch statistics, as in the
    update step) but is left unchanged: the BN moving statistics that
    TensorFlow and torch update in place are restored afterwards.
    """
    backend = keras.backend.backend()
    if backend not in _BACKENDS:
        raise NotImplementedError(f"gradients under the {backend} backend")
    loss = model.loss if loss is None else loss
    # The last function made is reused for the same model and loss: under jax
    # it is a compiled program, which the init check and the gradient
    # recorder of a run then share. Only one is kept, since it holds its model.
    global _LAST
    if _LAST is not None and _LAST[0] is model and _LAST[1] is loss:
        return _LAST[2]
    gradients = _BACKENDS[backend](model, loss)

    # jax's stateless call leaves the variables alone; the others update BN
    # moving statistics in place, so they are saved and put back.
    restores_state = backend != "jax"

    def f(x, y):
        x, y = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
        saved = ([keras.ops.copy(v.value) for v in model.non_trainable_variables]
                 if restores_state else [])
        grads = gradients(x, y)
        for variable, value in zip(model.non_trainable_variables, saved):
            variable.assign(value)
        return [np.zeros(v.shape, np.float32) if g is None else keras.ops.convert_to_numpy(g)
                for v, g in zip(model.trainable_variables, grads)]

    _LAST = (model, loss, f)
    return f


_LAST = None
