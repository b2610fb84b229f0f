"""NumPy image transforms: normalization, pixel permutations, rotations.

All functions are vectorized over the batch and take `[N, H, W, C]` arrays.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from jcl.data.views import PixelMaps

# Per-channel (mean, std) of the training images scaled to [0, 1].
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
  'mnist': ((0.1307,), (0.3081,)),
  'fashion_mnist': ((0.2860,), (0.3530,)),
  'kmnist': ((0.1918,), (0.3483,)),
  'cifar10': ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
  'cifar100': ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
  'tinyimagenet': ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
}

INTERPOLATIONS = ('nearest', 'bilinear')
ANGLE_PROTOCOLS = ('fixed_step', 'random')

# Second word of the seed of each random stream, so that streams drawn from
# the same user seed are independent (`default_rng([seed, PURPOSE, ...])`).
SEED_PERMUTATION = 1
SEED_ANGLES = 2
SEED_SUBSET = 3
SEED_CLASS_ORDER = 4


def normalization_constants(
  name: str, x_train: Optional[np.ndarray] = None, pixel_max: float = 255.0
) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std for dataset `name`.

  Args:
    name: dataset name; looked up in `NORMALIZATION`.
    x_train: `[N, H, W, C]` stored training images, used to compute the
      constants when `name` is not in the table.
    pixel_max: the brightest stored pixel value (the images are divided by it).

  Returns:
    `(mean, std)`, each float32 `[C]`, for images scaled to `[0, 1]`.
  """
  if name in NORMALIZATION:
    mean, std = NORMALIZATION[name]
    return np.asarray(mean, np.float32), np.asarray(std, np.float32)
  if x_train is None:
    raise ValueError(
      f'no normalization constants for dataset {name!r} '
      f'(known: {sorted(NORMALIZATION)}) and no x_train given'
    )
  x = x_train.reshape(-1, x_train.shape[-1]).astype(np.float64) / pixel_max
  std = x.std(axis=0)
  return x.mean(axis=0).astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


# Byte alignment of the image arrays the builders make: JAX's CPU client then
# uses them in place (`jax.device_put` without a copy), so putting a task's
# split on the device is free on CPU.
ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
  """An uninitialized C-contiguous array whose data starts on an `ALIGNMENT` boundary."""
  dtype = np.dtype(dtype)
  size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  buffer = np.empty(size + ALIGNMENT, np.uint8)
  offset = (-buffer.ctypes.data) % ALIGNMENT
  return buffer[offset : offset + size].view(dtype).reshape(shape)


def to_float(
  x: np.ndarray, mean: Optional[np.ndarray] = None, std: Optional[np.ndarray] = None
) -> np.ndarray:
  """Scales uint8 images to float32 `[0, 1]`, then optionally standardizes.

  Args:
    x: `[N, H, W, C]` uint8 (or float in [0, 255]) images.
    mean: `[C]` per-channel mean, or None for no standardization.
    std: `[C]` per-channel std.

  Returns:
    `[N, H, W, C]` float32 `(x / 255 - mean) / std`.
  """
  out = aligned_empty(x.shape, np.float32)
  out[...] = x
  out *= np.float32(1.0 / 255.0)
  if mean is not None:
    out -= np.asarray(mean, np.float32)
    out /= np.asarray(std, np.float32)
  return out


def task_permutations(
  num_tasks: int, num_pixels: int, seed: int, first_task_identity: bool = False
) -> np.ndarray:
  """The pixel permutations of Permuted MNIST.

  Args:
    num_tasks: number of tasks T.
    num_pixels: pixels per image `H * W`.
    seed: permutation seed; task k uses the generator
      `default_rng([seed, SEED_PERMUTATION, k])`, so a task's permutation
      does not depend on `num_tasks`.
    first_task_identity: task 0 keeps the original images.

  Returns:
    `[T, H * W]` int64, row k a permutation of `0..H*W-1`.
  """
  perms = np.empty((num_tasks, num_pixels), np.int64)
  for k in range(num_tasks):
    if k == 0 and first_task_identity:
      perms[k] = np.arange(num_pixels)
    else:
      perms[k] = np.random.default_rng([seed, SEED_PERMUTATION, k]).permutation(num_pixels)
  return perms


