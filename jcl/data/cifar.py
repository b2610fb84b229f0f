"""CIFAR-10 / CIFAR-100 from their own distribution folders (no TFDS, no torchvision).

The four layouts of https://www.cs.toronto.edu/~kriz/cifar.html, as unpacked
from their tarballs:

  cifar-10-batches-py/   data_batch_1 .. data_batch_5, test_batch, batches.meta
  cifar-10-batches-bin/  data_batch_1.bin .. data_batch_5.bin, test_batch.bin,
                         batches.meta.txt
  cifar-100-python/      train, test, meta
  cifar-100-binary/      train.bin, test.bin, fine_label_names.txt

Python versions are pickled dicts (`data`: uint8 `[N, 3072]`, `labels` or
`fine_labels`); they are unpickled with a restricted unpickler that builds
only NumPy arrays and plain containers, so a tampered file cannot run code.
Binary versions are records of label byte(s) then 3072 pixel bytes. Pixels
are stored channel-major (1024 red, 1024 green, 1024 blue, rows of 32).
NumPy and the standard library only.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from typing import Any, Optional

import numpy as np

from jcl.data.dataset import DataError, Dataset, make_dataset, missing_path_error

SIDE = 32
PIXELS = 3 * SIDE * SIDE  # 3072 bytes an image


@dataclasses.dataclass(frozen=True)
class Layout:
  """One of the four CIFAR distribution folders.

  Attributes:
    folder: the folder's name in the tarball.
    dataset: `'cifar10'` or `'cifar100'`.
    binary: records of bytes (else pickled dicts).
    train: the training files, in order.
    test: the test file.
    meta: the file with the class names (optional).
  """

  folder: str
  dataset: str
  binary: bool
  train: tuple[str, ...]
  test: str
  meta: str

  @property
  def num_classes(self) -> int:
    return 100 if self.dataset == 'cifar100' else 10

  @property
  def files(self) -> tuple[str, ...]:
    return self.train + (self.test,)

  def describe(self) -> str:
    """`'the cifar-10-batches-py layout: data_batch_1, ..., test_batch'`."""
    return f'the {self.folder} layout: {", ".join(self.files)}'


LAYOUTS = (
  Layout(
    'cifar-10-batches-py',
    'cifar10',
    False,
    tuple(f'data_batch_{i}' for i in range(1, 6)),
    'test_batch',
    'batches.meta',
  ),
  Layout(
    'cifar-10-batches-bin',
    'cifar10',
    True,
    tuple(f'data_batch_{i}.bin' for i in range(1, 6)),
    'test_batch.bin',
    'batches.meta.txt',
  ),
  Layout('cifar-100-python', 'cifar100', False, ('train',), 'test', 'meta'),
  Layout('cifar-100-binary', 'cifar100', True, ('train.bin',), 'test.bin', 'fine_label_names.txt'),
)


def find_layout(path: str) -> Optional[tuple[Layout, str]]:
  """The CIFAR layout of folder `path` and the folder holding its files, or None.

  `path` may be the distribution folder itself (recognized by any one of
  its data files, so that a folder missing a file is still recognized and
  reported by name) or the folder it was unpacked into (holding e.g.
  `cifar-10-batches-py/`).
  """
  if not os.path.isdir(path):
    return None
  for layout in LAYOUTS:
    if any(os.path.isfile(os.path.join(path, f)) for f in layout.files):
      return layout, path
  for layout in LAYOUTS:
    inner = os.path.join(path, layout.folder)
    if os.path.isdir(inner):
      return layout, inner
  return None


# -----------------------------------------------------------------------------
# Reading the files.
# -----------------------------------------------------------------------------


def _numpy_global(name: str) -> Any:
  try:
    from numpy._core import multiarray  # pylint: disable=g-import-not-at-top  # NumPy >= 2
  except ImportError:
    from numpy.core import multiarray  # pylint: disable=g-import-not-at-top
  return getattr(multiarray, name)


# What a CIFAR pickle may build: NumPy arrays (as NumPy 1 or 2 pickles them) and bytes.
_ALLOWED = {
  ('numpy.core.multiarray', '_reconstruct'): lambda: _numpy_global('_reconstruct'),
  ('numpy._core.multiarray', '_reconstruct'): lambda: _numpy_global('_reconstruct'),
  ('numpy.core.multiarray', 'scalar'): lambda: _numpy_global('scalar'),
  ('numpy._core.multiarray', 'scalar'): lambda: _numpy_global('scalar'),
  ('numpy', 'ndarray'): lambda: np.ndarray,
  ('numpy', 'dtype'): lambda: np.dtype,
  ('_codecs', 'encode'): None,  # bytes in protocol-2 pickles
}


class _ForbiddenGlobal(pickle.UnpicklingError):
  """A pickle that names a class or function outside `_ALLOWED`."""


class _Unpickler(pickle.Unpickler):
  """Builds only what `_ALLOWED` names (a CIFAR pickle needs nothing else)."""

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) not in _ALLOWED:
      raise _ForbiddenGlobal(
        f'holds a Python object of type {module}.{name}, which jcl does not unpickle '
        '(a CIFAR file holds only NumPy arrays, lists, strings and numbers)'
      )
    build = _ALLOWED[(module, name)]
    return build() if build else super().find_class(module, name)


def _unpickle(path: str) -> dict[str, Any]:
  """A CIFAR pickle as a dict with str keys (Python 2 pickles: latin-1 strings)."""
  try:
    with open(path, 'rb') as f:
      content = _Unpickler(f, encoding='latin1').load()
  except OSError as e:
    raise DataError(f'{path}: cannot read file ({e})') from e
  except _ForbiddenGlobal as e:
    raise DataError(f'{path}: {e}') from e
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
    raise DataError(f'{path}: not a readable CIFAR pickle, corrupt or truncated ({e})') from e
  if not isinstance(content, dict):
    raise DataError(f'{path}: expected a pickled dict, got {type(content).__name__}')
  return {k.decode('latin1') if isinstance(k, bytes) else str(k): v for k, v in content.items()}


def _images(data: Any, where: str) -> np.ndarray:
  """`[N, 3072]` channel-major bytes -> uint8 `[N, 32, 32, 3]`."""
  x = np.asarray(data)
  if x.ndim != 2 or x.shape[1] != PIXELS or x.dtype != np.uint8:
    raise DataError(
      f'{where} must be uint8 [N, {PIXELS}] (3 x 32 x 32 channel-major pixels), '
      f'got {x.dtype} {list(x.shape)}'
    )
  return x.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)


def _read_pickle(path: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
  content = _unpickle(path)
  missing = [k for k in ('data', label_key) if k not in content]
  if missing:
    raise DataError(f'{path}: missing key(s) {missing} (has {sorted(content)})')
  x = _images(content['data'], f'{path}: data')
  try:
    y = np.asarray(content[label_key], np.int64)
  except (TypeError, ValueError) as e:
    raise DataError(f'{path}: {label_key} must be integer labels ({e})') from e
  if y.shape != (len(x),):
    raise DataError(f'{path}: {len(x)} images but {label_key} holds shape {list(y.shape)}')
  return x, y


def _read_binary(path: str, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
  """Records of `label_bytes` label bytes (the last is the label) and 3072 pixel bytes."""
  record = label_bytes + PIXELS
  try:
    raw = np.fromfile(path, np.uint8)
  except OSError as e:
    raise DataError(f'{path}: cannot read file ({e})') from e
  if raw.size == 0 or raw.size % record:
    raise DataError(
      f'{path}: {raw.size} bytes is not a whole number of {record}-byte records '
      f'({label_bytes} label byte{"s" if label_bytes > 1 else ""} + {PIXELS} pixel bytes '
      'an image): truncated or not a CIFAR binary file'
    )
  rows = raw.reshape(-1, record)
  labels = rows[:, label_bytes - 1].astype(np.int64)
  return _images(rows[:, label_bytes:], f'{path}: pixels'), labels


def _class_names(layout: Layout, folder: str) -> Optional[tuple[str, ...]]:
  """The class names of the meta file, or None when it is absent or does not fit."""
  path = os.path.join(folder, layout.meta)
  if not os.path.isfile(path):
    return None
  if layout.binary:
    try:
      with open(path, encoding='utf-8') as f:
        names = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
      raise DataError(f'{path}: cannot read the class names ({e})') from e
  else:
    content = _unpickle(path)
    key = 'label_names' if layout.dataset == 'cifar10' else 'fine_label_names'
    names = [str(n) for n in content.get(key, ())]
  return tuple(names) if len(names) == layout.num_classes else None


def _check_labels(y: np.ndarray, layout: Layout, path: str) -> None:
  bad = np.flatnonzero((y < 0) | (y >= layout.num_classes))
  if bad.size:
    raise DataError(
      f'{path}: record {int(bad[0])} has label {int(y[bad[0]])}, out of range for '
      f'{layout.dataset} (labels 0..{layout.num_classes - 1}); corrupt, or another dataset'
    )


def load_cifar(path: str, name: Optional[str] = None, pixel_max: Optional[float] = None) -> Dataset:
  """Loads CIFAR-10 or CIFAR-100 from one of its distribution folders.

  Args:
    path: the distribution folder (`cifar-10-batches-py`,
      `cifar-10-batches-bin`, `cifar-100-python`, `cifar-100-binary`) or the
      folder holding it; the layout is recognized by its files.
    name: `'cifar10'` or `'cifar100'` to check that the folder holds that
      dataset (None: whichever it holds).
    pixel_max: the brightest pixel value (None: 255, as stored).

  Returns:
    A `Dataset` named `'cifar10'` or `'cifar100'` (fine labels): uint8
    `[N, 32, 32, 3]` images, int64 labels, the class names of the meta file.

  Raises:
    DataError: no CIFAR layout at `path`, the folder holds the other
      dataset, or a file is missing, truncated or corrupt (named).
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise missing_path_error(path)
  found = find_layout(path)
  if found is None:
    raise DataError(
      f'{path}: not a CIFAR folder; expected one of '
      + '; '.join(layout.describe() for layout in LAYOUTS)
    )
  layout, folder = found
  if name is not None and name != layout.dataset:
    raise DataError(f'{folder}: holds {layout.dataset} ({layout.folder}), not {name}')
  missing = [f for f in layout.files if not os.path.isfile(os.path.join(folder, f))]
  if missing:
    raise DataError(
      f'{os.path.join(folder, missing[0])}: file not found (expected {layout.describe()}; '
      f'missing: {", ".join(missing)})'
    )
  splits = []
  for files in (layout.train, (layout.test,)):
    xs, ys = [], []
    for file in files:
      file_path = os.path.join(folder, file)
      if layout.binary:
        x, y = _read_binary(file_path, 1 if layout.dataset == 'cifar10' else 2)
      else:
        x, y = _read_pickle(file_path, 'labels' if layout.dataset == 'cifar10' else 'fine_labels')
      _check_labels(y, layout, file_path)
      xs.append(x)
      ys.append(y)
    splits += [np.concatenate(xs), np.concatenate(ys)]
  return make_dataset(
    layout.dataset,
    *splits,
    num_classes=layout.num_classes,
    where=folder,
    class_names=_class_names(layout, folder),
    pixel_max=pixel_max,
  )
