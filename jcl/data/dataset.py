"""The raw `Dataset` container every source returns, and `DataError`.

NumPy and the standard library only.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

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


def make_dataset(
  name: str,
  x_train: np.ndarray,
  y_train: np.ndarray,
  x_test: np.ndarray,
  y_test: np.ndarray,
  *,
  num_classes: Optional[int] = None,
  where: str = '<memory>',
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
    where: the file or folder the arrays came from, for error messages.
    class_names: optional class names.
    pixel_max: the brightest possible pixel value (None: 255).

  Returns:
    The validated `Dataset` (images `[N, H, W, C]`, labels int64).

  Raises:
    DataError: on inconsistent shapes, lengths or labels.
  """
  arrays = {}
  for split, x, y in (('train', x_train, y_train), ('test', x_test, y_test)):
    x = as_nhwc(np.asarray(x))
    y = np.asarray(y)
    if x.ndim != 4:
      raise DataError(
        f'{where}: x_{split} must be [N, H, W] or [N, H, W, C] images, got shape {x.shape}'
      )
    if y.ndim != 1:
      raise DataError(f'{where}: y_{split} must be a [N] label vector, got shape {y.shape}')
    if not np.issubdtype(y.dtype, np.integer):
      raise DataError(f'{where}: y_{split} must hold integer labels, got dtype {y.dtype}')
    if len(x) != len(y):
      raise DataError(f'{where}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels')
    if y.size and y.min() < 0:
      raise DataError(f'{where}: y_{split} has a negative label {y.min()}')
    arrays[split] = (x, y.astype(np.int64, copy=False))
  (x_train, y_train), (x_test, y_test) = arrays['train'], arrays['test']
  if x_train.shape[1:] != x_test.shape[1:]:
    raise DataError(
      f'{where}: train images have shape {x_train.shape[1:]} but test images {x_test.shape[1:]}'
    )
  max_label = max([int(y.max()) for y in (y_train, y_test) if y.size] or [-1])
  if num_classes is None:
    num_classes = NUM_CLASSES.get(name, max_label + 1)
  if max_label >= num_classes:
    raise DataError(f'{where}: label {max_label} out of range for num_classes={num_classes}')
  if class_names is not None and len(class_names) != num_classes:
    raise DataError(f'{where}: {len(class_names)} class names for {num_classes} classes')
  return Dataset(
    name=name,
    num_classes=int(num_classes),
    x_train=x_train,
    y_train=y_train,
    x_test=x_test,
    y_test=y_test,
    class_names=class_names,
    pixel_max=255.0 if pixel_max is None else float(pixel_max),
  )
