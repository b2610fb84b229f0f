"""Fixed-shape chunks of mini-batches for `jit`/`scan` training and evaluation.

A chunk is a `Batch` of NumPy arrays with leading axes `[K, B]`
(`K = chunk_steps`, `B = batch_size`), always the same shape, so a jitted
`lax.scan` over the K steps compiles once. Short batches are padded with
zero samples of mask 0 and the last chunk with all-padding batches (mask all
0), which the training loop skips.

The order is decided apart from the arrays: `epoch_index_chunks` gives
`IndexChunk`s (row numbers and mask), which `gather` turns into a `Batch`
on the host, or a backend gathers where its data lives (the JAX loop keeps
a task's split on the device and gathers inside the compiled chunk).
"""

from __future__ import annotations

from typing import Iterator, NamedTuple, Optional, Protocol

import numpy as np

from jcl.types import Batch


class _Split(Protocol):
  """A `TaskSplit`: `y`, `t` arrays and the inputs of any of its samples."""

  y: np.ndarray
  t: np.ndarray

  def inputs(self, idx: np.ndarray) -> np.ndarray: ...


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
  """Number of mini-batches in one epoch over `n` samples.

  Args:
    n: number of samples.
    batch_size: samples per batch.
    drop_last: drop the last partial batch instead of padding it.

  Returns:
    `n // batch_size` if `drop_last`, else `ceil(n / batch_size)`.

  >>> num_batches(60000, 64), num_batches(60000, 64, drop_last=True)
  (938, 937)
  """
  _check_positive(batch_size=batch_size)
  if n < 0:
    raise ValueError(f'n={n}: must be >= 0')
  return n // batch_size if drop_last else -(-n // batch_size)


