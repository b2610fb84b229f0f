"""The replay buffer: insertion policies, sampling, and jit / scan / vmap.

Streams carry a sample id in `x[..., 0]` (exact in float32), so a buffer's
contents can be traced back to the stream. Each stream runs through a fresh
buffer once per seed, vmapped, inside one jitted `lax.scan`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcl.algorithms import buffer as rb
from jcl.types import Batch

B = 10
PAD_ID = -1.0


def make_chunk(ids, labels=None, tasks=None, *, num_batches=None, batch_size=B, real=None):
  """A chunk `[K, batch_size]` of the samples `ids` in order (x = id), padded at the end.

  `real` (bool per sample, default all) marks samples to give mask 1; the
  others, and the end padding, get mask 0 and id `PAD_ID`.
  """
  ids = np.asarray(ids, np.float32)
  n = len(ids)
  labels = np.zeros(n, np.int32) if labels is None else np.asarray(labels, np.int32)
  tasks = np.zeros(n, np.int32) if tasks is None else np.asarray(tasks, np.int32)
  real = np.ones(n, bool) if real is None else np.asarray(real, bool)
  num_batches = num_batches or -(-n // batch_size)
  total = num_batches * batch_size
  assert total >= n

  def pad(a, value):
    return np.concatenate([a, np.full(total - n, value, a.dtype)]).reshape(num_batches, batch_size)

  mask = pad(real.astype(np.float32), 0.0)
  x = pad(np.where(real, ids, PAD_ID).astype(np.float32), PAD_ID)[..., None]
  return Batch(
    jnp.asarray(x), jnp.asarray(pad(labels, 0)), jnp.asarray(pad(tasks, 0)), jnp.asarray(mask)
  )


@functools.partial(
  jax.jit,
  static_argnames=('policy', 'capacity', 'num_classes', 'num_tasks', 'per_task', 'logits_dim'),
)
def run_streams(
  chunk,
  keys,
  logits=None,
  *,
  policy,
  capacity,
  num_classes,
  num_tasks=1,
  per_task=None,
  logits_dim=0,
):
  """Streams `chunk` `[K, B, ...]` through a fresh buffer once per key of `keys` `[S]`.

  Returns:
    `(buffers, trace)`: the final buffers, stacked `[S, ...]`, and per batch
    `(class_counts, class_seen, class_full, size)`, each `[S, K, ...]`.
  """

  def one(key):
    buf = rb.init(
      capacity,
      chunk.x.shape[2:],
      num_classes=num_classes,
      num_tasks=num_tasks,
      logits_dim=logits_dim,
    )

    def body(b, inputs):
      batch, batch_logits, k = inputs
      b = rb.add(b, batch, k, policy=policy, logits=batch_logits, per_task=per_task)
      return b, (b.class_counts, b.class_seen, b.class_full, rb.size(b))

    return jax.lax.scan(body, buf, (chunk, logits, jax.random.split(key, chunk.y.shape[0])))

  return jax.vmap(one)(keys)


add_jit = jax.jit(rb.add, static_argnames=('policy', 'per_task'))


def keys(n, seed=0):
  return jax.random.split(jax.random.PRNGKey(seed), n)


def stored_ids(buf):
  """The ids in the valid slots of one (unstacked) buffer, in slot order."""
  return np.asarray(buf.x[..., 0])[np.asarray(buf.valid)].astype(int)


def unstack(tree, i):
  return jax.tree.map(lambda a: a[i], tree)


def check_counts(buf, num_classes):
  """`class_counts` agrees with the stored labels (any stacking)."""
  y, valid = np.asarray(buf.y), np.asarray(buf.valid)
  counts = np.stack([np.sum((y == c) & valid, axis=-1) for c in range(num_classes)], -1)
  np.testing.assert_array_equal(counts, np.asarray(buf.class_counts))


# ----------------------------------------------------------------------------
# Reservoir.


def test_init_shapes():
  buf = rb.init(7, (2, 3), num_classes=4, num_tasks=5, logits_dim=6)
  assert buf.x.shape == (7, 2, 3) and buf.x.dtype == jnp.float32
  assert buf.y.shape == buf.t.shape == (7,) and buf.y.dtype == buf.t.dtype == jnp.int32
  assert buf.logits.shape == (7, 6) and buf.valid.dtype == jnp.bool_
  assert buf.seen.shape == () and buf.class_counts.shape == buf.class_seen.shape == (4,)
  assert buf.task_seen.shape == (5,) and int(rb.size(buf)) == 0
  assert rb.init(3, (1,), num_classes=2).logits.shape == (3, 0)


def test_reservoir_fills_in_order_and_ignores_padding():
  cap, n = 30, 200
  rng = np.random.default_rng(0)
  real = rng.random(n) < 0.7
  labels = rng.integers(0, 4, n)
  chunk = make_chunk(np.arange(n), labels, real=real)
  bufs, (_, _, _, sizes) = run_streams(
    chunk, keys(4), policy='reservoir', capacity=cap, num_classes=4
  )
  real_ids = np.flatnonzero(real)
  per_batch_real = real.reshape(-1, B).sum(1)
  # While filling, the k-th real sample sits in slot k - 1.
  np.testing.assert_array_equal(sizes[0], np.minimum(np.cumsum(per_batch_real), cap))
  # The same stream cut after three batches (the rest masked out: same shapes,
  # no recompilation), when the buffer is not yet full.
  m = per_batch_real[:3].sum()
  assert m < cap
  cut = chunk._replace(mask=chunk.mask.at[3:].set(0.0))
  partial = unstack(
    run_streams(cut, keys(4), policy='reservoir', capacity=cap, num_classes=4)[0], 0
  )
  np.testing.assert_array_equal(stored_ids(partial), real_ids[:m])
  assert int(partial.seen) == m and not np.any(np.asarray(partial.valid)[m:])
  for i in range(4):
    buf = unstack(bufs, i)
    ids = stored_ids(buf)
    assert int(buf.seen) == real.sum() and int(rb.size(buf)) == cap
    assert len(set(ids)) == cap and np.all(real[ids])  # padding (id -1) never entered
    np.testing.assert_array_equal(np.asarray(buf.y)[np.asarray(buf.valid)], labels[ids])
    np.testing.assert_array_equal(buf.class_seen, np.bincount(labels[real], minlength=4))
  check_counts(bufs, 4)


def reservoir_keep_probs(insert_prob, capacity, n):
  """Exact final keep probability of each of `n` samples for a reservoir that
  stores the m-th sample (1-based) with probability `insert_prob(m)` once full
  (always while `m <= capacity`) into a uniformly chosen slot."""
  m = np.arange(1, n + 1)
  q = np.array([1.0 if k <= capacity else min(insert_prob(k), 1.0) for k in m])
  survive = np.where(m > capacity, 1.0 - q / capacity, 1.0)
  later = np.concatenate([np.cumprod(survive[::-1])[::-1][1:], [1.0]])
  return q * later


def test_reservoir_keeps_each_sample_with_probability_capacity_over_n():
  cap, n, trials = 100, 1000, 65536
  chunk = make_chunk(np.arange(n))
  kept_counts = jax.jit(
    lambda c, k: jnp.sum(
      jax.vmap(lambda b: jnp.zeros(n, jnp.int32).at[b.x[:, 0].astype(jnp.int32)].add(b.valid))(
        run_streams(c, k, policy='reservoir', capacity=cap, num_classes=1)[0]
      ),
      0,
    )
  )
  keep = np.asarray(kept_counts(chunk, keys(trials))) / trials
  buckets = {'early': slice(0, 100), 'middle': slice(450, 550), 'late': slice(900, 1000)}
  # Tolerance. Algorithm R leaves a uniformly random 100-subset of the 1000
  # ids, so the number kept from a bucket of 100 ids is hypergeometric with
  # variance 100 * 0.1 * 0.9 * 900 / 999 = 8.11 per trial: the bucket's mean
  # keep rate has std sqrt(8.11) / 100 / sqrt(65536) = 1.11e-4. TOL = 4.5 std
  # = 5.0e-4 (a correct buffer fails with probability < 1e-5 per bucket).
  # An off-by-one moves the first `capacity` samples (the ones stored while
  # filling, which then only survive evictions) by about 9e-4 = TOL + 3.6 std
  # (checked exactly below): j ~ U{0..n} (keep prob cap/(n+1)) gives 0.10090
  # early, j ~ U{0..n-2} gives 0.09910; (cap+1)/n gives 0.0977 early and
  # 0.1009 late. Later samples move only by ~1e-4 under the first two, so the
  # early bucket is the one that catches them.
  sigma = np.sqrt(100 * 0.1 * 0.9 * 900 / 999) / 100 / np.sqrt(trials)
  tol = 4.5 * sigma
  for insert_prob in (
    lambda m: cap / (m + 1),
    lambda m: cap / (m - 1),
    lambda m: (cap + 1) / m,
    lambda m: (cap - 1) / m,
  ):
    wrong = reservoir_keep_probs(insert_prob, cap, n)
    assert max(abs(wrong[s].mean() - 0.1) for s in buckets.values()) > tol + 3 * sigma
  np.testing.assert_allclose(reservoir_keep_probs(lambda m: cap / m, cap, n), 0.1, atol=1e-12)
  for name, s in buckets.items():
    assert abs(keep[s].mean() - cap / n) < tol, (name, keep[s].mean())
  np.testing.assert_allclose(keep.sum(), cap)


# ----------------------------------------------------------------------------
# Class-balanced (CBRS).

CB_CAP, CB_CLASSES, CB_BATCHES, CB_SEEDS = 100, 10, 200, 32


def run_class_balanced(labels):
  """Streams `labels` (ids = positions) through CBRS buffers over CB_SEEDS seeds."""
  chunk = make_chunk(np.arange(len(labels)), labels, num_batches=CB_BATCHES)
  bufs, trace = run_streams(
    chunk, keys(CB_SEEDS, seed=1), policy='class_balanced', capacity=CB_CAP, num_classes=CB_CLASSES
  )
  counts, seen, full, sizes = (np.asarray(a) for a in trace)
  # Stored samples are the stream's, with their own labels, each at most once.
  for i in range(CB_SEEDS):
    buf = unstack(bufs, i)
    ids = stored_ids(buf)
    assert len(set(ids)) == len(ids)
    np.testing.assert_array_equal(np.asarray(buf.y)[np.asarray(buf.valid)], labels[ids])
  check_counts(bufs, CB_CLASSES)
  np.testing.assert_array_equal(
    seen[:, -1], np.tile(np.bincount(labels, minlength=CB_CLASSES), (CB_SEEDS, 1))
  )
  assert np.all(counts.sum(-1) == sizes)
  return (counts, seen, full, sizes), bufs


def check_cbrs_invariants(counts, seen, full, sizes):
  """What CBRS guarantees at every step once the buffer is full, with M the
  largest stored count: a full class stores M - 1 or M samples; a class that is
  not full has lost none (stored == seen); M never grows."""
  largest = counts.max(-1, keepdims=True)
  after_full = (sizes == CB_CAP)[..., None]
  assert np.all(~after_full | ~full | (counts >= largest - 1))
  assert np.all(~after_full | full | (counts == seen))
  m = np.where(sizes == CB_CAP, largest[..., 0], np.iinfo(np.int32).max)
  assert np.all(np.diff(m, axis=1) <= 0)


def test_class_balanced_class_incremental_blocks():
  per_class = 100
  labels = np.repeat(np.arange(CB_CLASSES), per_class)
  (counts, seen, full, sizes), bufs = run_class_balanced(labels)
  check_cbrs_invariants(counts, seen, full, sizes)
  # At the end of each class's block, every class seen so far is within one.
  for c in range(1, CB_CLASSES):
    end = (c + 1) * per_class // B - 1
    block = counts[:, end, : c + 1]
    assert np.all(sizes[:, end] == CB_CAP)
    assert np.all(block.max(-1) - block.min(-1) <= 1), (c, block[0])
    assert np.all(counts[:, end, c + 1 :] == 0)
  np.testing.assert_array_equal(counts[:, -1], CB_CAP // CB_CLASSES)
  # The last class fills 10 slots by evicting the largest classes, becomes
  # full, then replaces its own samples with probability m_c / n_c: algorithm
  # R within the class, so each of its 100 samples is kept with probability
  # 0.1. Kept from either half: hypergeometric(100, 10, 50), variance 2.27 per
  # seed; over 32 seeds the half's keep rate has std sqrt(2.27 / 32) / 50 =
  # 5.3e-3; tolerance 5 std. (Always accepting would keep only the last 10.)
  x, valid = np.asarray(bufs.x[..., 0]).astype(int), np.asarray(bufs.valid)
  keep = np.bincount(x[valid], minlength=len(labels)) / CB_SEEDS
  last = np.flatnonzero(labels == CB_CLASSES - 1)
  tol = 5 * np.sqrt(50 * 0.1 * 0.9 * 50 / 99 / CB_SEEDS) / 50
  for half in (last[:50], last[50:]):
    assert abs(keep[half].mean() - 0.1) < tol, keep[half].mean()


def test_class_balanced_random_order():
  labels = np.random.default_rng(2).integers(0, CB_CLASSES, CB_BATCHES * B)
  (counts, seen, full, sizes), _ = run_class_balanced(labels)
  check_cbrs_invariants(counts, seen, full, sizes)
  final = counts[:, -1]
  assert np.all(final.max(-1) - final.min(-1) <= 1)
  # Once the classes have caught up, they stay within one.
  caught_up = np.argmax(counts.max(-1) - counts.min(-1) <= 1, axis=1)
  for i, k in enumerate(caught_up):
    assert np.all(counts[i, k:].max(-1) - counts[i, k:].min(-1) <= 1)


def test_class_balanced_imbalanced_streams():
  """On an imbalanced stream CBRS does not equalise counts: a rare class keeps
  every sample it offered, and the frequent classes share the rest within one
  (water-filling: stored = min(seen, L) up to one sample)."""
  sizes_per_class = np.array([1000, 500, 200, 100, 50, 20, 10, 5, 3, 2])
  blocks = np.repeat(np.arange(CB_CLASSES), sizes_per_class)
  (counts, seen, full, sizes), _ = run_class_balanced(blocks)
  check_cbrs_invariants(counts, seen, full, sizes)
  # Classes 6-9 (10, 5, 3, 2 samples) keep all; classes 0-5 share the other 80.
  final = counts[:, -1]
  np.testing.assert_array_equal(final[:, 6:], np.tile([10, 5, 3, 2], (CB_SEEDS, 1)))
  assert np.all((final[:, :6] == 13) | (final[:, :6] == 14))

  probs = 0.5 ** np.arange(CB_CLASSES)
  shuffled = np.random.default_rng(3).choice(CB_CLASSES, CB_BATCHES * B, p=probs / probs.sum())
  (counts, seen, full, sizes), _ = run_class_balanced(shuffled)
  check_cbrs_invariants(counts, seen, full, sizes)
  final, final_seen = counts[:, -1], seen[:, -1]
  largest = final.max(-1, keepdims=True)
  assert np.all((final == final_seen) | (final >= largest - 1))
  rare = final_seen < largest - 1
  assert rare.sum() >= CB_SEEDS  # the test exercises rare classes
  assert np.all(~rare | (final == final_seen))  # rare classes keep every sample


# ----------------------------------------------------------------------------
# Per-task episodic memory.

PT_TASKS, PT_PER_TASK = 5, 20
PT_SIZES = np.array([50, 20, 35, 7, 100])


def per_task_stream():
  """Tasks in order (batches straddle task boundaries), with padding and a sample
  whose task id is out of range."""
  tasks = np.repeat(np.arange(PT_TASKS), PT_SIZES)
  tasks = np.concatenate([tasks[:60], [PT_TASKS], tasks[60:]])
  n = len(tasks)
  real = np.ones(n, bool)
  real[[3, 71, 150]] = False
  return make_chunk(np.arange(n), tasks % 3, tasks, real=real), tasks, real


PT_SEEDS = 4096


@functools.lru_cache(maxsize=None)
def run_per_task():
  """The per-task stream through PT_SEEDS buffers (computed once, shared by the tests)."""
  chunk, tasks, real = per_task_stream()
  bufs = run_streams(
    chunk,
    keys(PT_SEEDS, seed=4),
    policy='per_task',
    capacity=PT_TASKS * PT_PER_TASK,
    num_classes=3,
    num_tasks=PT_TASKS,
    per_task=PT_PER_TASK,
  )[0]
  return bufs, tasks, real


# GEM's use: every task's region, with a traced task id, vmapped.
all_task_slots = jax.jit(
  lambda buf: jax.vmap(lambda k: rb.task_slots(buf, k, PT_PER_TASK))(jnp.arange(PT_TASKS))
)


def test_per_task_regions():
  bufs, tasks, real = run_per_task()
  offered = np.array([np.sum(real & (tasks == k)) for k in range(PT_TASKS)])
  check_counts(bufs, 3)
  for i in range(8):
    buf = unstack(bufs, i)
    np.testing.assert_array_equal(buf.task_seen, offered)
    assert int(buf.seen) == real.sum()  # includes the out-of-range task's sample
    valid, x = np.asarray(buf.valid), np.asarray(buf.x[:, 0]).astype(int)
    slots, _ = all_task_slots(buf)
    for k in range(PT_TASKS):
      region = slice(k * PT_PER_TASK, (k + 1) * PT_PER_TASK)
      ids = x[region][valid[region]]
      assert valid[region].sum() == min(offered[k], PT_PER_TASK)
      assert np.all(tasks[ids] == k) and np.all(real[ids]) and len(set(ids)) == len(ids)
      assert np.all(np.asarray(buf.t)[region][valid[region]] == k)
      if offered[k] <= PT_PER_TASK:  # the task's samples, in order
        np.testing.assert_array_equal(ids, np.flatnonzero(real & (tasks == k)))
      np.testing.assert_array_equal(slots.x[k], buf.x[region])
      np.testing.assert_array_equal(slots.mask[k], valid[region].astype(np.float32))


def test_per_task_region_is_a_uniform_sample_of_the_task():
  bufs, tasks, real = run_per_task()
  trials = PT_SEEDS
  x, valid = np.asarray(bufs.x[..., 0]).astype(int), np.asarray(bufs.valid)
  keep = np.bincount(x[valid], minlength=len(tasks)) / trials
  for k in (0, 4):  # 50 and 100 samples for 20 slots
    ids = np.flatnonzero(real & (tasks == k))
    n_k = len(ids)
    # Kept from the first half: hypergeometric(n_k, 20, n_k // 2); 5 std.
    half = n_k // 2
    var = half * (20 / n_k) * (1 - 20 / n_k) * (n_k - half) / (n_k - 1)
    tol = 5 * np.sqrt(var) / half / np.sqrt(trials)
    for part in (ids[:half], ids[half : 2 * half]):
      assert abs(keep[part].mean() - 20 / n_k) < tol


def test_task_slots_traced_task_id():
  buf = unstack(run_per_task()[0], 0)
  batch, logits = all_task_slots(buf)
  assert batch.x.shape == (PT_TASKS, PT_PER_TASK, 1) and logits.shape == (PT_TASKS, PT_PER_TASK, 0)
  np.testing.assert_array_equal(batch.x.reshape(-1, 1), buf.x)
  np.testing.assert_array_equal(batch.t.reshape(-1), buf.t)
  np.testing.assert_array_equal(batch.mask.reshape(-1), np.asarray(buf.valid, np.float32))


def test_per_task_needs_matching_capacity():
  buf = rb.init(10, (1,), num_classes=2, num_tasks=3)
  batch = make_chunk(np.arange(4))
  batch = jax.tree.map(lambda a: a[0], batch)
  with pytest.raises(ValueError, match='num_tasks \\* per_task'):
    rb.add_per_task(buf, batch, jax.random.PRNGKey(0), 3)
  with pytest.raises(ValueError, match='per_task'):
    rb.add(buf, batch, jax.random.PRNGKey(0), policy='per_task')
  with pytest.raises(ValueError, match="'fifo'"):
    rb.add(buf, batch, jax.random.PRNGKey(0), policy='fifo')


# ----------------------------------------------------------------------------
# Sampling.

sample_jit = jax.jit(rb.sample, static_argnums=2)
sample_many = jax.jit(jax.vmap(rb.sample, in_axes=(None, 0, None)), static_argnums=2)
sample_many_tasks = jax.jit(
  jax.vmap(lambda b, k, m, size: rb.sample(b, k, size, task_mask=m), in_axes=(None, 0, None, None)),
  static_argnums=3,
)


def filled_buffer(cap, valid, tasks=None, num_tasks=1):
  """A buffer whose slot i holds id i, valid where `valid`."""
  buf = rb.init(cap, (1,), num_classes=1, num_tasks=num_tasks, logits_dim=2)
  ids = jnp.arange(cap, dtype=jnp.float32)
  return buf._replace(
    x=ids[:, None],
    valid=jnp.asarray(valid),
    logits=jnp.stack([ids, -ids], -1),
    t=jnp.zeros(cap, jnp.int32) if tasks is None else jnp.asarray(tasks, jnp.int32),
  )


def test_sample_partly_filled():
  valid = np.zeros(100, bool)
  valid[[5, 17, 64]] = True
  batch, logits = sample_many(filled_buffer(100, valid), keys(50), 10)
  assert batch.x.shape == (50, 10, 1) and logits.shape == (50, 10, 2)
  for i in range(50):
    mask = np.asarray(batch.mask[i]) > 0
    assert mask.sum() == 3 and (~mask).sum() == 7
    assert sorted(np.asarray(batch.x[i, mask, 0]).astype(int)) == [5, 17, 64]
  np.testing.assert_array_equal(logits[..., 0], batch.x[..., 0])
  # More rows than slots: every valid slot once, the rest mask 0.
  big, _ = sample_jit(filled_buffer(100, valid), jax.random.PRNGKey(0), 120)
  assert big.mask.shape == (120,) and float(big.mask.sum()) == 3
  # An empty buffer gives a batch of padding.
  empty, _ = sample_jit(
    rb.init(100, (1,), num_classes=1, num_tasks=1, logits_dim=2), jax.random.PRNGKey(0), 120
  )
  assert float(empty.mask.sum()) == 0


def test_sample_valid_distinct_and_uniform():
  cap, size, draws = 50, 8, 20000
  valid = np.random.default_rng(5).random(cap) < 0.6
  batch, _ = sample_many(filled_buffer(cap, valid), keys(draws, seed=6), size)
  ids, mask = np.asarray(batch.x[..., 0]).astype(int), np.asarray(batch.mask) > 0
  assert np.all(mask)  # more valid slots than `size`
  assert np.all(valid[ids])
  assert all(len(set(row)) == size for row in ids)
  counts = np.bincount(ids.ravel(), minlength=cap)[valid]
  expected = draws * size / valid.sum()
  chi2 = np.sum((counts - expected) ** 2 / expected)
  dof = valid.sum() - 1
  # Drawing without replacement only shrinks the statistic (its mean is
  # (K - 1) * (1 - size / K) here, below dof), so the chi-square(dof) quantile
  # at 1 - 1e-4 (Wilson-Hilferty, z = 3.72) is a conservative bound.
  bound = dof * (1 - 2 / (9 * dof) + 3.72 * np.sqrt(2 / (9 * dof))) ** 3
  assert chi2 < bound, (chi2, bound)


def test_sample_task_mask():
  cap = 40
  tasks = np.arange(cap) % 4
  valid = np.arange(cap) < 30
  buf = filled_buffer(cap, valid, tasks, num_tasks=4)
  task_mask = jnp.array([False, True, False, True])
  batch, _ = sample_many_tasks(buf, keys(200), task_mask, 10)
  mask = np.asarray(batch.mask) > 0
  ids = np.asarray(batch.x[..., 0]).astype(int)
  assert np.all(mask)
  assert np.all(np.isin(tasks[ids], [1, 3])) and np.all(valid[ids])
  np.testing.assert_array_equal(batch.t, tasks[ids])
  # Fewer eligible slots (task 3 only: 7 valid) than rows.
  batch, _ = sample_many_tasks(buf, keys(20), jnp.array([False, False, False, True]), 10)
  assert np.all(np.asarray(batch.mask).sum(-1) == 7)
  eligible = np.asarray(batch.x[..., 0]).astype(int)[np.asarray(batch.mask) > 0]
  assert np.all(tasks[eligible] == 3) and np.all(valid[eligible])
  # No task allowed: nothing.
  batch, _ = sample_many_tasks(buf, keys(3), jnp.zeros(4, bool), 10)
  assert float(batch.mask.sum()) == 0


# ----------------------------------------------------------------------------
# Logits, determinism, jit / scan / vmap.


def logits_stream():
  """300 samples of 5 classes and 3 tasks, with logits `(id, 2 id + 1, -id)`."""
  n = 300
  chunk = make_chunk(np.arange(n), np.arange(n) % 5, np.arange(n) // 100)
  logits = jnp.stack([chunk.x[..., 0], 2 * chunk.x[..., 0] + 1, -chunk.x[..., 0]], -1)
  return chunk, logits


def run_logits_stream(policy, ks):
  chunk, logits = logits_stream()
  return run_streams(
    chunk,
    ks,
    logits,
    policy=policy,
    capacity=30,
    num_classes=5,
    num_tasks=3,
    per_task=10 if policy == 'per_task' else None,
    logits_dim=3,
  )[0]


@pytest.mark.parametrize('policy', rb.POLICIES)
def test_logits_stored_with_their_sample(policy):
  bufs = run_logits_stream(policy, keys(3))
  valid = np.asarray(bufs.valid)
  x = np.asarray(bufs.x[..., 0])
  assert valid.sum() == 3 * 30
  np.testing.assert_array_equal(
    np.asarray(bufs.logits)[valid], np.stack([x, 2 * x + 1, -x], -1)[valid]
  )
  batch, sampled = sample_jit(unstack(bufs, 0), jax.random.PRNGKey(0), 12)
  np.testing.assert_array_equal(sampled[:, 1], 2 * batch.x[:, 0] + 1)


def test_logits_required_when_stored():
  buf = rb.init(5, (1,), num_classes=1, logits_dim=2)
  batch = jax.tree.map(lambda a: a[0], make_chunk(np.arange(3)))
  with pytest.raises(ValueError, match='logits'):
    add_jit(buf, batch, jax.random.PRNGKey(0), policy='reservoir')
  # A buffer without logits ignores them.
  plain = add_jit(
    rb.init(5, (1,), num_classes=1),
    batch,
    jax.random.PRNGKey(0),
    policy='reservoir',
    logits=jnp.ones((B, 4)),
  )
  assert plain.logits.shape == (5, 0) and int(rb.size(plain)) == 3


@pytest.mark.parametrize('policy', rb.POLICIES)
def test_jit_scan_vmap_agree_and_are_deterministic(policy):
  """vmap over seeds inside a jitted scan equals per-seed runs of a jitted `add`
  called batch by batch; the same key gives the same buffer."""
  chunk, logits = logits_stream()
  ks = keys(3, seed=7)
  bufs = run_logits_stream(policy, ks)
  per_task = 10 if policy == 'per_task' else None
  for i in range(3):
    buf = rb.init(30, (1,), num_classes=5, num_tasks=3, logits_dim=3)
    for step, k in enumerate(jax.random.split(ks[i], chunk.y.shape[0])):
      buf = add_jit(
        buf,
        jax.tree.map(lambda a: a[step], chunk),
        k,
        policy=policy,
        logits=logits[step],
        per_task=per_task,
      )
    for a, b in zip(buf, unstack(bufs, i)):
      np.testing.assert_array_equal(a, b)
  again = run_logits_stream(policy, ks)
  for a, b in zip(bufs, again):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(bufs.x[0], bufs.x[1])  # seeds differ