def permutation_maps(perms: np.ndarray) -> PixelMaps:
  """The pixel maps of permutations `[T, H * W]` (output pixel i of task k is
  stored pixel `perms[k, i]`)."""
  perms = np.asarray(perms)
  return PixelMaps(perms.astype(np.int32)[:, None, :])


def permute_pixels(x: np.ndarray, perm: np.ndarray) -> np.ndarray:
  """Permutes the pixels of images (all channels alike).

  Args:
    x: `[N, H, W, C]` images.
    perm: `[H * W]` permutation; output pixel i is input pixel `perm[i]`
      (row-major pixel order).

  Returns:
    `[N, H, W, C]` permuted images, same dtype.
  """
  return permutation_maps(np.asarray(perm)[None]).apply(x, np.zeros(len(x), np.int32))


def task_angles(
  num_tasks: int,
  angles: str = 'fixed_step',
  degrees_per_task: float = 9.0,
  max_angle: float = 180.0,
  seed: int = 0,
) -> np.ndarray:
  """The rotation angle of each Rotated MNIST task, in degrees.

  Args:
    num_tasks: number of tasks T.
    angles: `'fixed_step'`: task k is rotated by `k * degrees_per_task`
      (Sequel / MC-SGD configs). `'random'`: task k gets an angle drawn
      uniformly from `[k * max_angle / T, (k + 1) * max_angle / T)` (the GEM /
      MER / La-MAML protocol), from `default_rng([seed, SEED_ANGLES])`.
    degrees_per_task: step of `'fixed_step'`.
    max_angle: upper end of the `'random'` range.
    seed: seed of `'random'`.

  Returns:
    `[T]` float64 angles in degrees, counter-clockwise.
  """
  if angles == 'fixed_step':
    return np.arange(num_tasks, dtype=np.float64) * float(degrees_per_task)
  if angles == 'random':
    rng = np.random.default_rng([seed, SEED_ANGLES])
    lo = np.arange(num_tasks) * (max_angle / num_tasks)
    return rng.uniform(lo, lo + max_angle / num_tasks)
  raise ValueError(f'angles={angles!r}: must be one of {ANGLE_PROTOCOLS}')


def _rotation_matrix(
  h: int, w: int, angle: float
) -> tuple[float, float, float, float, float, float]:
  """PIL's inverse affine map `(a, b, c, d, e, f)` for `Image.rotate(angle)`.

  The output pixel with continuous coordinates `(x, y)` samples the input at
  `(a x + b y + c, d x + e y + f)`; rotation about `(w / 2, h / 2)`, pixel
  `(r, c)` covering `[c, c + 1) x [r, r + 1)`.
  """
  theta = -math.radians(angle % 360.0)
  a, b = round(math.cos(theta), 15), round(math.sin(theta), 15)
  d, e = -b, a
  cx, cy = w / 2.0, h / 2.0
  c = a * -cx + b * -cy + cx
  f = d * -cx + e * -cy + cy
  return a, b, c, d, e, f


