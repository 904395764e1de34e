"""Datasets: one `DatasetSpec` per name in `DATASETS`, and loading.

A spec holds what kzero needs to know of a dataset: its loader, image shape,
number of classes, per-channel normalisation and the logistic baseline the
report draws beside it. MNIST and CIFAR-10 are registered; any other
tensorflow-datasets image-classification dataset works by name
(`--dataset=fashion_mnist`), its shape and classes read from the dataset's
own metadata and its normalisation computed from its training images.

Sources, in order: a directory holding `<name>.npz` in the `keras.datasets`
layout (`--data_dir`, else `$KZERO_DATA_DIR`), then tensorflow-datasets
(which downloads). Local files are looked for first because an offline
`tfds.load` retries for minutes before it fails.
"""

import dataclasses
import functools
import os
import pickle
import socket
import tarfile
import tempfile
import urllib.parse
import zipfile
from typing import Callable, Optional

import numpy as np

from kzero.quiet import absl_warnings_off, import_tensorflow
from kzero.registry import Registry

__all__ = ["DATASETS", "DataError", "DatasetSpec", "fetch_dataset", "get_dataset",
           "load_dataset", "register_dataset"]

DATA_DIR_ENV = "KZERO_DATA_DIR"
_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DataError(Exception):
    """A dataset that cannot be found or read; the message is one line that
    names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What kzero knows of a dataset.

    Args:
        name: registry name, and the name of its npz file (`<name>.npz`).
        load: `load(data_dir)` returning `{x_train, y_train, x_test, y_test}`
            as numpy arrays, images uint8 [N, *image_shape], labels integers.
            `data_dir` is the directory from `--data_dir` / `$KZERO_DATA_DIR`,
            or None.
        image_shape: one image as stored, e.g. (28, 28) or (32, 32, 3).
        num_classes: labels are 0 .. num_classes - 1.
        mean, std: per-channel statistics of the training images scaled to
            [0, 1], used where a model asks for normalised inputs (ResNet-50);
            None: computed from the training images when they are loaded.
        baseline: the experiment whose logistic regression the report draws
            into this dataset's figures, or None.
    """

    name: str
    load: Callable[[Optional[str]], dict]
    image_shape: tuple
    num_classes: int
    mean: Optional[tuple] = None
    std: Optional[tuple] = None
    baseline: Optional[str] = None

    @property
    def input_shape(self):
        """The model's input: images with a channel axis."""
        return tuple(self.image_shape) + (() if len(self.image_shape) == 3 else (1,))

    def normalization(self, arrays):
        """(mean, std) as float32 arrays, one value per channel."""
        if self.mean is not None:
            return np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        images = arrays["x_train"].reshape(-1, self.input_shape[-1]).astype(np.float64) / 255.0
        return images.mean(axis=0).astype(np.float32), images.std(axis=0).astype(np.float32)


DATASETS = Registry("dataset")


def register_dataset(spec, replace=False):
    """Adds a `DatasetSpec` to `DATASETS` (for `--dataset` and
    `load_dataset`); returns it."""
    return DATASETS.register(spec.name, spec, replace=replace)


def _can_reach(host, port=443, timeout=3.0):
    """Whether a TCP connection to host:port opens within `timeout` seconds: an
    offline download then fails at once instead of retrying for minutes."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _no_local_file_hint(name):
    return (f"no local {name}.npz: pass --data_dir=DIR (or set {DATA_DIR_ENV}) "
            f"to a directory holding {name}.npz in the keras.datasets layout")


def _tfds_builder(tfds_name):
    import_tensorflow()
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return None
    return tfds.builder(tfds_name)


def _load_tfds(name, tfds_name, download_host, image_shape):
    with absl_warnings_off():
        return _load_tfds_arrays(name, tfds_name, download_host, image_shape)


def _load_tfds_arrays(name, tfds_name, download_host, image_shape):
    builder = _tfds_builder(tfds_name)
    if builder is None:
        raise DataError(f"{_no_local_file_hint(name)}, or install tensorflow-datasets to "
                        "download it")
    if not builder.is_prepared():
        if not _can_reach(download_host):
            raise DataError(f"{_no_local_file_hint(name)}; tensorflow-datasets cannot "
                            f"download it ({download_host} is unreachable)")
        builder.download_and_prepare()
    import tensorflow_datasets as tfds

    arrays = {}
    for split in ("train", "test"):
        parts = list(tfds.as_numpy(builder.as_dataset(split=split, batch_size=4096)))
        arrays[f"x_{split}"] = np.concatenate([p["image"] for p in parts]).reshape(
            (-1,) + tuple(image_shape))
        arrays[f"y_{split}"] = np.concatenate([p["label"] for p in parts])
    return arrays


def _load_npz(path):
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
    return arrays


def npz_or_tfds(name, tfds_name, download_host, image_shape):
    """The loader of kzero's own datasets: `<data_dir>/<name>.npz` when a data
    dir is given, else tensorflow-datasets' `tfds_name`."""
    def load(data_dir):
        if data_dir:
            path = os.path.join(data_dir, f"{name}.npz")
            if not os.path.isfile(path):
                raise DataError(f"{path} not found: put {name}.npz (keras.datasets layout) "
                                f"there, or unset --data_dir/{DATA_DIR_ENV} to download it")
            return _load_npz(path)
        return _load_tfds(name, tfds_name, download_host, image_shape)

    return load


register_dataset(DatasetSpec(
    "mnist", npz_or_tfds("mnist", "mnist", "storage.googleapis.com", (28, 28)),
    image_shape=(28, 28), num_classes=10, mean=(0.1307,), std=(0.3081,),
    baseline="mnist_logreg"))
