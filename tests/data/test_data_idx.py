"""IDX parsing, validation and real MNIST."""

import gzip
import os

import numpy as np
import pytest

from jcl import data
from jcl.data import idx

FILES = (
  'train-images-idx3-ubyte',
  'train-labels-idx1-ubyte',
  't10k-images-idx3-ubyte',
  't10k-labels-idx1-ubyte',
)


def write_mnist_like(directory, compress, n_train=7, n_test=4, seed=0):
  rng = np.random.default_rng(seed)
  arrays = (
    rng.integers(0, 256, (n_train, 5, 4), dtype=np.uint8),
    rng.integers(0, 10, n_train).astype(np.uint8),
    rng.integers(0, 256, (n_test, 5, 4), dtype=np.uint8),
    rng.integers(0, 10, n_test).astype(np.uint8),
  )
  for name, array in zip(FILES, arrays):
    data.write_idx(os.path.join(directory, name + ('.gz' if compress else '')), array)
  return arrays


@pytest.mark.parametrize('compress', [False, True])
def test_load_idx_dir_round_trip(tmp_path, compress):
  x_tr, y_tr, x_te, y_te = write_mnist_like(tmp_path, compress)
  ds = data.load_idx_dir(tmp_path, name='mnist')
  assert ds.name == 'mnist' and ds.num_classes == 10
  assert ds.x_train.shape == (7, 5, 4, 1) and ds.x_train.dtype == np.uint8
  np.testing.assert_array_equal(ds.x_train[..., 0], x_tr)
  np.testing.assert_array_equal(ds.y_train, y_tr)
  np.testing.assert_array_equal(ds.x_test[..., 0], x_te)
  np.testing.assert_array_equal(ds.y_test, y_te)
  assert ds.y_train.dtype == np.int64


def test_mixed_plain_and_gzip_and_dotted_names(tmp_path):
  arrays = write_mnist_like(tmp_path, compress=True)
  os.remove(tmp_path / 'train-images-idx3-ubyte.gz')
  data.write_idx(tmp_path / 'train-images.idx3-ubyte', arrays[0])  # Kaggle.
  ds = data.load_idx_dir(tmp_path)
  np.testing.assert_array_equal(ds.x_train[..., 0], arrays[0])


@pytest.mark.parametrize(
  'array',
  [
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    np.arange(-5, 5, dtype=np.int8),
    np.arange(-6, 6, dtype=np.int16).reshape(3, 4),
    np.arange(-6, 6, dtype=np.int32).reshape(2, 6),
    np.linspace(-1, 1, 10, dtype=np.float32),
    np.linspace(-1, 1, 10, dtype=np.float64).reshape(5, 2),
  ],
)
def test_write_read_dtypes(tmp_path, array):
  data.write_idx(tmp_path / 'a.gz', array)
  out = data.read_idx(tmp_path / 'a.gz')
  assert out.dtype == array.dtype.newbyteorder('=') and out.shape == array.shape
  np.testing.assert_array_equal(out, array)


def test_header_is_big_endian(tmp_path):
  data.write_idx(tmp_path / 'a', np.zeros((3, 258, 2), np.uint8))
  raw = (tmp_path / 'a').read_bytes()
  assert raw[:4] == bytes([0, 0, 0x08, 3])
  assert raw[4:16] == bytes([0, 0, 0, 3, 0, 0, 1, 2, 0, 0, 0, 2])


def _rewrite(path, fn):
  raw = path.read_bytes()
  if path.suffix == '.gz':
    path.write_bytes(gzip.compress(fn(gzip.decompress(raw))))
  else:
    path.write_bytes(fn(raw))


@pytest.mark.parametrize('compress', [False, True])
@pytest.mark.parametrize(
  'case, corrupt, message',
  [
    ('missing', None, 'not found'),
    ('bad_magic', lambda b: b'\x01' + b[1:], 'magic'),
    ('bad_dtype', lambda b: b[:2] + b'\x07' + b[3:], 'dtype code'),
    ('truncated', lambda b: b[:-5], 'truncated'),
    ('truncated_header', lambda b: b[:9], 'truncated'),
    ('trailing', lambda b: b + b'\x00', 'trailing'),
  ],
)
def test_corrupt_files_raise(tmp_path, compress, case, corrupt, message):
  write_mnist_like(tmp_path, compress)
  name = 't10k-images-idx3-ubyte' + ('.gz' if compress else '')
  path = tmp_path / name
  if case == 'missing':
    os.remove(path)
  else:
    _rewrite(path, corrupt)
  with pytest.raises(data.DataError, match=message) as err:
    data.load_idx_dir(tmp_path)
  assert 't10k-images-idx3-ubyte' in str(err.value)
  assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(
  'corrupt',
  [
    lambda raw: raw[: len(raw) // 2],  # Truncated gzip stream.
    lambda raw: raw[:10] + b'garbage!' * 8,  # Corrupt deflate data.
  ],
)
def test_bad_gzip_raises(tmp_path, corrupt):
  write_mnist_like(tmp_path, compress=True)
  path = tmp_path / 'train-labels-idx1-ubyte.gz'
  path.write_bytes(corrupt(path.read_bytes()))
  with pytest.raises(data.DataError, match='gzip') as err:
    data.load_idx_dir(tmp_path)
  assert 'train-labels-idx1-ubyte.gz' in str(err.value)


def test_count_mismatch_raises(tmp_path):
  write_mnist_like(tmp_path, compress=False)
  data.write_idx(tmp_path / 'train-labels-idx1-ubyte', np.zeros(6, np.uint8))  # 7 images.
  with pytest.raises(data.DataError, match='7 images but') as err:
    data.load_idx_dir(tmp_path)
  assert 'train-labels-idx1-ubyte' in str(err.value)
  assert 'train-images-idx3-ubyte' in str(err.value)


def test_missing_directory_raises(tmp_path):
  with pytest.raises(data.DataError, match='no such file or folder: .*nope'):
    data.load_idx_dir(tmp_path / 'nope')
  (tmp_path / 'file').write_text('')
  with pytest.raises(data.DataError, match='is a file, not a folder of IDX files'):
    data.load_idx_dir(tmp_path / 'file')


def test_parse_idx_too_short():
  with pytest.raises(data.DataError, match='x.idx'):
    idx.parse_idx(b'\x00\x00', where='x.idx')


def test_real_mnist(real_mnist_dir):
  ds = data.load_idx_dir(real_mnist_dir)
  assert ds.x_train.shape == (60000, 28, 28, 1)
  assert ds.x_test.shape == (10000, 28, 28, 1)
  assert ds.y_train.shape == (60000,) and ds.y_test.shape == (10000,)
  assert ds.x_train.dtype == np.uint8
  assert ds.y_train.min() == 0 and ds.y_train.max() == 9
  assert set(np.unique(ds.y_test)) == set(range(10))
  assert ds.num_classes == 10
  assert 0.12 < ds.x_train.mean() / 255 < 0.14  # MNIST mean 0.1307.
