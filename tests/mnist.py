"""Where the tests find real MNIST: `$JCL_MNIST_DIR`, else `../shared/data/mnist`.

Outside CI a missing folder skips the test; in CI (`CI` set) it fails.
"""

import os
from pathlib import Path

import pytest

MNIST_DIR = Path(
  os.environ.get(
    'JCL_MNIST_DIR', Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data' / 'mnist'
  )
)


def require_mnist() -> str:
  if (
    not (MNIST_DIR / 'train-images-idx3-ubyte.gz').exists()
    and not (MNIST_DIR / 'train-images-idx3-ubyte').exists()
  ):
    message = f'real MNIST not found at {MNIST_DIR} (set JCL_MNIST_DIR)'
    if os.environ.get('CI'):
      pytest.fail(message)
    pytest.skip(message)
  return str(MNIST_DIR)