register_dataset(DatasetSpec(
    "cifar10", npz_or_tfds("cifar10", "cifar10", "www.cs.toronto.edu", (32, 32, 3)),
    image_shape=(32, 32, 3), num_classes=10,
    # Per-channel statistics of the training images.
    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    baseline="cifar_logreg"))


@functools.lru_cache(maxsize=None)
def _tfds_spec(name):
    """A spec for tensorflow-datasets' `name`, or None when tfds has no such
    image-classification dataset (or is not installed)."""
    try:
        with absl_warnings_off():
            builder = _tfds_builder(name)
            features = builder.info.features if builder is not None else None
    except Exception:  # tfds raises its own DatasetNotFoundError, among others
        return None
    if features is None:
        return None
    image, label = (features[key] if key in features else None for key in ("image", "label"))
    if image is None or label is None or not hasattr(label, "num_classes"):
        return None
    shape = tuple(image.shape)
    if None in shape or len(shape) != 3:
        return None
    # The download host is a guess (tfds tries its own bucket first); it only
    # serves to fail fast offline.
    return DatasetSpec(name, npz_or_tfds(name, name, "storage.googleapis.com", shape),
                       image_shape=shape, num_classes=int(label.num_classes),
                       baseline=f"{name}_logreg")


def get_dataset(name):
    """The `DatasetSpec` registered as `name`, else one made from
    tensorflow-datasets' `name`; a `ValueError` listing the registered names
    if neither exists."""
    if name in DATASETS:
        return DATASETS.get(name)
    spec = _tfds_spec(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}, or the "
                         "name of a tensorflow-datasets image classification dataset")
    return spec


def _check_arrays(arrays, spec, source):
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.shape[1:] != tuple(spec.image_shape):
            raise DataError(
                f"{source}: x_{split} is {x.dtype}{list(x.shape)}, expected uint8"
                f"[N, {', '.join(map(str, spec.image_shape))}] (keras.datasets layout)"
            )
        if y.shape != (len(x),):
            raise DataError(
                f"{source}: y_{split} has shape {list(y.shape)}, expected [{len(x)}]"
            )
        if len(y) and (y.min() < 0 or y.max() >= spec.num_classes):
            raise DataError(
                f"{source}: y_{split} holds labels outside 0..{spec.num_classes - 1} "
                f"({int(y.min())}..{int(y.max())})"
            )


def resolve_data_dir(data_dir=None):
    """The directory to read npz files from: the argument, else the environment."""
    return data_dir or os.environ.get(DATA_DIR_ENV) or None


def load_dataset(name, data_dir=None):
    """Returns {x_train, y_train, x_test, y_test} as numpy arrays: images uint8
    as the spec's `image_shape`, labels 0 .. num_classes - 1.

    Raises `DataError` with a one-line message when no source works.
    """
    try:
        spec = get_dataset(name)
    except ValueError as e:
        raise DataError(str(e)) from None
    data_dir = resolve_data_dir(data_dir)
    arrays = spec.load(data_dir)
    path = os.path.join(data_dir, f"{name}.npz") if data_dir else None
    _check_arrays(arrays, spec, path if path and os.path.isfile(path) else f"dataset {name}")
    return arrays


# Where keras.datasets downloads MNIST and CIFAR-10 from. Keras' mnist.npz is
# already kzero's layout; CIFAR-10 comes as the python-pickle batches.
DOWNLOADS = {"mnist": "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
             "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"}


def _read_cifar10_tarball(path):
    """The arrays of CIFAR-10's python tarball: each batch is a pickled dict of
    b"data" (N x 3072 uint8, channels first) and b"labels"."""
    def batch(tar, member):
        entry = pickle.load(tar.extractfile(f"cifar-10-batches-py/{member}"), encoding="bytes")
        images = entry[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return images, np.asarray(entry[b"labels"], np.uint8)

    with tarfile.open(path) as tar:
        train = [batch(tar, f"data_batch_{i}") for i in range(1, 6)]
        x_test, y_test = batch(tar, "test_batch")
    return dict(x_train=np.concatenate([x for x, _ in train]),
                y_train=np.concatenate([y for _, y in train]), x_test=x_test, y_test=y_test)


def fetch_dataset(name, cache_dir, origin=None):
    """`<cache_dir>/<name>.npz` in the keras.datasets layout, downloaded once
    from `origin` (default: where keras.datasets gets it) for "mnist" or
    "cifar10". Raises `DataError` at once where the origin cannot be reached."""
    path = os.path.join(cache_dir, f"{name}.npz")
    if os.path.isfile(path):
        return path
    if name not in DOWNLOADS:
        raise DataError(f"no download known for {name}; valid: {', '.join(DOWNLOADS)}")
    origin = origin or DOWNLOADS[name]
    url = urllib.parse.urlsplit(origin)
    if url.scheme != "file" and not _can_reach(
            url.hostname, url.port or (443 if url.scheme == "https" else 80)):
        raise DataError(f"cannot download {name}: {url.netloc} is unreachable; set "
                        f"{DATA_DIR_ENV} to a directory holding {name}.npz")
    import keras

    os.makedirs(cache_dir, exist_ok=True)
    try:
        download = keras.utils.get_file(os.path.basename(url.path), origin,
                                        cache_dir=cache_dir, cache_subdir="downloads")
    except Exception as e:  # Keras wraps every fetch failure in a bare Exception
        raise DataError(f"cannot download {name} from {origin} ({e}); set {DATA_DIR_ENV} "
                        f"to a directory holding {name}.npz") from None
    arrays = _load_npz(download) if name == "mnist" else _read_cifar10_tarball(download)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".npz")
    os.close(fd)
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path
