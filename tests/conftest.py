import os

import keras
import pytest

from kzero.datasets import load_dataset
from kzero.pipelines import has_tensorflow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def data_dir():
    path = os.environ.get("KZERO_DATA_DIR") or os.path.join(REPO, "..", "shared", "data")
    if not os.path.isfile(os.path.join(path, "mnist.npz")):
        pytest.fail(f"the tests read the real datasets: set KZERO_DATA_DIR to a directory "
                    f"holding mnist.npz and cifar10.npz (looked in {path})")
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
