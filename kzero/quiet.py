"""TensorFlow, where it is imported at all, without its C++ start-up lines.

TensorFlow's native start-up lines (oneDNN, the CUDA stub, and cuInit's
failure on a machine without a GPU, logged when the devices are first listed)
go to the process's stderr before TF_CPP_MIN_LOG_LEVEL takes effect, so kzero
imports TensorFlow itself and lists its devices, with file descriptor 2
pointed at /dev/null for both. Under jax and torch, Keras imports TensorFlow when it saves a model,
wherever TensorFlow is installed (its serializer checks for tf.TensorShape):
kzero imports it first, quietly. Only the native lines are silenced: Python
exceptions are not, and an installation that fails to import counts as none,
as it does for Keras.
"""

import contextlib
import importlib.util
import logging
import os
import sys

__all__ = ["absl_warnings_off", "has_tensorflow", "import_tensorflow"]


def has_tensorflow():
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except ImportError:
        return False


@contextlib.contextmanager
def _native_stderr_to_devnull():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow():
    """The `tensorflow` module, imported now if it is not yet, or None where
    it is not installed or does not import (as Keras treats it)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    if not has_tensorflow():
        return None
    try:
        with _native_stderr_to_devnull():
            import tensorflow
            tensorflow.config.list_physical_devices()
    except ImportError:
        return None
    return tensorflow


@contextlib.contextmanager
def absl_warnings_off():
    """tensorflow-datasets warns through absl about the metadata of datasets it
    has not prepared yet ("Variant folder ... has no dataset_info.json"),
    which says nothing a kzero user can act on."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
