"""The replay buffer of `jcl.algorithms.buffer` in PyTorch: same slots, same policies,
same random choices given the same random numbers.

Policies (`POLICIES`, keyed by `jcl.specs.REPLAY_POLICIES`): `'reservoir'`
(Vitter's algorithm R), `'class_balanced'` (CBRS, Chrysakis & Moens 2020,
Algorithm 1) and `'per_task'` (GEM / A-GEM's episodic memory: task k owns
slots `[k * per_task, (k + 1) * per_task)`).
Samples of a batch are offered one after another in batch order; padding
(mask 0) is never offered. Every random number comes from a
`jcl.torch.random.RandomSource` and a key, drawn exactly where the JAX buffer
draws from its key, so a source that reproduces `jax.random` makes the two
buffers identical.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from jcl.torch.random import Key, RandomSource
from jcl.types import Batch


@dataclasses.dataclass
class ReplayBuffer:
  """`N = capacity` slots (fields as `jcl.algorithms.buffer.ReplayBuffer`).

  Attributes:
    x: `[N, *input_shape]` float32 inputs.
    y, t: `[N]` int64 labels and task ids.
    logits: `[N, L]` float32 stored outputs (DER), `L = 0` when none.
    valid: `[N]` bool.
    seen: int64 scalar, samples offered so far.
    class_counts: `[num_classes]` valid samples per class.
    task_seen: `[num_tasks]` samples offered per task.
    class_seen: `[num_classes]` samples offered per class.
    class_full: `[num_classes]` bool, CBRS's full classes.
  """

  x: torch.Tensor
  y: torch.Tensor
  t: torch.Tensor
  logits: torch.Tensor
  valid: torch.Tensor
  seen: torch.Tensor
  class_counts: torch.Tensor
  task_seen: torch.Tensor
  class_seen: torch.Tensor
  class_full: torch.Tensor

  @property
  def capacity(self) -> int:
    return self.valid.shape[0]


def init(
  capacity: int,
  input_shape: tuple[int, ...],
  *,
  num_classes: int,
  num_tasks: int = 1,
  logits_dim: int = 0,
  device: torch.device | str | None = None,
) -> ReplayBuffer:
  """An empty buffer of `capacity` slots for inputs of shape `input_shape`."""
  if capacity <= 0:
    raise ValueError(f'capacity must be positive, got {capacity}')
  zeros = lambda shape, dtype: torch.zeros(shape, dtype=dtype, device=device)
  return ReplayBuffer(
    x=zeros((capacity, *input_shape), torch.float32),
    y=zeros((capacity,), torch.int64),
    t=zeros((capacity,), torch.int64),
    logits=zeros((capacity, logits_dim), torch.float32),
    valid=zeros((capacity,), torch.bool),
    seen=zeros((), torch.int64),
    class_counts=zeros((num_classes,), torch.int64),
    task_seen=zeros((num_tasks,), torch.int64),
    class_seen=zeros((num_classes,), torch.int64),
    class_full=zeros((num_classes,), torch.bool),
  )


def size(buffer: ReplayBuffer) -> torch.Tensor:
  """The number of valid slots."""
  return torch.sum(buffer.valid)


# ----------------------------------------------------------------------------- helpers


def _counts(idx: torch.Tensor, where: torch.Tensor, size: int) -> torch.Tensor:
  """int64 `[size]`: `c[k]` = how many `i` with `where[i]` (bool) have
  `idx[i] == k` (indices out of range count nowhere), by comparing with every
  k (a few ops, no gather)."""
  hits = idx.reshape(-1, 1) == torch.arange(size, dtype=idx.dtype, device=idx.device)
  return torch.sum(hits & where.reshape(-1, 1), 0)


def _add_counts(counts: torch.Tensor, idx: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
  """`counts[idx] += 1` where `where` (bool), for the indices in range (others dropped)."""
  return counts + _counts(idx, where, counts.shape[0]).to(counts.dtype)


def _batch_logits(buffer: ReplayBuffer, batch: Batch, logits) -> torch.Tensor:
  num_samples, logits_dim = batch.y.shape[0], buffer.logits.shape[-1]
  if logits_dim == 0:
    return torch.zeros((num_samples, 0), device=buffer.x.device)
  if logits is None:
    raise ValueError(f'this buffer stores logits of width {logits_dim}: pass `logits`')
  if tuple(logits.shape) != (num_samples, logits_dim):
    raise ValueError(
      f'logits must have shape {(num_samples, logits_dim)}, got {tuple(logits.shape)}'
    )
  return logits.detach().float()


def _count_offered(buffer: ReplayBuffer, y, t, offered) -> ReplayBuffer:
  offered = offered.reshape(-1)
  buffer.seen = buffer.seen + torch.sum(offered)
  buffer.class_seen = _add_counts(buffer.class_seen, y, offered)
  buffer.task_seen = _add_counts(buffer.task_seen, t, offered)
  return buffer


def _recount_classes(buffer: ReplayBuffer) -> ReplayBuffer:
  counts = buffer.class_counts
  buffer.class_counts = _counts(buffer.y, buffer.valid, counts.shape[0]).to(counts.dtype)
  return buffer


def _store(buffer: ReplayBuffer, slot, write, batch: Batch, logits) -> ReplayBuffer:
  """Writes sample `i` to `slot[i]` where `write[i]`; a later sample of the
  batch going to the same slot wins, as if written one after another."""
  # [i, j]: a later sample j writes sample i's slot (the strict upper triangle).
  later_same = torch.triu((slot[None, :] == slot[:, None]) & write[None, :], diagonal=1)
  rows = torch.nonzero(write & ~torch.any(later_same, dim=1)).reshape(-1)
  idx = slot.index_select(0, rows)  # distinct slots
  buffer.x.index_copy_(0, idx, batch.x.index_select(0, rows).to(buffer.x.dtype))
  buffer.y.index_copy_(0, idx, batch.y.index_select(0, rows).long())
  buffer.t.index_copy_(0, idx, batch.t.index_select(0, rows).long())
  if buffer.logits.shape[-1]:
    buffer.logits.index_copy_(0, idx, logits.index_select(0, rows))
  buffer.valid.index_fill_(0, idx, True)
  return _recount_classes(buffer)


def _random_slot(source: RandomSource, key: Key, eligible: torch.Tensor) -> torch.Tensor:
  """A slot drawn uniformly among the `eligible` ones; 0 when none is."""
  cumulative = torch.cumsum(eligible.long(), 0)
  r = source.randint(key, torch.clamp(cumulative[-1], min=1))
  return torch.argmax((cumulative > r).long())


# ----------------------------------------------------------------------------- policies


def add_reservoir(
  buffer: ReplayBuffer, batch: Batch, source: RandomSource, key: Key, logits=None
) -> ReplayBuffer:
  """Algorithm R: the n-th offered sample goes to slot `n - 1` while `n <= N`,
  then replaces slot `j ~ U{0..n-1}` if `j < N`."""
  logits = _batch_logits(buffer, batch, logits)
  offered = batch.mask > 0
  n = buffer.seen + torch.cumsum(offered.long(), 0)
  j = source.randint(key, torch.clamp(n, min=1))
  slot = torch.where(n <= buffer.capacity, n - 1, j)
  write = offered & (slot < buffer.capacity)
  buffer = _store(buffer, slot, write, batch, logits)
  return _count_offered(buffer, batch.y, batch.t, offered)


def add_per_task(
  buffer: ReplayBuffer, batch: Batch, source: RandomSource, key: Key, per_task: int, logits=None
) -> ReplayBuffer:
  """Each task's own reservoir over its slots (GEM's episodic memory)."""
  num_tasks = buffer.task_seen.shape[0]
  if num_tasks * per_task != buffer.capacity:
    raise ValueError(
      f'per-task memory needs num_tasks * per_task == capacity, got '
      f'{num_tasks} * {per_task} != {buffer.capacity}'
    )
  logits = _batch_logits(buffer, batch, logits)
  offered = batch.mask > 0
  t = batch.t.long()
  in_range = (t >= 0) & (t < num_tasks)
  task = torch.clamp(t, 0, num_tasks - 1)
  order = torch.arange(task.shape[0], device=task.device)
  not_after = order[None, :] <= order[:, None]
  same_task_before = not_after & offered[None, :] & (task[None, :] == task[:, None])
  n = buffer.task_seen[task] + torch.sum(same_task_before, 1)
  j = source.randint(key, torch.clamp(n, min=1))
  local = torch.where(n <= per_task, n - 1, j)
  write = offered & in_range & (local < per_task)
  buffer = _store(buffer, task * per_task + local, write, batch, logits)
  return _count_offered(buffer, batch.y, batch.t, offered)


def _offer_class_balanced(buffer: ReplayBuffer, x, y, t, mask, logits, source, key):
  """CBRS for one sample."""
  offered = mask > 0
  buffer = _count_offered(buffer, y, t, offered)
  num_classes = buffer.class_counts.shape[0]
  label = torch.clamp(y.long(), 0, num_classes - 1)
  stored_labels = torch.clamp(buffer.y, 0, num_classes - 1)
  counts = buffer.class_counts
  memory_full = torch.all(buffer.valid)
  largest = counts == torch.max(counts)
  buffer.class_full = buffer.class_full | (largest & memory_full & offered)

  key_largest, key_own, key_accept = source.split(key, 3)
  empty_slot = torch.argmin(buffer.valid.long())
  largest_slot = _random_slot(source, key_largest, buffer.valid & largest[stored_labels])
  own_slot = _random_slot(source, key_own, buffer.valid & (stored_labels == label))
  accept = source.randint(key_accept, torch.clamp(buffer.class_seen[label], min=1)) < counts[label]

  is_full = buffer.class_full[label]
  slot = torch.where(memory_full, torch.where(is_full, own_slot, largest_slot), empty_slot)
  write = offered & (y >= 0) & (y < num_classes) & (~memory_full | ~is_full | accept)
  if bool(write):
    if bool(buffer.valid[slot]):
      counts = counts.clone()
      counts[stored_labels[slot]] -= 1
    counts = counts.clone()
    counts[label] += 1
    buffer.x[slot] = x
    buffer.y[slot] = y.long()
    buffer.t[slot] = t.long()
    buffer.logits[slot] = logits
    buffer.valid[slot] = True
    buffer.class_counts = counts
  return buffer


def add_class_balanced(
  buffer: ReplayBuffer, batch: Batch, source: RandomSource, key: Key, logits=None
) -> ReplayBuffer:
  """Class-balancing reservoir sampling (CBRS, Chrysakis & Moens 2020, Algorithm 1),
  one sample at a time, as `jcl.algorithms.buffer.add_class_balanced`."""
  logits = _batch_logits(buffer, batch, logits)
  keys = source.split(key, batch.y.shape[0])
  for i in range(batch.y.shape[0]):
    buffer = _offer_class_balanced(
      buffer, batch.x[i], batch.y[i], batch.t[i], batch.mask[i], logits[i], source, keys[i]
    )
  return buffer


def _add_per_task(buffer, batch, source, key, logits, per_task):
  if per_task is None:
    raise ValueError("policy 'per_task' needs `per_task`")
  return add_per_task(buffer, batch, source, key, per_task, logits)


# Policy name (`jcl.specs.REPLAY_POLICIES`) ->
# `(buffer, batch, source, key, logits, per_task) -> buffer`, as `jcl.algorithms.buffer.POLICIES`.
POLICIES: dict[str, Callable[..., ReplayBuffer]] = {
  'reservoir': lambda buffer, batch, source, key, logits, per_task: add_reservoir(
    buffer, batch, source, key, logits
  ),
  'class_balanced': lambda buffer, batch, source, key, logits, per_task: add_class_balanced(
    buffer, batch, source, key, logits
  ),
  'per_task': _add_per_task,
}


def add(
  buffer: ReplayBuffer,
  batch: Batch,
  source: RandomSource,
  key: Key,
  *,
  policy: str,
  logits=None,
  per_task: int | None = None,
) -> ReplayBuffer:
  """Offers `batch` to the buffer with `policy`, one of `POLICIES` (in place)."""
  if policy not in POLICIES:
    raise ValueError(f'unknown buffer policy {policy!r}; expected one of {tuple(POLICIES)}')
  return POLICIES[policy](buffer, batch, source, key, logits, per_task)


# ----------------------------------------------------------------------------- reading


def _gather(buffer: ReplayBuffer, idx, mask) -> tuple[Batch, torch.Tensor]:
  return Batch(buffer.x[idx], buffer.y[idx], buffer.t[idx], mask.float()), buffer.logits[idx]


def sample(
  buffer: ReplayBuffer,
  source: RandomSource,
  key: Key,
  size: int,
  *,
  task_mask: torch.Tensor | None = None,
) -> tuple[Batch, torch.Tensor]:
  """`size` slots uniformly without replacement among the eligible ones.

  As the JAX buffer: each eligible slot gets a random 31-bit score
  (ineligible: -1) and the `size` largest are taken, ties in slot order;
  rows beyond the eligible ones have mask 0.

  Returns:
    `(batch [size], logits [size, L])`.
  """
  eligible = buffer.valid
  if task_mask is not None:
    num_tasks = task_mask.shape[0]
    allowed = task_mask[torch.clamp(buffer.t, 0, num_tasks - 1)]
    eligible = eligible & allowed & (buffer.t >= 0) & (buffer.t < num_tasks)
  scores = torch.where(eligible, source.bits31(key, buffer.capacity), torch.full_like(buffer.y, -1))
  k = min(size, buffer.capacity)
  top, idx = torch.sort(scores, descending=True, stable=True)
  top, idx = top[:k], idx[:k]
  mask = top >= 0
  if size > k:
    idx = torch.cat([idx, torch.zeros(size - k, dtype=idx.dtype, device=idx.device)])
    mask = torch.cat([mask, torch.zeros(size - k, dtype=torch.bool, device=idx.device)])
  return _gather(buffer, idx, mask)


def task_slots(buffer: ReplayBuffer, task_id: int, per_task: int) -> tuple[Batch, torch.Tensor]:
  """Task `task_id`'s region of a per-task buffer, with mask = valid."""
  region = slice(task_id * per_task, (task_id + 1) * per_task)
  return (
    Batch(buffer.x[region], buffer.y[region], buffer.t[region], buffer.valid[region].float()),
    buffer.logits[region],
  )
