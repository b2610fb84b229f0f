"""The raw `Dataset` every source returns, its validation (`make_dataset`), and `DataError`.

NumPy and the standard library only.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Union

import numpy as np


# Number of classes of the datasets jcl knows (others: max label + 1).
NUM_CLASSES = {
  'mnist': 10,
  'fashion_mnist': 10,
  'kmnist': 10,
  'cifar10': 10,
  'cifar100': 100,
  'tinyimagenet': 200,
}


# A file or folder, or `{array name: file}` with '' for the rest.
Where = Union[str, Mapping[str, str]]


class DataError(ValueError):
  """A data file or folder is missing, corrupt or inconsistent.

  The message always names the offending path (and key or field) and says what
  is wrong with it.
  """


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A labelled image dataset with a train and a test split, as read.

  Attributes:
    name: dataset name, e.g. `'mnist'`; picks the normalization constants.
    num_classes: number of classes; labels lie in `[0, num_classes)`.
    x_train: `[N_train, H, W, C]` images, as stored (usually uint8).
    y_train: `[N_train]` integer labels.
    x_test: `[N_test, H, W, C]` images.
    y_test: `[N_test]` integer labels.
    class_names: optional per-class names (e.g. WordNet ids), length
      `num_classes`.
    pixel_max: the brightest possible pixel value: 255 for uint8 images,
      1.0 for float images in [0, 1]; inputs are scaled by `1 / pixel_max`.
  """

  name: str
  num_classes: int
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  class_names: Optional[tuple[str, ...]] = None
  pixel_max: float = 255.0

  @property
  def input_shape(self) -> tuple[int, ...]:
    """`(H, W, C)` of one image."""
    return tuple(self.x_train.shape[1:])


def as_nhwc(x: np.ndarray) -> np.ndarray:
  """Adds a channel axis to `[N, H, W]` images; keeps `[N, H, W, C]` as is."""
  if x.ndim == 3:
    return x[..., None]
  return x


# How a run's config declares `pixel_max` (named in messages).
PIXEL_MAX_OPTION = '--config.benchmark.pixel_max'


def missing_path_error(path: str) -> DataError:
  """The error for a file or folder that does not exist."""
  return DataError(f'no such file or folder: {path}')


def _at(where: Where, key: str) -> str:
  """`'<file>: <key>'`, the prefix of a message about array `key`."""
  if isinstance(where, str):
    return f'{where}: {key}'
  return f'{where.get(key, where.get("", "<memory>"))}: {key}'


def check_pixel_max(pixel_max: Optional[float], where: str = '<memory>') -> Optional[float]:
  """`pixel_max` as a float (None stays None); DataError unless a finite number > 0."""
  if pixel_max is None:
    return None
  if (
    isinstance(pixel_max, (bool, np.bool_))
    or not isinstance(pixel_max, (int, float, np.integer, np.floating))
    or not np.isfinite(pixel_max)
    or pixel_max <= 0
  ):
    raise DataError(
      f'{where}: pixel_max must be a finite number > 0 (255 for uint8 images, '
      f'1.0 for float images in [0, 1]), got {pixel_max!r}'
    )
  return float(pixel_max)


def _non_finite(x: np.ndarray, prefix: str, what: str) -> DataError:
  """The error for an array holding NaN or inf (the slow path: only on error)."""
  nan, inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
  first = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
  return DataError(
    f'{prefix} holds {nan} NaN and {inf} inf {what} (of {x.size}), the first at index '
    f'{first}; every value must be finite'
  )


