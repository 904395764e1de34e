"""kzero: zero weights + random biases, a Keras 3 multi-backend reproduction
of "Training neural network with zero weight initialization", and a toolkit
to extend it.

    import kzero

    model = kzero.build_model("mnist", "cnn", scheme="zero_normal", seed=0)
    kzero.apply_scheme(my_keras_model, "zero_normal", bias_scale=1.0, seed=0)
    kzero.check_init(my_keras_model, x, y)  # before training: what the init lets through
    model, summary = kzero.train(kzero.RunConfig(dataset="mnist", model="fnn",
                                                 scheme="zero_normal", bias_scale=1.0),
                                 "runs/mine")

Importing kzero registers its serializable Keras classes (initializers and
layers), so models it saved load with `keras.saving.load_model`.
"""

__version__ = "0.7.0"

import os  # noqa: E402

# TensorFlow's C++ logging, where it is imported at all.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _keras_backend_is_tensorflow():
    """Keras' own rule, read before Keras is imported: $KERAS_BACKEND, else
    keras.json's "backend", else tensorflow."""
    import json

    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"] == "tensorflow"
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return json.load(f).get("backend", "tensorflow") == "tensorflow"
    except (OSError, ValueError):
        return True


if _keras_backend_is_tensorflow():
    from kzero.quiet import import_tensorflow  # noqa: E402

    import_tensorflow()  # before Keras imports it, with its start-up lines

from kzero import initializers, layers  # noqa: E402,F401  registers the Keras classes
from kzero.config import ConfigError, Grid, Provenance, RunConfig  # noqa: E402
from kzero.datasets import (DATASETS, DataError, DatasetSpec, get_dataset,  # noqa: E402
                            load_dataset, register_dataset)
from kzero.initializers import (SCHEMES, FanInUniform, FixupNormal,  # noqa: E402
                                NumpyGlorotUniform, NumpyNormal, NumpyUniform, Scheme,
                                apply_scheme, get_scheme, ZerOHadamard, register_scheme, small_normal_scheme)
from kzero.initcheck import check_init, init_warning  # noqa: E402
from kzero.layers import (PadChannels, ScalarBias, ScalarScale,  # noqa: E402
                          StableBatchNormalization, recompute_moving_statistics)
from kzero.models import (ACTIVATIONS, MODELS, LayerFactory, ModelSpec,  # noqa: E402
                          build_model, register_model)
from kzero.optimizers import OPTIMIZERS, register_optimizer  # noqa: E402
from kzero.protocols import PROTOCOLS, Protocol, register_protocol  # noqa: E402
from kzero.train import train  # noqa: E402
from kzero.grid import run_grid  # noqa: E402

__all__ = ["ACTIVATIONS", "ConfigError", "DATASETS", "DataError",
           "DatasetSpec", "FanInUniform", "FixupNormal", "Grid", "LayerFactory", "MODELS", "ModelSpec",
           "NumpyGlorotUniform", "NumpyNormal", "NumpyUniform", "OPTIMIZERS", "PROTOCOLS",
           "PadChannels", "Protocol", "Provenance", "RunConfig", "SCHEMES", "ScalarBias", "ScalarScale", "Scheme",
           "StableBatchNormalization", "ZerOHadamard",
           "apply_scheme", "build_model", "check_init",
           "get_dataset", "get_scheme", "init_warning", "initializers", "layers", "load_dataset",
           "recompute_moving_statistics",
           "register_dataset", "register_model", "register_optimizer", "register_protocol",
           "register_scheme", "run_grid", "small_normal_scheme", "train"]


def __getattr__(name):
    # The layer's former public name, which shadowed Keras' own layer under
    # `from kzero import *`: still reachable, never exported.
    if name == "BatchNormalization":
        import warnings

        warnings.warn("kzero.BatchNormalization is now kzero.StableBatchNormalization",
                      DeprecationWarning, stacklevel=2)
        return StableBatchNormalization
    raise AttributeError(f"module 'kzero' has no attribute {name!r}")
