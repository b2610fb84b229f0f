"""A fixed-shape replay buffer for rehearsal methods (ER, DER, GEM, A-GEM, ...).

The buffer is a NamedTuple of arrays with static shapes, so it lives inside an
algorithm's `algo_state`: insertion and sampling jit-compile, run inside a
`lax.scan`ned training step and vmap over a leading seed axis. All decisions
are `jnp.where`s on traced values; randomness comes only from the `rng`
arguments, so runs are deterministic.

Insertion policies (`POLICIES`, keyed by `jcl.specs.REPLAY_POLICIES`):

* `'reservoir'`: Vitter's algorithm R (Vitter 1985, "Random sampling with a
  reservoir"), as in ER / DER (Chaudhry et al. 2019; Buzzega et al. 2020).
  After `n` offered samples every one of them is stored with probability
  exactly `capacity / n`.
* `'class_balanced'`: class-balancing reservoir sampling, CBRS (Chrysakis &
  Moens 2020, "Online continual learning from imbalanced data", Algorithm 1).
* `'per_task'`: the episodic memory of GEM / A-GEM (Lopez-Paz & Ranzato 2017;
  Chaudhry et al. 2019): task `k` owns the slots
  `[k * per_task, (k + 1) * per_task)`, filled by a reservoir over the task's
  own stream.

Samples of a batch are offered one after another in batch order; only samples
with `batch.mask > 0` are offered, so padding never enters the buffer. Labels
must lie in `[0, num_classes)`.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jcl.types import Batch


class ReplayBuffer(NamedTuple):
  """A replay buffer of `N = capacity` slots.

  Every policy keeps `seen`, `class_counts`, `task_seen` and `class_seen`
  up to date; `class_full` is CBRS's own state.

  Attributes:
    x: `[N, *input_shape]` float32 inputs.
    y: `[N]` int32 labels.
    t: `[N]` int32 task ids.
    logits: `[N, L]` float32 model outputs stored with their sample (DER);
      `L = 0` when the algorithm stores none.
    valid: `[N]` bool, the slot holds a sample.
    seen: int32 scalar, samples offered so far (algorithm R's `n`).
    class_counts: `[num_classes]` int32, valid samples per class.
    task_seen: `[num_tasks]` int32, samples offered per task (the per-task
      reservoirs' `n`).
    class_seen: `[num_classes]` int32, samples offered per class (CBRS's
      `n_c`).
    class_full: `[num_classes]` bool, CBRS's "full" classes: those that are,
      or have been at some step with the buffer full, a largest class.
  """

  x: jax.Array
  y: jax.Array
  t: jax.Array
  logits: jax.Array
  valid: jax.Array
  seen: jax.Array
  class_counts: jax.Array
  task_seen: jax.Array
  class_seen: jax.Array
  class_full: jax.Array


def init(
  capacity: int,
  input_shape: tuple[int, ...],
  *,
  num_classes: int,
  num_tasks: int = 1,
  logits_dim: int = 0,
) -> ReplayBuffer:
  """An empty buffer of `capacity` slots for inputs of shape `input_shape`."""
  if capacity <= 0:
    raise ValueError(f'capacity must be positive, got {capacity}')
  return ReplayBuffer(
    x=jnp.zeros((capacity, *input_shape), jnp.float32),
    y=jnp.zeros((capacity,), jnp.int32),
    t=jnp.zeros((capacity,), jnp.int32),
    logits=jnp.zeros((capacity, logits_dim), jnp.float32),
    valid=jnp.zeros((capacity,), jnp.bool_),
    seen=jnp.zeros((), jnp.int32),
    class_counts=jnp.zeros((num_classes,), jnp.int32),
    task_seen=jnp.zeros((num_tasks,), jnp.int32),
    class_seen=jnp.zeros((num_classes,), jnp.int32),
    class_full=jnp.zeros((num_classes,), jnp.bool_),
  )


def size(buffer: ReplayBuffer) -> jax.Array:
  """The number of valid slots, an int32 scalar."""
  return jnp.sum(buffer.valid, dtype=jnp.int32)


# ----------------------------------------------------------------------------
# Helpers.


def _num_slots(buffer: ReplayBuffer) -> int:
  """The capacity `N` (static)."""
  return buffer.valid.shape[0]


def _in_range_or(idx: jax.Array, n: int) -> jax.Array:
  """`idx` where it lies in `[0, n)`, else `n` (dropped by `mode='drop'` scatters)."""
  return jnp.where((idx >= 0) & (idx < n), idx, n)


def _batch_logits(buffer: ReplayBuffer, batch: Batch, logits: jax.Array | None) -> jax.Array:
  """The `[B, L]` logits to store with `batch` (`[B, 0]` when the buffer keeps none)."""
  num_samples, logits_dim = batch.y.shape[0], buffer.logits.shape[-1]
  if logits_dim == 0:
    return jnp.zeros((num_samples, 0), jnp.float32)
  if logits is None:
    raise ValueError(f'this buffer stores logits of width {logits_dim}: pass `logits`')
  if logits.shape != (num_samples, logits_dim):
    raise ValueError(f'logits must have shape {(num_samples, logits_dim)}, got {logits.shape}')
  return logits.astype(jnp.float32)


def _count_offered(
  buffer: ReplayBuffer, y: jax.Array, t: jax.Array, offered: jax.Array
) -> ReplayBuffer:
  """Adds the offered samples (`y`, `t`, `offered`: `[B]` or scalars) to the counters."""
  ones = offered.astype(jnp.int32)
  num_classes, num_tasks = buffer.class_seen.shape[0], buffer.task_seen.shape[0]
  return buffer._replace(
    seen=buffer.seen + jnp.sum(ones),
    class_seen=buffer.class_seen.at[_in_range_or(y, num_classes)].add(ones, mode='drop'),
    task_seen=buffer.task_seen.at[_in_range_or(t, num_tasks)].add(ones, mode='drop'),
  )


def _recount_classes(buffer: ReplayBuffer) -> ReplayBuffer:
  num_classes = buffer.class_counts.shape[0]
  counts = (
    jnp.zeros_like(buffer.class_counts)
    .at[_in_range_or(buffer.y, num_classes)]
    .add(buffer.valid.astype(jnp.int32), mode='drop')
  )
  return buffer._replace(class_counts=counts)


def _store(
  buffer: ReplayBuffer, slot: jax.Array, write: jax.Array, batch: Batch, logits: jax.Array
) -> ReplayBuffer:
  """Writes sample `i` of `batch` to `slot[i]` where `write[i]`, in batch order.

  Where two samples of the batch go to the same slot the later one wins, as if
  they had been written one after another; the scatter then has unique
  indices. `class_counts` is recounted.

  Args:
    slot: `[B]` int32 target slots.
    write: `[B]` bool.
    batch: the samples, `x [B, *input_shape]`, `y [B]`, `t [B]`.
    logits: `[B, L]`.
  """
  num_samples = slot.shape[0]
  later = jnp.arange(num_samples)[None, :] > jnp.arange(num_samples)[:, None]
  overwritten = jnp.any(later & write[None, :] & (slot[None, :] == slot[:, None]), axis=1)
  idx = jnp.where(write & ~overwritten, slot, _num_slots(buffer))

  def put(array, values):
    return array.at[idx].set(values.astype(array.dtype), mode='drop')

  buffer = buffer._replace(
    x=put(buffer.x, batch.x),
    y=put(buffer.y, batch.y),
    t=put(buffer.t, batch.t),
    logits=put(buffer.logits, logits),
    valid=put(buffer.valid, jnp.ones_like(write)),
  )
  return _recount_classes(buffer)


def _random_slot(key: jax.Array, eligible: jax.Array) -> jax.Array:
  """A slot drawn uniformly among the `eligible` ones (`[N]` bool); 0 when none is."""
  cumulative = jnp.cumsum(eligible.astype(jnp.int32))
  r = jax.random.randint(key, (), 0, jnp.maximum(cumulative[-1], 1))
  return jnp.argmax(cumulative > r)


# ----------------------------------------------------------------------------
# Insertion policies.


def add_reservoir(
  buffer: ReplayBuffer, batch: Batch, rng: jax.Array, logits: jax.Array | None = None
) -> ReplayBuffer:
  """Offers the real samples of `batch` to the buffer with algorithm R.

  The `n`-th offered sample (1-based, counted by `buffer.seen`) goes to slot
  `n - 1` while `n <= N`; after that it replaces slot `j ~ U{0, ..., n - 1}`
  if `j < N`. So after `n >= N` offers each is stored with probability
  `N / n`.

  Args:
    buffer: the buffer.
    batch: `x [B, *input_shape]`, `y [B]`, `t [B]`, `mask [B]`.
    rng: a PRNG key.
    logits: `[B, L]`, stored with the samples; required when `L > 0`.
  Returns:
    the updated buffer.
  """
  logits = _batch_logits(buffer, batch, logits)
  offered = batch.mask > 0
  n = buffer.seen + jnp.cumsum(offered.astype(jnp.int32))
  j = jax.random.randint(rng, n.shape, 0, jnp.maximum(n, 1))
  slot = jnp.where(n <= _num_slots(buffer), n - 1, j)
  write = offered & (slot < _num_slots(buffer))
  buffer = _store(buffer, slot, write, batch, logits)
  return _count_offered(buffer, batch.y, batch.t, offered)


def add_per_task(
  buffer: ReplayBuffer, batch: Batch, rng: jax.Array, per_task: int, logits: jax.Array | None = None
) -> ReplayBuffer:
  """Offers the real samples of `batch` to their task's episodic memory (GEM).

  Task `k = batch.t[i]` owns slots `[k * per_task, (k + 1) * per_task)` and
  fills them with algorithm R over its own stream (counter `task_seen[k]`):
  once a task has offered `n_k >= per_task` samples its region holds exactly
  `per_task` of them, each with probability `per_task / n_k`. Samples whose
  task id lies outside `[0, num_tasks)` are not stored.

  Args:
    buffer: a buffer with `num_tasks * per_task == N`.
    batch: `x [B, *input_shape]`, `y [B]`, `t [B]`, `mask [B]`.
    rng: a PRNG key.
    per_task: slots per task (static).
    logits: `[B, L]`, stored with the samples; required when `L > 0`.
  Returns:
    the updated buffer.
  """
  num_tasks = buffer.task_seen.shape[0]
  if num_tasks * per_task != _num_slots(buffer):
    raise ValueError(
      f'per-task memory needs num_tasks * per_task == capacity, got '
      f'{num_tasks} * {per_task} != {_num_slots(buffer)}'
    )
  logits = _batch_logits(buffer, batch, logits)
  offered = batch.mask > 0
  in_range = (batch.t >= 0) & (batch.t < num_tasks)
  task = jnp.clip(batch.t, 0, num_tasks - 1)
  # n[i]: the 1-based position of sample i in its task's stream.
  num_samples = task.shape[0]
  not_after = jnp.arange(num_samples)[None, :] <= jnp.arange(num_samples)[:, None]
  same_task_before = not_after & offered[None, :] & (task[None, :] == task[:, None])
  n = buffer.task_seen[task] + jnp.sum(same_task_before, axis=1, dtype=jnp.int32)
  j = jax.random.randint(rng, n.shape, 0, jnp.maximum(n, 1))
  local = jnp.where(n <= per_task, n - 1, j)
  write = offered & in_range & (local < per_task)
  buffer = _store(buffer, task * per_task + local, write, batch, logits)
  return _count_offered(buffer, batch.y, batch.t, offered)


def _offer_class_balanced(buffer: ReplayBuffer, sample, key: jax.Array) -> ReplayBuffer:
  """CBRS (Chrysakis & Moens 2020, Algorithm 1) for one sample `(x, y, t, mask, logits)`."""
  x, y, t, mask, logits = sample
  offered = mask > 0
  buffer = _count_offered(buffer, y, t, offered)
  num_classes = buffer.class_counts.shape[0]
  label = jnp.clip(y, 0, num_classes - 1)
  stored_labels = jnp.clip(buffer.y, 0, num_classes - 1)
  counts = buffer.class_counts
  memory_full = jnp.all(buffer.valid)
  largest = counts == jnp.max(counts)
  class_full = buffer.class_full | (largest & memory_full & offered)
  buffer = buffer._replace(class_full=class_full)

  key_largest, key_own, key_accept = jax.random.split(key, 3)
  # Memory not full: the first empty slot.
  empty_slot = jnp.argmin(buffer.valid)
  # Class not full: a random stored instance of one of the largest classes.
  largest_slot = _random_slot(key_largest, buffer.valid & largest[stored_labels])
  # Class full: with probability m_c / n_c, a random stored instance of the class.
  own_slot = _random_slot(key_own, buffer.valid & (stored_labels == label))
  accept = (
    jax.random.randint(key_accept, (), 0, jnp.maximum(buffer.class_seen[label], 1)) < counts[label]
  )

  is_full = class_full[label]
  slot = jnp.where(memory_full, jnp.where(is_full, own_slot, largest_slot), empty_slot)
  write = offered & (y >= 0) & (y < num_classes) & (~memory_full | ~is_full | accept)

  idx = jnp.where(write, slot, _num_slots(buffer))
  evicted = write & buffer.valid[slot]
  counts = counts.at[stored_labels[slot]].add(-evicted.astype(jnp.int32))
  counts = counts.at[label].add(write.astype(jnp.int32))

  def put(array, value):
    return array.at[idx].set(jnp.asarray(value).astype(array.dtype), mode='drop')

  return buffer._replace(
    x=put(buffer.x, x),
    y=put(buffer.y, y),
    t=put(buffer.t, t),
    logits=put(buffer.logits, logits),
    valid=put(buffer.valid, True),
    class_counts=counts,
  )


def add_class_balanced(
  buffer: ReplayBuffer, batch: Batch, rng: jax.Array, logits: jax.Array | None = None
) -> ReplayBuffer:
  """Offers the real samples of `batch` with class-balancing reservoir sampling.

  CBRS (Chrysakis & Moens 2020, Algorithm 1). A class is *full* once it is,
  or has been at some step with the buffer full, a largest class (most
  stored samples). For a sample of class `c`:

  * buffer not full: store it in the first empty slot;
  * `c` not full: replace a stored sample drawn uniformly among all stored
    samples of the largest class(es);
  * `c` full: with probability `m_c / n_c` (`m_c` stored, `n_c` offered so
    far including this one) replace a uniformly drawn stored sample of `c`;
    else drop it.

  Guarantees, once the buffer is full, with `M` the largest stored count:
  `M` never grows; a full class stores `M - 1` or `M` samples; a class that
  is not full has lost none, `m_c = n_c`. So classes that keep arriving end
  up within one sample of each other, and on an imbalanced stream rare
  classes keep all their samples while the others share the rest within one
  (water-filling). As in the paper, a full class that has dropped to
  `M - 1` does not evict other classes: it keeps a reservoir of its own
  stream, so its stored samples stay a uniform-like sample of it.

  Args:
    buffer: the buffer.
    batch: `x [B, *input_shape]`, `y [B]`, `t [B]`, `mask [B]`.
    rng: a PRNG key.
    logits: `[B, L]`, stored with the samples; required when `L > 0`.
  Returns:
    the updated buffer.
  """
  logits = _batch_logits(buffer, batch, logits)
  keys = jax.random.split(rng, batch.y.shape[0])

  def body(buf, inputs):
    sample, key = inputs
    return _offer_class_balanced(buf, sample, key), None

  samples = (batch.x, batch.y, batch.t, batch.mask, logits)
  return jax.lax.scan(body, buffer, (samples, keys))[0]


def _add_per_task(buffer, batch, rng, logits, per_task):
  if per_task is None:
    raise ValueError("policy 'per_task' needs `per_task`")
  return add_per_task(buffer, batch, rng, per_task, logits)


# Policy name (`jcl.specs.REPLAY_POLICIES`) -> `(buffer, batch, rng, logits, per_task) -> buffer`.
POLICIES: dict[str, Callable[..., ReplayBuffer]] = {
  'reservoir': lambda buffer, batch, rng, logits, per_task: add_reservoir(
    buffer, batch, rng, logits
  ),
  'class_balanced': lambda buffer, batch, rng, logits, per_task: add_class_balanced(
    buffer, batch, rng, logits
  ),
  'per_task': _add_per_task,
}


def add(
  buffer: ReplayBuffer,
  batch: Batch,
  rng: jax.Array,
  *,
  policy: str,
  logits: jax.Array | None = None,
  per_task: int | None = None,
) -> ReplayBuffer:
  """Offers `batch` to the buffer with `policy`, one of `POLICIES`.

  `per_task` (slots per task) is required by the `'per_task'` policy.
  """
  if policy not in POLICIES:
    raise ValueError(f'unknown buffer policy {policy!r}; expected one of {tuple(POLICIES)}')
  return POLICIES[policy](buffer, batch, rng, logits, per_task)


# ----------------------------------------------------------------------------
# Reading.


def _gather(buffer: ReplayBuffer, idx: jax.Array, mask: jax.Array) -> tuple[Batch, jax.Array]:
  batch = Batch(buffer.x[idx], buffer.y[idx], buffer.t[idx], mask.astype(jnp.float32))
  return batch, buffer.logits[idx]


def sample(
  buffer: ReplayBuffer, rng: jax.Array, size: int, *, task_mask: jax.Array | None = None
) -> tuple[Batch, jax.Array]:
  """Draws `size` slots uniformly without replacement among the eligible ones.

  Eligible slots are the valid ones whose task id is allowed by `task_mask`.
  Each slot gets a random 31-bit score (ineligible: -1) and the `size`
  largest are taken (`lax.top_k`), which is a uniform draw without
  replacement. When fewer than `size` slots are eligible every eligible one
  is returned and the remaining rows have mask 0.

  Args:
    buffer: the buffer.
    rng: a PRNG key.
    size: rows to draw (static).
    task_mask: optional `[num_tasks]` bool, the task ids to draw from.
  Returns:
    `(batch, logits)`: a `Batch` with leading axis `[size]` (mask 1 for a
    drawn sample, 0 for a row with nothing behind it) and `logits [size, L]`.
  """
  eligible = buffer.valid
  if task_mask is not None:
    num_tasks = task_mask.shape[0]
    allowed = task_mask[jnp.clip(buffer.t, 0, num_tasks - 1)]
    eligible = eligible & allowed & (buffer.t >= 0) & (buffer.t < num_tasks)
  bits = jax.random.bits(rng, eligible.shape, jnp.uint32)
  scores = jnp.where(eligible, (bits >> 1).astype(jnp.int32), -1)
  k = min(size, _num_slots(buffer))
  top, idx = jax.lax.top_k(scores, k)
  mask = top >= 0
  if size > k:
    idx = jnp.concatenate([idx, jnp.zeros((size - k,), idx.dtype)])
    mask = jnp.concatenate([mask, jnp.zeros((size - k,), jnp.bool_)])
  return _gather(buffer, idx, mask)


def task_slots(buffer: ReplayBuffer, task_id, per_task: int) -> tuple[Batch, jax.Array]:
  """Task `task_id`'s region `[task_id * per_task, (task_id + 1) * per_task)` of a
  per-task buffer, with mask = valid (GEM's per-task gradients).

  Args:
    buffer: a buffer filled with `add_per_task`.
    task_id: an int or traced int32 scalar in `[0, num_tasks)`.
    per_task: slots per task (static).
  Returns:
    `(batch, logits)` with leading axis `[per_task]`.
  """
  start = jnp.asarray(task_id, jnp.int32) * per_task
  take = lambda a: jax.lax.dynamic_slice_in_dim(a, start, per_task, axis=0)
  batch = Batch(
    take(buffer.x), take(buffer.y), take(buffer.t), take(buffer.valid).astype(jnp.float32)
  )
  return batch, take(buffer.logits)
