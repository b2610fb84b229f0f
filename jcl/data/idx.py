"""IDX files (the MNIST / Fashion-MNIST distribution format), plain or gzipped.

IDX layout: 2 zero bytes, a dtype code (0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, then one
big-endian uint32 per dimension, then the data in row-major order.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from typing import Optional, Union

import numpy as np

from jcl.data.dataset import DataError, Dataset, make_dataset, missing_path_error

PathLike = Union[str, os.PathLike]

_IDX_DTYPES = {
  0x08: np.dtype('u1'),
  0x09: np.dtype('i1'),
  0x0B: np.dtype('>i2'),
  0x0C: np.dtype('>i4'),
  0x0D: np.dtype('>f4'),
  0x0E: np.dtype('>f8'),
}
_IDX_CODES = {dt.newbyteorder('>'): code for code, dt in _IDX_DTYPES.items()}

# (train images, train labels, test images, test labels) base names.
_IDX_FILES = (
  'train-images-idx3-ubyte',
  'train-labels-idx1-ubyte',
  't10k-images-idx3-ubyte',
  't10k-labels-idx1-ubyte',
)


def _read_bytes(path: str) -> bytes:
  """Reads a file, gunzipping it if it is gzip (by magic bytes or suffix)."""
  try:
    with open(path, 'rb') as f:
      raw = f.read()
  except FileNotFoundError:
    raise DataError(f'{path}: file not found') from None
  except OSError as e:
    raise DataError(f'{path}: cannot read file ({e})') from e
  if raw[:2] == b'\x1f\x8b' or path.endswith('.gz'):
    try:
      return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
      raise DataError(
        f'{path}: gzip decompression failed, the file is corrupt or truncated ({e})'
      ) from e
  return raw


def parse_idx(data: bytes, where: str = '<bytes>') -> np.ndarray:
  """Parses the bytes of one IDX file.

  Args:
    data: the uncompressed file contents.
    where: the file name, for error messages.

  Returns:
    The array, with the shape and dtype the header declares (native byte
    order).

  Raises:
    DataError: on a bad magic number, unknown dtype code, or a data section
      whose length does not match the header.
  """
  if len(data) < 4:
    raise DataError(
      f'{where}: not an IDX file: only {len(data)} bytes, too short for the 4-byte magic number'
    )
  zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
  if zero0 != 0 or zero1 != 0:
    raise DataError(
      f'{where}: bad IDX magic number {data[:4].hex()}: the first two bytes must be 0'
    )
  if code not in _IDX_DTYPES:
    raise DataError(
      f'{where}: bad IDX magic number {data[:4].hex()}: unknown '
      f'dtype code 0x{code:02x} (expected one of '
      f'{", ".join(f"0x{c:02x}" for c in _IDX_DTYPES)})'
    )
  if ndim == 0:
    raise DataError(f'{where}: bad IDX magic number {data[:4].hex()}: 0 dimensions')
  header = 4 + 4 * ndim
  if len(data) < header:
    raise DataError(
      f'{where}: truncated IDX header: {ndim} dimensions need {header} bytes, file has {len(data)}'
    )
  shape = struct.unpack(f'>{ndim}I', data[4:header])
  dtype = _IDX_DTYPES[code]
  expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow.
  actual = len(data) - header
  if actual < expected:
    raise DataError(
      f'{where}: truncated IDX file: header declares shape '
      f'{shape} ({expected} data bytes) but only {actual} bytes '
      'follow'
    )
  if actual > expected:
    raise DataError(
      f'{where}: IDX file has {actual - expected} unexpected '
      f'trailing bytes after the declared shape {shape}'
    )
  arr = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header)
  return arr.reshape(shape).astype(dtype.newbyteorder('='), copy=True)


def read_idx(path: PathLike) -> np.ndarray:
  """Reads one IDX file, plain or gzipped.

  Args:
    path: the file.

  Returns:
    The array the file holds, e.g. `[N, 28, 28]` uint8 images or `[N]` uint8
    labels.

  Raises:
    DataError: the file is missing, not valid gzip, or not a valid IDX file.
  """
  path = os.fspath(path)
  return parse_idx(_read_bytes(path), where=path)


def write_idx(path: PathLike, array: np.ndarray, compress: Optional[bool] = None) -> None:
  """Writes an array as an IDX file (the inverse of `read_idx`).

  Args:
    path: destination; gzipped when `compress` is True, or when `compress` is
      None and the name ends in `.gz`.
    array: an array of a dtype IDX supports (uint8, int8, int16, int32,
      float32, float64), at least 1-D.
    compress: whether to gzip.
  """
  path = os.fspath(path)
  array = np.asarray(array)
  big = array.dtype.newbyteorder('>')
  if big not in _IDX_CODES or array.ndim == 0:
    raise ValueError(
      f'array of dtype {array.dtype} and shape {array.shape} cannot be written as IDX'
    )
  header = bytes([0, 0, _IDX_CODES[big], array.ndim]) + struct.pack(f'>{array.ndim}I', *array.shape)
  data = header + np.ascontiguousarray(array, dtype=big).tobytes()
  if compress is None:
    compress = path.endswith('.gz')
  if compress:
    data = gzip.compress(data)
  with open(path, 'wb') as f:
    f.write(data)


def _find(directory: str, base: str) -> str:
  """Finds `base` in `directory`, plain or `.gz`, with '-' or '.' before idx."""
  dotted = base.replace('-idx', '.idx')
  for name in (base, base + '.gz', dotted, dotted + '.gz'):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  raise DataError(
    f'{os.path.join(directory, base)}[.gz]: file not found '
    f'(the IDX directory {directory} must hold '
    f'{", ".join(_IDX_FILES)}, optionally gzipped)'
  )


def load_idx_dir(path: PathLike, name: str = 'mnist', pixel_max: Optional[float] = None) -> Dataset:
  """Loads MNIST-style IDX files from a directory.

  The directory holds `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
  `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each optionally
  gzipped (`.gz`), as distributed for MNIST, Fashion-MNIST and KMNIST.

  Args:
    path: the directory.
    name: the dataset name stored in the result (`'mnist'`,
      `'fashion_mnist'`, ...).
    pixel_max: the brightest possible pixel value (None: 255, uint8 images;
      float images need one).

  Returns:
    A `Dataset` with uint8 images `[N, 28, 28, 1]` and int64 labels `[N]`.

  Raises:
    DataError: a file is missing, corrupt, truncated, or images and labels
      disagree in count, a label is out of range, a pixel value is not
      finite or outside `[0, pixel_max]`; the message names the file.
  """
  directory = os.fspath(path)
  if not os.path.exists(directory):
    raise missing_path_error(directory)
  if not os.path.isdir(directory):
    raise DataError(f'{directory}: is a file, not a folder of IDX files')
  splits = []
  where = {'': directory}
  for split, (images_base, labels_base) in zip(('train', 'test'), (_IDX_FILES[:2], _IDX_FILES[2:])):
    images_path = _find(directory, images_base)
    labels_path = _find(directory, labels_base)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim not in (3, 4):
      raise DataError(f'{images_path}: expected [N, H, W] images, got shape {images.shape}')
    if labels.ndim != 1:
      raise DataError(f'{labels_path}: expected [N] labels, got shape {labels.shape}')
    if len(images) != len(labels):
      raise DataError(
        f'{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels'
      )
    splits.append((images, labels))
    where.update({f'x_{split}': images_path, f'y_{split}': labels_path})
  (x_train, y_train), (x_test, y_test) = splits
  return make_dataset(name, x_train, y_train, x_test, y_test, where=where, pixel_max=pixel_max)