def check_images(
  x: np.ndarray, key: str = 'x', where: Where = '<memory>', pixel_max: Optional[float] = None
) -> np.ndarray:
  """Validates the dtype and values of `[N, H, W, C]` images.

  uint8 images are taken as they are (pixel_max 255 by default). Another
  integer type is converted to uint8 when its values fit in 0..255 (e.g.
  int64 from a NumPy pipeline), else kept (e.g. uint16 with a declared
  pixel_max=65535). Float and bool images need a declared `pixel_max` (1.0
  for floats in [0, 1]; bool becomes uint8 0/1). Every value must lie in
  `[0, pixel_max]`; NaN and inf are refused. Costs nothing for uint8 images,
  a min and a max pass otherwise.

  Args:
    x: the images.
    key: their name in messages (`'x_train'`, `'x_test'`).
    where: the file they came from (or a `{key: file}` mapping).
    pixel_max: the declared brightest pixel value (None: 255, uint8 images).

  Returns:
    The images, as uint8 where another integer type or bool is converted.

  Raises:
    DataError: NaN or inf, values outside `[0, pixel_max]`, float or bool
      images without a declared `pixel_max`, or a non-numeric dtype.
  """
  prefix = _at(where, key)
  limit = 255.0 if pixel_max is None else pixel_max
  if x.dtype == np.uint8:
    if pixel_max is None or pixel_max >= 255 or x.size == 0:
      return x  # Always in range: free.
    hi = int(x.max())
    if hi > pixel_max:
      raise DataError(
        f'{prefix} holds uint8 images with values up to {hi}, above the declared '
        f'pixel_max={pixel_max:g}; uint8 images in 0..255 need no pixel_max (leave it unset)'
      )
    return x
  if x.dtype == np.bool_:
    if pixel_max is None:
      raise DataError(
        f'{prefix} holds bool images: declare what True means, e.g. pixel_max=1.0 '
        f'({PIXEL_MAX_OPTION}=1.0), or store them as uint8 0/255'
      )
    return x.astype(np.uint8)
  is_int = np.issubdtype(x.dtype, np.integer)
  if not is_int and not np.issubdtype(x.dtype, np.floating):
    raise DataError(
      f'{prefix} holds images of dtype {x.dtype}; jcl reads uint8 images (or other '
      'integer or float images, the latter with a declared pixel_max)'
    )
  if x.size == 0:
    return x
  lo, hi = x.min(), x.max()  # One vectorized pass each; NaN propagates.
  if not is_int and not (np.isfinite(lo) and np.isfinite(hi)):
    raise _non_finite(x, prefix, 'pixel values')
  if not is_int and pixel_max is None:
    hint = 1.0 if hi <= 1 else 255.0 if hi <= 255 else float(hi)
    raise DataError(
      f'{prefix} holds {x.dtype} images with values in [{lo:g}, {hi:g}], but no pixel_max was '
      'declared (jcl reads uint8 images in 0..255 by default); declare the brightest possible '
      f'pixel value, e.g. {PIXEL_MAX_OPTION}={hint!r} (pixel_max={hint!r} of load_dataset), '
      'or store the images as uint8'
    )
  if lo < 0 or hi > limit:
    declared = f'pixel_max={limit:g}' + (
      ' (the default, for uint8 images)' if pixel_max is None else ''
    )
    raise DataError(
      f'{prefix} holds {x.dtype} images with values in [{lo:g}, {hi:g}], outside [0, {limit:g}] '
      f'({declared}); pixel values must lie in [0, pixel_max]: declare the brightest possible '
      f'value with {PIXEL_MAX_OPTION} (pixel_max= of load_dataset)'
    )
  if is_int and hi <= 255:
    return x.astype(np.uint8)  # Lossless: 0 <= x <= 255.
  return x


def check_labels(y: np.ndarray, key: str = 'y', where: Where = '<memory>') -> np.ndarray:
  """Validates a `[N]` label vector; returns it as int64.

  Raises:
    DataError: not a vector, a non-integer dtype (NaN and inf named), or a
      negative label.
  """
  prefix = _at(where, key)
  if y.ndim != 1:
    raise DataError(f'{prefix} must be a [N] label vector, got shape {y.shape}')
  if not np.issubdtype(y.dtype, np.integer):
    if np.issubdtype(y.dtype, np.inexact) and not np.isfinite(y).all():
      raise _non_finite(y, prefix, 'labels')
    raise DataError(f'{prefix} must hold integer class labels, got dtype {y.dtype}')
  if y.size and y.min() < 0:
    raise DataError(f'{prefix} has a negative label {y.min()} (labels lie in [0, num_classes))')
  return y.astype(np.int64, copy=False)


