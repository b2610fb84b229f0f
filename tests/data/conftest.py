"""Fixtures of the data-layer tests."""

import os
from pathlib import Path

import numpy as np
import pytest

from jcl import data


def mnist_dir() -> Path:
  """The real MNIST IDX folder: $JCL_MNIST_DIR or ../shared/data/mnist."""
  default = Path(__file__).resolve().parents[2] / '..' / 'shared' / 'data' / ('mnist')
  return Path(os.environ.get('JCL_MNIST_DIR', default))


@pytest.fixture(scope='session')
def real_mnist_dir() -> Path:
  """Skips when real MNIST is absent (fails instead when $CI is set)."""
  path = mnist_dir()
  if (
    not (path / 'train-images-idx3-ubyte.gz').exists()
    and not (path / 'train-images-idx3-ubyte').exists()
  ):
    if os.environ.get('CI'):
      pytest.fail(f'real MNIST not found at {path} (set JCL_MNIST_DIR)')
    pytest.skip(f'real MNIST not found at {path}')
  return path


@pytest.fixture(scope='session')
def sample() -> data.Dataset:
  return data.load_mnist_sample()


def tiny_dataset(
  num_classes: int = 4,
  per_class: int = 10,
  test_per_class: int = 3,
  shape=(6, 6, 1),
  name='tiny',
  seed: int = 0,
) -> data.Dataset:
  """A synthetic uint8 dataset whose every image is unique."""
  rng = np.random.default_rng(seed)

  def make(n_per):
    y = np.repeat(np.arange(num_classes), n_per)
    x = rng.integers(0, 256, size=(len(y),) + shape, dtype=np.uint8)
    x.reshape(len(y), -1)[:, 0] = np.arange(len(y)) % 256  # Distinct rows.
    x.reshape(len(y), -1)[:, 1] = np.arange(len(y)) // 256
    return x, y

  x_train, y_train = make(per_class)
  x_test, y_test = make(test_per_class)
  return data.make_dataset(name, x_train, y_train, x_test, y_test)


@pytest.fixture
def make_tiny():
  """Factory of synthetic datasets: `make_tiny(num_classes=..., ...)`."""
  return tiny_dataset