def num_chunks(n: int, batch_size: int, chunk_steps: int, drop_last: bool = False) -> int:
  """Number of `[chunk_steps, batch_size]` chunks in one epoch over `n` samples.

  Args:
    n: number of samples.
    batch_size: samples per batch.
    chunk_steps: batches per chunk.
    drop_last: drop the last partial batch instead of padding it.

  Returns:
    `ceil(num_batches(n, batch_size, drop_last) / chunk_steps)`.
  """
  _check_positive(chunk_steps=chunk_steps)
  return -(-num_batches(n, batch_size, drop_last) // chunk_steps)


def _check_positive(**kwargs: int) -> None:
  for key, value in kwargs.items():
    if not isinstance(value, (int, np.integer)) or value <= 0:
      raise ValueError(f'{key}={value!r}: must be a positive integer')


class IndexChunk(NamedTuple):
  """Which samples of a split a chunk holds: `idx [K, B]` int32 row numbers
  and `mask [K, B]` float32 (1 real, 0 padding). Padding slots hold the row
  number `n` (one past the end), so an out-of-bounds-filling gather
  (`jnp.take(..., mode='fill')`) gives them zeros, as `gather` does."""

  idx: np.ndarray
  mask: np.ndarray

  @property
  def padding_steps(self) -> bool:
    """Whether some of the K batches are all padding (the loop skips those)."""
    return not bool(np.all(self.mask.any(axis=1)))


def _index_chunks(
  order: np.ndarray, n: int, batch_size: int, chunk_steps: int, start: int = 0
) -> Iterator[IndexChunk]:
  """Yields `[K, B]` index chunks of `order`, from chunk `start` on, padded with `n`."""
  per_chunk = chunk_steps * batch_size
  for begin in range(start * per_chunk, len(order), per_chunk):
    part = order[begin : begin + per_chunk]
    idx = np.full(per_chunk, n, np.int32)
    idx[: len(part)] = part
    mask = np.zeros(per_chunk, np.float32)
    mask[: len(part)] = 1.0
    yield IndexChunk(idx.reshape(chunk_steps, batch_size), mask.reshape(chunk_steps, batch_size))


def epoch_order(
  n: int, batch_size: int, rng: Optional[np.random.Generator], drop_last: bool = False
) -> np.ndarray:
  """The sample order of one epoch over `n` samples: `rng.permutation(n)`
  (the stored order without `rng`), cut to whole batches with `drop_last`."""
  _check_positive(batch_size=batch_size)
  order = rng.permutation(n) if rng is not None else np.arange(n)
  if drop_last:
    order = order[: num_batches(n, batch_size, True) * batch_size]
  return order


def epoch_index_chunks(
  n: int,
  *,
  batch_size: int,
  chunk_steps: int,
  rng: Optional[np.random.Generator],
  drop_last: bool = False,
  start: int = 0,
) -> Iterator[IndexChunk]:
  """One epoch over `n` samples as index chunks (the order of `epoch_chunks`).

  Args:
    n: samples in the split.
    batch_size: B.
    chunk_steps: K.
    rng: shuffles the epoch when given.
    drop_last: drop the last partial batch.
    start: the first chunk yielded (earlier ones are skipped without work,
      e.g. when a run resumes mid-epoch).

  >>> first, last = epoch_index_chunks(7, batch_size=2, chunk_steps=2, rng=None)
  >>> first.idx.tolist(), last.idx.tolist(), last.mask.tolist()
  ([[0, 1], [2, 3]], [[4, 5], [6, 7]], [[1.0, 1.0], [1.0, 0.0]])
  >>> chunk = next(epoch_index_chunks(7, batch_size=4, chunk_steps=3, rng=None))
  >>> last.padding_steps, chunk.padding_steps
  (False, True)
  """
  _check_positive(chunk_steps=chunk_steps)
  return _index_chunks(
    epoch_order(n, batch_size, rng, drop_last), n, batch_size, chunk_steps, start
  )


def subset_index_chunk(n: int, batch_size: int, rows: Optional[np.ndarray] = None) -> IndexChunk:
  """Rows `rows` of a split of `n` (all of them by default), in order, as one
  padded index chunk `[ceil(len / B), B]` (e.g. the task data of `end_task`)."""
  rows = np.arange(n) if rows is None else np.asarray(rows)
  steps = max(num_batches(len(rows), batch_size), 1)
  return next(_index_chunks(rows, n, batch_size, steps))


def gather(split: _Split, chunk: IndexChunk) -> Batch:
  """The samples of `chunk` as a `Batch` of NumPy arrays `[K, B, ...]` (the
  inputs of those samples alone are derived: `TaskSplit.inputs`); padding
  samples are all-zero with label 0, task 0, mask 0."""
  k, b = chunk.idx.shape
  flat = chunk.idx.reshape(-1)
  real = flat < len(split.y)
  rows = np.where(real, flat, 0)

  def take(a):
    out = np.asarray(a)[rows].astype(np.int32, copy=False)  # fancy indexing: a new array
    if not real.all():
      out[~real] = 0
    return out.reshape((k, b) + out.shape[1:])

  x = split.inputs(flat)
  return Batch(x=x.reshape((k, b) + x.shape[1:]), y=take(split.y), t=take(split.t), mask=chunk.mask)


def epoch_chunks(
  split: _Split,
  *,
  batch_size: int,
  chunk_steps: int,
  rng: Optional[np.random.Generator],
  drop_last: bool = False,
) -> Iterator[Batch]:
  """One epoch over `split` as fixed-shape chunks of mini-batches.

  Every sample appears exactly once with mask 1 (unless dropped by
  `drop_last`). Padding samples are all-zero with label 0, task 0, mask 0.

  Args:
    split: a `TaskSplit` (x `[N, ...]`, y `[N]`, t `[N]`).
    batch_size: B, samples per batch.
    chunk_steps: K, batches per chunk.
    rng: shuffles the epoch when given; None keeps the stored order.
    drop_last: drop the last partial batch (the last chunk may still be
      padded with all-mask-0 batches up to K).

  Yields:
    `Batch` of NumPy arrays: x `[K, B, ...]` float32, y `[K, B]` int32,
    t `[K, B]` int32, mask `[K, B]` float32; `num_chunks(len(split),
    batch_size, chunk_steps, drop_last)` of them.
  """
  _check_positive(batch_size=batch_size, chunk_steps=chunk_steps)
  return (
    gather(split, chunk)
    for chunk in epoch_index_chunks(
      len(split.y), batch_size=batch_size, chunk_steps=chunk_steps, rng=rng, drop_last=drop_last
    )
  )


def eval_chunks(split: _Split, *, batch_size: int, chunk_steps: int) -> Iterator[Batch]:
  """All of `split`, in order, as fixed-shape chunks (for evaluation).

  Args:
    split: a `TaskSplit`.
    batch_size: B.
    chunk_steps: K.

  Yields:
    `Batch` chunks as `epoch_chunks` (no shuffling, nothing dropped); weight
    per-sample metrics by `mask`.
  """
  return epoch_chunks(
    split, batch_size=batch_size, chunk_steps=chunk_steps, rng=None, drop_last=False
  )