def make_dataset(
  name: str,
  x_train: np.ndarray,
  y_train: np.ndarray,
  x_test: np.ndarray,
  y_test: np.ndarray,
  *,
  num_classes: Optional[int] = None,
  where: Where = '<memory>',
  class_names: Optional[tuple[str, ...]] = None,
  pixel_max: Optional[float] = None,
) -> Dataset:
  """Validates raw arrays and wraps them in a `Dataset`.

  Args:
    name: dataset name.
    x_train: `[N, H, W]` or `[N, H, W, C]` images.
    y_train: `[N]` integer labels.
    x_test: `[M, H, W]` or `[M, H, W, C]` images.
    y_test: `[M]` integer labels.
    num_classes: number of classes; `None` takes `NUM_CLASSES[name]` for a
      known dataset, else infers `max(label) + 1`.
    where: the file or folder the arrays came from, for error messages, or
      a mapping from array name (`'x_train'`, ...) to its file, with `''` for
      the rest.
    class_names: optional class names.
    pixel_max: the brightest possible pixel value (None: 255, uint8
      images); float and bool images need it (see `check_images`).

  Returns:
    The validated `Dataset` (images `[N, H, W, C]`, labels int64).

  Raises:
    DataError: on inconsistent shapes, lengths or labels, empty splits,
      NaN or inf, or pixel values outside `[0, pixel_max]`.
  """
  place = where if isinstance(where, str) else where.get('', '<memory>')
  pixel_max = check_pixel_max(pixel_max, place)
  arrays = {}
  for split, x, y in (('train', x_train, y_train), ('test', x_test, y_test)):
    x = as_nhwc(np.asarray(x))
    y = check_labels(np.asarray(y), f'y_{split}', where)
    if x.ndim != 4:
      raise DataError(
        f'{_at(where, f"x_{split}")} must be [N, H, W] or [N, H, W, C] images, got shape {x.shape}'
      )
    if len(x) != len(y):
      raise DataError(f'{place}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels')
    if len(x) == 0 or 0 in x.shape[1:]:
      raise DataError(f'{_at(where, f"x_{split}")} is empty (shape {x.shape})')
    arrays[split] = (check_images(x, f'x_{split}', where, pixel_max), y)
  (x_train, y_train), (x_test, y_test) = arrays['train'], arrays['test']
  if x_train.shape[1:] != x_test.shape[1:]:
    raise DataError(
      f'{place}: train images have shape {x_train.shape[1:]} but test images {x_test.shape[1:]}'
    )
  if num_classes is None:
    num_classes = NUM_CLASSES.get(name, max(int(y_train.max()), int(y_test.max())) + 1)
  if (
    isinstance(num_classes, (bool, np.bool_))
    or not isinstance(num_classes, (int, np.integer))
    or num_classes < 1
  ):
    raise DataError(f'{place}: num_classes must be an integer >= 1, got {num_classes!r}')
  for split, y in (('train', y_train), ('test', y_test)):
    if int(y.max()) >= num_classes:
      raise DataError(
        f'{_at(where, f"y_{split}")} has label {int(y.max())}, out of range for '
        f'num_classes={num_classes} (labels lie in [0, {num_classes}))'
      )
  if class_names is not None and len(class_names) != num_classes:
    raise DataError(f'{place}: {len(class_names)} class names for {num_classes} classes')
  return Dataset(
    name=name,
    num_classes=int(num_classes),
    x_train=x_train,
    y_train=y_train,
    x_test=x_test,
    y_test=y_test,
    class_names=class_names,
    pixel_max=255.0 if pixel_max is None else pixel_max,
  )
