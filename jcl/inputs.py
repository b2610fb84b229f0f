"""Model inputs on a JAX device: splits staged there from the stored images.

A run puts each dataset's stored images on the device once (uint8 on CPU is
used in place, without a copy) with the views of its tasks (`StoredImages`:
pixel maps, scaling, normalization; `jcl.data.views` defines them). When a
task starts, its training split is staged there (`stage`: gather, pixel map
of each sample's task, normalization, in one pass over whole arrays) and the
previous task's is dropped; evaluation stages each task's test split in turn.
uint8 pixels are looked up in the view's table (`InputView.lookup_table`),
so the inputs equal the NumPy definition's bit for bit; float pixels
(bilinear maps, float datasets) go through `(s * scale - mean) / std`,
equal to float rounding. Memory holds the stored images and one staged
split, whatever the number of tasks, and staged splits are padded to one
length (`padded_length`), so the programs compile once for the stream.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jcl.data.views import InputView
from jcl.types import Batch


class StoredImages(NamedTuple):
  """Stored images and the view through which a run's tasks see them (a pytree).

  Attributes:
    images: `[M, H, W, C]` as stored (uint8, or float).
    index: int32 `[T, J, P * C]` pixel-map taps per channel value (clipped to
      the image), or None (no map).
    weight: float32 `[T, J, P * C]` tap weights, or None (one tap, copied).
    fill: bool `[T, P * C]`, False where a one-tap map reads the fill (0), or
      None (no such pixel).
    table: float32 `[256 * C]`, the input of uint8 value v in channel c at
      `v * C + c` (`InputView.lookup_table`), or None (float pixels: the
      arithmetic with `scale`, `mean`, `std`).
    scale: float32 `[]`, `1 / pixel_max`.
    mean: float32 `[C]`.
    std: float32 `[C]`.
  """

  images: jax.Array
  index: jax.Array | None
  weight: jax.Array | None
  fill: jax.Array | None
  table: jax.Array | None
  scale: jax.Array
  mean: jax.Array
  std: jax.Array


def stored_images(images: np.ndarray, view: InputView) -> StoredImages:
  """`images` and `view` as host arrays in a `StoredImages` (place them with
  `jax.device_put`, or stack several replicas' first)."""
  maps = view.maps
  c = images.shape[-1]
  index = weight = fill = None
  if maps is not None:
    p = maps.num_pixels
    per_value = maps.index[..., None] * c + np.arange(c)  # [T, J, P, C]
    index = np.minimum(per_value, p * c - 1).reshape(*maps.index.shape[:2], -1).astype(np.int32)
    if maps.weight is not None:
      weight = np.repeat(maps.weight, c, axis=-1)
    elif (maps.index >= p).any():
      fill = np.repeat(maps.index[:, 0] < p, c, axis=-1)
  table = None
  if images.dtype == np.uint8 and weight is None:
    table = view.lookup_table().reshape(-1)
  return StoredImages(
    images, index, weight, fill, table, np.float32(view.scale), view.mean, view.std
  )


def inputs(source: StoredImages, rows: jax.Array, t: jax.Array) -> jax.Array:
  """Model inputs float32 `[..., H, W, C]` of stored rows `rows [...]` of
  tasks `t [...]`; a row `>= M` (padding) gives an all-zero input.

  Whole-array gathers in the clip mode (the fill is a mask): XLA:CPU runs
  them many times faster than fill-mode or multi-axis gathers.
  """
  images = source.images
  m, (h, w, c) = images.shape[0], images.shape[1:]
  flat_rows, flat_t = rows.reshape(-1), t.reshape(-1)
  x = jnp.take(images.reshape(m, -1), flat_rows, axis=0, mode='fill', fill_value=0)
  if source.index is not None:
    index = source.index[flat_t]  # [n, J, P * C]
    if source.weight is None:
      x = jnp.take_along_axis(x, index[:, 0], axis=1, mode='clip')
      if source.fill is not None:
        x = jnp.where(source.fill[flat_t], x, jnp.zeros((), x.dtype))
    else:
      weight = source.weight[flat_t]
      tap = lambda j: jnp.take_along_axis(x, index[:, j], axis=1, mode='clip')
      out = weight[:, 0] * tap(0).astype(jnp.float32)
      for j in range(1, index.shape[1]):
        out = out + weight[:, j] * tap(j).astype(jnp.float32)
      x = out
  if source.table is not None:
    channel = jnp.arange(x.shape[1], dtype=jnp.int32) % c
    x = jnp.take(source.table, x.astype(jnp.int32) * c + channel, mode='clip')
  else:
    x = x.reshape(-1, h, w, c).astype(jnp.float32) * source.scale
    x = (x - source.mean) / source.std
  x = jnp.where((flat_rows < m)[:, None], x.reshape(len(flat_rows), -1), 0.0)
  return x.reshape(rows.shape + (h, w, c))


# Rows staged per block: a whole split's temporaries (the per-sample pixel
# maps and integer pixel values, 4 bytes a pixel each) would otherwise add two
# float32-sized copies of the split to the peak memory.
STAGE_BLOCK = 4096


@jax.jit
def stage(source: StoredImages, rows: jax.Array, t: jax.Array, y: jax.Array) -> Batch:
  """A split's samples staged on the device: `Batch(x [N, H, W, C] float32,
  y [N], t [N], None)` from its stored rows `rows [N]` (padding rows `>= M`
  stage as all-zero inputs; give them label and task 0). Whole-array passes
  over blocks of `STAGE_BLOCK` rows (`lax.map`), which XLA runs several times
  faster than the same gathers done batch by batch inside a scan, with
  temporaries of one block."""
  n = rows.shape[0]
  if n <= STAGE_BLOCK:
    return Batch(inputs(source, rows, t), y, t, None)
  blocks = -(-n // STAGE_BLOCK)
  pad = blocks * STAGE_BLOCK - n  # 0 for `padded_length`s above the block
  padded = lambda a, v: jnp.concatenate([a, jnp.full((pad,), v, a.dtype)]) if pad else a
  by_block = lambda a: a.reshape(blocks, STAGE_BLOCK)
  x = jax.lax.map(
    lambda rt: inputs(source, *rt),
    (by_block(padded(rows, source.images.shape[0])), by_block(padded(t, 0))),
  )
  x = x.reshape((blocks * STAGE_BLOCK,) + x.shape[2:])
  return Batch(x[:n] if pad else x, y, t, None)


def split_rows(split, length: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`(rows, t, y)` int32 of a `TaskSplit`, padded to `length` (default: its
  length) with row `M` (an all-zero input), task 0 and label 0: `stage`'s arguments."""
  pad = (len(split) if length is None else length) - len(split)
  rows = np.concatenate([split.rows, np.full(pad, len(split.images))]).astype(np.int32)
  t, y = (np.concatenate([a, np.zeros(pad, a.dtype)]).astype(np.int32) for a in (split.t, split.y))
  return rows, t, y


def stage_split(split, source: StoredImages, length: int | None = None) -> Batch:
  """A `TaskSplit` staged on the device from its stored images `source`
  (`stored_images(split.images, split.view)`, placed), padded to `length`
  rows (`split_rows`)."""
  return stage(source, *split_rows(split, length))


def take_rows(data: Batch, rows: jax.Array, mask: jax.Array) -> Batch:
  """Rows `rows [...]` of staged `data` (x `[N, ...]`, y, t) with `mask`;
  rows `>= N` are zeros."""
  take = lambda a: jnp.take(
    a.reshape(a.shape[0], -1), rows.reshape(-1), axis=0, mode='fill', fill_value=0
  )
  x = take(data.x).reshape(rows.shape + data.x.shape[1:])
  return Batch(x, take(data.y).reshape(rows.shape), take(data.t).reshape(rows.shape), mask)


def padded_length(n: int, at_least: int = 0) -> int:
  """A staged split's length: `at_least` when `n` fits (so every task's
  programs keep one shape), else `n` rounded up to `m * 2^k`, `8 <= m < 16`
  (few distinct shapes, at most 1/8 unused)."""
  if n <= at_least:
    return at_least
  k = max(n.bit_length() - 4, 0)
  return -(-n // (1 << k)) * (1 << k)
