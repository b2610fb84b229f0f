"""How a task sees the stored images: per-task pixel maps and normalization.

A benchmark keeps each dataset's images once, as stored (uint8 `0..255`, or
floats in `[0, pixel_max]`); a task's split is row numbers into them seen
through an `InputView`. The model's input for stored image `s` of task `k`
is

  x[p, c] = (sum_j weight[k, j, p] * s[index[k, j, p], c] / pixel_max - mean[c]) / std[c]

over the J taps of the task's `PixelMaps` (J = 1 for a permutation or a
nearest-neighbour rotation, without weights; J = 4 for a bilinear rotation);
an index equal to `P = H * W` reads 0 (black fill). Nothing is derived
ahead of time, so memory does not grow with the number of tasks: a 100-task
Permuted MNIST holds MNIST once plus `[100, 1, 784]` indices.

This module is the NumPy definition (the PyTorch backend and `TaskSplit.x`
use it); `jcl.inputs` computes the same numbers on a JAX device, inside the
compiled step, from the same arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class PixelMaps:
  """Per task, which stored pixels make each input pixel.

  Attributes:
    index: int32 `[T, J, P]`: tap j of output pixel p of task k reads stored
      pixel `index[k, j, p]` (row-major over `H * W`, all channels alike);
      `P` reads 0.
    weight: float32 `[T, J, P]` tap weights, or None (J must be 1: the tap is
      copied, so uint8 images stay uint8).
  """

  index: np.ndarray
  weight: Optional[np.ndarray] = None

  def __post_init__(self):
    if self.index.ndim != 3:
      raise ValueError(f'PixelMaps.index must be [T, J, P], got shape {self.index.shape}')
    if self.weight is None and self.index.shape[1] != 1:
      raise ValueError('PixelMaps without weights must have one tap (J = 1)')
    if self.weight is not None and self.weight.shape != self.index.shape:
      raise ValueError(
        f'PixelMaps.weight {self.weight.shape} must have the shape of index {self.index.shape}'
      )

  @property
  def num_tasks(self) -> int:
    return self.index.shape[0]

  @property
  def num_pixels(self) -> int:
    return self.index.shape[2]

  def apply(self, images: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Images `[N, H, W, C]` of tasks `t [N]` through their tasks' maps:
    `[N, H, W, C]`, the stored dtype without weights, float32 with them."""
    n, h, w, c = images.shape
    if h * w != self.num_pixels:
      raise ValueError(f'pixel maps of {self.num_pixels} pixels for {h}x{w} images')
    flat = images.reshape(n, h * w, c)
    out = np.empty((n, h * w, c), images.dtype if self.weight is None else np.dtype(np.float32))
    t = np.asarray(t)
    for task in np.unique(t):
      members = np.flatnonzero(t == task)
      part = flat if len(members) == n else flat[members]
      out[members] = self._apply_one(part, int(task))
    return out.reshape(n, h, w, c)

  def _apply_one(self, flat: np.ndarray, task: int) -> np.ndarray:
    index = self.index[task]  # [J, P]
    valid = index < self.num_pixels
    taps = np.take(flat, np.where(valid, index, 0), axis=1)  # [N, J, P, C]
    if self.weight is None:
      return taps[:, 0] * valid[0][None, :, None].astype(flat.dtype)
    weight = np.where(valid, self.weight[task], 0).astype(np.float32)
    out = weight[0][None, :, None] * taps[:, 0].astype(np.float32)
    for j in range(1, index.shape[0]):
      out = out + weight[j][None, :, None] * taps[:, j].astype(np.float32)
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class InputView:
  """How stored images become model inputs (see the module docstring).

  Attributes:
    scale: `1 / pixel_max`.
    mean: float32 `[C]` subtracted after scaling (zeros: none).
    std: float32 `[C]` divided by last (ones: none).
    maps: per-task pixel maps, or None (the stored pixels as they are).
  """

  scale: float
  mean: np.ndarray
  std: np.ndarray
  maps: Optional[PixelMaps] = None

  @classmethod
  def make(
    cls,
    pixel_max: float = 255.0,
    mean: Optional[np.ndarray] = None,
    std: Optional[np.ndarray] = None,
    channels: int = 1,
    maps: Optional[PixelMaps] = None,
  ) -> 'InputView':
    """A view scaling by `1 / pixel_max`, then standardizing with `mean`/`std` when given."""
    if mean is None:
      mean, std = np.zeros(channels, np.float32), np.ones(channels, np.float32)
    return cls(
      float(np.float32(1.0 / pixel_max)),
      np.asarray(mean, np.float32).reshape(-1),
      np.asarray(std, np.float32).reshape(-1),
      maps,
    )

  @classmethod
  def identity(cls, channels: int = 1) -> 'InputView':
    """Stored images that already are model inputs (float32, normalized)."""
    return cls.make(1.0, channels=channels)

  @property
  def is_identity(self) -> bool:
    return (
      self.maps is None
      and self.scale == 1.0
      and not np.any(self.mean)
      and bool(np.all(self.std == 1))
    )

  def stage(self, images: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Stored images `[N, H, W, C]` of tasks `t` through the pixel maps
    (stored scale, not normalized)."""
    return images if self.maps is None else self.maps.apply(images, t)

  def normalize(self, staged: np.ndarray) -> np.ndarray:
    """float32 `(staged * scale - mean) / std`, in that order of operations
    (elementwise IEEE float32, as NumPy computes it)."""
    out = np.empty(staged.shape, np.float32)
    out[...] = staged
    out *= np.float32(self.scale)
    out -= self.mean
    out /= self.std
    return out

  def lookup_table(self) -> np.ndarray:
    """float32 `[256, C]`: the model input of each uint8 pixel value in each
    channel. Devices look pixels up in it (`jcl.inputs`), so every backend
    gets these numbers bit for bit, whatever its compiler does with
    arithmetic (fused multiply-adds, reciprocals)."""
    channels = len(self.mean)
    return self.normalize(np.repeat(np.arange(256, dtype=np.uint8)[:, None], channels, 1))

  def inputs(self, images: np.ndarray, rows: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Model inputs float32 `[N, H, W, C]` of stored rows `rows [N]` of tasks
    `t [N]`; a row `>= len(images)` (padding) gives an all-zero input."""
    rows = np.asarray(rows)
    real = rows < len(images)
    x = images[np.where(real, rows, 0)]
    if self.is_identity and x.dtype == np.float32:
      out = x
    else:
      out = self.normalize(self.stage(x, np.where(real, t, 0)))
    if not real.all():
      out[~real] = 0
    return out
