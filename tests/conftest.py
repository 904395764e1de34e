import os

import keras
import pytest

from kzero.datasets import DATA_DIR_ENV, DataError, fetch_dataset, load_dataset
from kzero.quiet import has_tensorflow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_data_dir(environ, shared, cache, origins=None):
    """Where the tests read MNIST and CIFAR-10: $KZERO_DATA_DIR (CI sets it, and
    never downloads), else the shared data beside the checkout, else a cache
    that the first run fills by downloading them. Raises `DataError` at once
    where none of these works."""
    wanted = ("mnist", "cifar10")
    given = environ.get(DATA_DIR_ENV)
    if given:
        missing = [n for n in wanted if not os.path.isfile(os.path.join(given, f"{n}.npz"))]
        if missing:
            raise DataError(f"{DATA_DIR_ENV}={given} holds no {missing[0]}.npz: point it at a "
                            "directory holding mnist.npz and cifar10.npz, or unset it to "
                            "download them")
        return given
    if all(os.path.isfile(os.path.join(shared, f"{n}.npz")) for n in wanted):
        return shared
    for name in wanted:
        fetch_dataset(name, cache, (origins or {}).get(name))
    return cache


@pytest.fixture(scope="session")
def data_dir():
    cache = os.environ.get("KZERO_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "kzero", "data")
    try:
        path = find_data_dir(os.environ, os.path.join(REPO, "..", "shared", "data"), cache)
    except DataError as e:
        pytest.fail(f"the tests read the real datasets: {e}")
    return path


@pytest.fixture(scope="session")
def mnist(data_dir):
    return load_dataset("mnist", data_dir)


@pytest.fixture(scope="session")
def cifar10(data_dir):
    return load_dataset("cifar10", data_dir)


@pytest.fixture
def backend():
    return keras.backend.backend()


def pytest_collection_modifyitems(config, items):
    if has_tensorflow():
        return
    skip = pytest.mark.skip(reason="needs TensorFlow, which is not installed here")
    for item in items:
        if item.get_closest_marker("needs_tensorflow"):
            item.add_marker(skip)
