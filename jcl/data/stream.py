"""Fixed-shape chunks of mini-batches for `jit`/`scan` training and evaluation.

A chunk is a `Batch` of NumPy arrays with leading axes `[K, B]`
(`K = chunk_steps`, `B = batch_size`), always the same shape, so a jitted
`lax.scan` over the K steps compiles once. Short batches are padded with
zero samples of mask 0 and the last chunk with all-padding batches (mask all
0), which the training loop skips.
"""
from __future__ import annotations

from typing import Iterator, Optional, Protocol

import numpy as np

from jcl.types import Batch


class _Split(Protocol):
  """Anything with `x`, `y`, `t` arrays of equal length (e.g. `TaskSplit`)."""
  x: np.ndarray
  y: np.ndarray
  t: np.ndarray


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
  """Number of mini-batches in one epoch over `n` samples.

  Args:
    n: number of samples.
    batch_size: samples per batch.
    drop_last: drop the last partial batch instead of padding it.

  Returns:
    `n // batch_size` if `drop_last`, else `ceil(n / batch_size)`.
  """
  _check_positive(batch_size=batch_size)
  if n < 0:
    raise ValueError(f'n={n}: must be >= 0')
  return n // batch_size if drop_last else -(-n // batch_size)


def num_chunks(n: int, batch_size: int, chunk_steps: int,
               drop_last: bool = False) -> int:
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


def _chunks(split: _Split, order: np.ndarray, batch_size: int,
            chunk_steps: int) -> Iterator[Batch]:
  """Yields `[K, B]` chunks of `split` taken in `order`, zero/mask-0 padded."""
  k, b = chunk_steps, batch_size
  per_chunk = k * b
  x_shape = split.x.shape[1:]
  for start in range(0, len(order), per_chunk):
    idx = order[start:start + per_chunk]
    m = len(idx)
    if m == per_chunk:
      x = split.x[idx].astype(np.float32, copy=False)
      y = split.y[idx].astype(np.int32, copy=False)
      t = split.t[idx].astype(np.int32, copy=False)
      mask = np.ones(per_chunk, np.float32)
    else:
      x = np.zeros((per_chunk,) + x_shape, np.float32)
      y = np.zeros(per_chunk, np.int32)
      t = np.zeros(per_chunk, np.int32)
      mask = np.zeros(per_chunk, np.float32)
      x[:m] = split.x[idx]
      y[:m] = split.y[idx]
      t[:m] = split.t[idx]
      mask[:m] = 1.0
    yield Batch(x=x.reshape((k, b) + x_shape), y=y.reshape(k, b),
                t=t.reshape(k, b), mask=mask.reshape(k, b))


def epoch_chunks(split: _Split, *, batch_size: int, chunk_steps: int,
                 rng: Optional[np.random.Generator],
                 drop_last: bool = False) -> Iterator[Batch]:
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
  n = len(split.y)
  order = rng.permutation(n) if rng is not None else np.arange(n)
  if drop_last:
    order = order[:num_batches(n, batch_size, True) * batch_size]
  return _chunks(split, order, batch_size, chunk_steps)


def eval_chunks(split: _Split, *, batch_size: int, chunk_steps: int
               ) -> Iterator[Batch]:
  """All of `split`, in order, as fixed-shape chunks (for evaluation).

  Args:
    split: a `TaskSplit`.
    batch_size: B.
    chunk_steps: K.

  Yields:
    `Batch` chunks as `epoch_chunks` (no shuffling, nothing dropped); weight
    per-sample metrics by `mask`.
  """
  return epoch_chunks(split, batch_size=batch_size, chunk_steps=chunk_steps,
                      rng=None, drop_last=False)