def _nearest_source_pixels(h: int, w: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
  """Integer source `(col, row)` of each output pixel, `[H, W]` each.

  Reproduces PIL's nearest-neighbour affine path bit for bit: the map is
  evaluated at pixel centers in 16.16 fixed point and floored.
  """
  a, b, c, d, e, f = _rotation_matrix(h, w, angle)

  def fix(v):
    return math.floor(v * 65536.0 + 0.5)

  a0, a1, a3, a4 = fix(a), fix(b), fix(d), fix(e)
  a2 = fix(c + a * 0.5 + b * 0.5)
  a5 = fix(f + d * 0.5 + e * 0.5)
  xs = np.arange(w, dtype=np.int64)[None, :]
  ys = np.arange(h, dtype=np.int64)[:, None]
  return (a2 + xs * a0 + ys * a1) >> 16, (a5 + xs * a3 + ys * a4) >> 16


def _bilinear_source_coords(h: int, w: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
  """Continuous source `(x, y)` of each output pixel center, `[H, W]` each."""
  a, b, c, d, e, f = _rotation_matrix(h, w, angle)
  xo, yo = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
  return a * xo + b * yo + c, d * xo + e * yo + f


def rotation_maps(
  h: int, w: int, angles: Sequence[float], interpolation: str = 'nearest'
) -> PixelMaps:
  """The pixel maps of rotations by `angles` (degrees, counter-clockwise,
  about the image center, black fill) of `h x w` images.

  `'nearest'` reproduces `PIL.Image.rotate(angle)` (one tap: the stored
  pixel PIL's 16.16 fixed-point map picks, or the fill); `'bilinear'` has
  four taps, the neighbours of the source point (clamped to the border) with
  bilinear weights, all zero where the source point falls outside the image,
  as `rotate(angle, resample=BILINEAR)` before PIL's rounding to uint8.
  """
  if interpolation not in INTERPOLATIONS:
    raise ValueError(f'interpolation={interpolation!r}: must be one of {INTERPOLATIONS}')
  indices, weights = [], []
  for angle in angles:
    if interpolation == 'nearest':
      ix, iy = _nearest_source_pixels(h, w, angle)
      valid = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
      indices.append(np.where(valid, iy * w + ix, h * w).reshape(1, -1))
      continue
    sx, sy = _bilinear_source_coords(h, w, angle)
    valid = ((sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)).reshape(-1)
    px, py = sx - 0.5, sy - 0.5
    x0, y0 = np.floor(px), np.floor(py)
    fx, fy = (px - x0).reshape(-1), (py - y0).reshape(-1)
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    xa, xb = np.clip(x0, 0, w - 1), np.clip(x0 + 1, 0, w - 1)
    ya, yb = np.clip(y0, 0, h - 1), np.clip(y0 + 1, 0, h - 1)
    taps = [(ya, xa), (ya, xb), (yb, xa), (yb, xb)]
    indices.append(np.stack([(yi * w + xi).reshape(-1) for yi, xi in taps]))
    tap_weights = [(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy]
    weights.append(np.stack(tap_weights) * valid)
  index = np.stack(indices).astype(np.int32)
  weight = np.stack(weights).astype(np.float32) if weights else None
  return PixelMaps(index, weight)


def rotate_images(x: np.ndarray, angle: float, interpolation: str = 'nearest') -> np.ndarray:
  """Rotates images about their center, counter-clockwise, filling with 0.

  Pure NumPy, through `rotation_maps` (the maps Rotated MNIST's tasks use).
  With `'nearest'` it reproduces `PIL.Image.rotate(angle)` (default
  resampling, black fill, same 16.16 fixed-point arithmetic), which the GEM /
  La-MAML Rotated MNIST data used; `'bilinear'` matches
  `rotate(angle, resample=BILINEAR)` before PIL's rounding to uint8.
  Multiples of 90 degrees are exact (`rotate_images(x, 90)` equals
  `np.rot90(x, 1, axes=(1, 2))` on square images).

  Args:
    x: `[N, H, W, C]` images (any dtype; 0 is the fill value).
    angle: degrees, positive = counter-clockwise (as PIL).
    interpolation: `'nearest'` or `'bilinear'` (bilinear returns float32).

  Returns:
    `[N, H, W, C]` rotated images; the input dtype for `'nearest'`, float32
    for `'bilinear'`.
  """
  maps = rotation_maps(x.shape[1], x.shape[2], [angle], interpolation)
  return maps.apply(x, np.zeros(len(x), np.int32))
