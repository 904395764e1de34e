"""Optimizers by name (`--optimizer`), as Keras optimizers. Each entry is
`make(learning_rate, weight_decay)`; `weight_decay` None means the
optimizer's own default. Keras' weight decay is decoupled (as in AdamW): each
step shrinks every variable by learning_rate * weight_decay."""

import keras

from kzero.registry import Registry

__all__ = ["OPTIMIZERS", "make_optimizer", "register_optimizer"]

OPTIMIZERS = Registry("optimizer")


def register_optimizer(name, make, replace=False):
    """Adds `make(learning_rate, weight_decay)` under `name`; returns it."""
    return OPTIMIZERS.register(name, make, replace=replace)


def _decay(weight_decay):
    # None and 0 both mean no decay: Keras skips the decay step for None.
    return weight_decay or None


# The paper's optimizer, with PyTorch's defaults (the paper's code): eps 1e-8,
# not Keras' 1e-7.
register_optimizer("adam", lambda learning_rate, weight_decay: keras.optimizers.Adam(
    learning_rate=learning_rate, epsilon=1e-8, weight_decay=_decay(weight_decay)))
register_optimizer("sgd", lambda learning_rate, weight_decay: keras.optimizers.SGD(
    learning_rate=learning_rate, weight_decay=_decay(weight_decay)))
register_optimizer("momentum", lambda learning_rate, weight_decay: keras.optimizers.SGD(
    learning_rate=learning_rate, momentum=0.9, weight_decay=_decay(weight_decay)))
# PyTorch's AdamW defaults: eps 1e-8, weight decay 0.01.
register_optimizer("adamw", lambda learning_rate, weight_decay: keras.optimizers.AdamW(
    learning_rate=learning_rate, epsilon=1e-8,
    weight_decay=0.01 if weight_decay is None else weight_decay))


def make_optimizer(name, learning_rate, weight_decay=None):
    return OPTIMIZERS.get(name)(learning_rate, weight_decay)
