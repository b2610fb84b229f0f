"""Property tests of ER-ACE (Caccia et al. 2022) as Mammoth's `er_ace`: the
incoming batch's cross-entropy masks the earlier classes absent from it (from
the second task on), the replayed batch's is over every class, the two add."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcl import algorithms
from jcl import specs
from jcl.algorithms import base
from jcl.algorithms import buffer as buffer_lib
from jcl.algorithms import er_ace
from jcl.algorithms import naive
from jcl.types import Batch

from tests.algorithms.conftest import INPUT_DIM, NUM_CLASSES, random_batch, tiny_state

# XLA's cheap compilation: these tiny programs run a few times, compiling them dominates.
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}

CONTEXT = algorithms.Context((INPUT_DIM,), NUM_CLASSES, num_tasks=3)
ALGO = er_ace.make(specs.ERACESpec(memory_size=16, replay_batch_size=4), CONTEXT)
STEP = jax.jit(ALGO.step, compiler_options=FAST_COMPILE)
NAIVE_STEP = jax.jit(naive.make().step, compiler_options=FAST_COMPILE)
LR = 0.1  # tiny_state's plain SGD


def labelled(seed, labels, task=0, size=8):
  """A random batch whose labels cycle through `labels`."""
  batch = random_batch(seed, size, task)
  return batch._replace(y=jnp.asarray(np.resize(labels, size), jnp.int32))


def head(state):
  return {k: np.asarray(v) for k, v in state.params['head'].items()}


def test_the_kept_units_are_mammoths():
  """The batch's classes, and every unit from the largest class seen on
  (this batch included); padding is not a class of the batch."""

  def units(labels, mask, class_seen):
    batch = Batch(
      jnp.zeros((len(labels), 1)),
      jnp.asarray(labels, jnp.int32),
      jnp.zeros(len(labels), jnp.int32),
      jnp.asarray(mask, jnp.float32),
    )
    return np.asarray(er_ace.ace_units(batch, jnp.asarray(class_seen, jnp.int32))).tolist()

  assert units([1, 1], [1, 1], [5, 3, 0, 0]) == [False, True, True, True]
  assert units([0], [1], [5, 3, 2, 0]) == [True, False, True, True]  # largest seen 2 stays open
  assert units([0, 3], [0, 1], [0, 0, 0, 0]) == [False, False, False, True]
  assert units([2, 2], [1, 1], [1, 1, 0, 0]) == [False, False, True, True]  # a new class


def test_first_task_is_naive_and_fills_the_buffer():
  """Task 0: no masking and no replay (Mammoth's `current_task > 0`), even
  with a full buffer and a batch of one class; every batch enters the buffer."""
  state = tiny_state()
  algo_state = ALGO.init(state, None)
  state, algo_state = ALGO.begin_task(state, algo_state, 0)
  for k, labels in enumerate([[0, 1, 2], [0, 2], [1]]):
    batch = labelled(k, labels)
    new, algo_state, metrics = STEP(state, batch, algo_state)
    want = NAIVE_STEP(state, batch, None)[0]
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(want.params)):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert float(metrics['replay_loss']) == 0.0
    assert int(metrics['buffer_size']) == min(8 * (k + 1), 16)
    state = new


def test_current_loss_leaves_earlier_classes_alone_and_replay_does_not():
  """Task 1, batch of classes {1, 2}: unit 0 (class of task 0) gets no
  gradient from the incoming batch (with an empty buffer its head weights do
  not move, Naive's do); with class-0 samples in the buffer, the step is
  -lr * grad(CE_masked(current) + CE(replayed)) and the replayed part moves
  unit 0."""
  state = tiny_state()
  batch = labelled(10, [1, 2], task=1)
  empty = ALGO.init(state, None)
  state1, empty = ALGO.begin_task(state, empty, 1)
  new, _, metrics = STEP(state1, batch, empty)
  assert float(metrics['replay_loss']) == 0.0 and float(metrics['loss']) > 0
  for name, value in head(new).items():
    np.testing.assert_array_equal(value[..., 0], head(state)[name][..., 0], err_msg=name)
    assert np.abs(value[..., 1:] - head(state)[name][..., 1:]).max() > 1e-4
  naive_head = head(NAIVE_STEP(state1, batch, None)[0])
  assert np.abs(naive_head['bias'][0] - head(state)['bias'][0]) > 1e-4

  algo_state = ALGO.init(state, None)
  state0, algo_state = ALGO.begin_task(state, algo_state, 0)
  for k in range(2):
    state0, algo_state, _ = STEP(state0, labelled(20 + k, [0]), algo_state)
  state1, algo_state = ALGO.begin_task(state0, algo_state, 1)
  memory, _ = buffer_lib.sample(algo_state.buffer, state1.step_rng(er_ace.SAMPLE_SALT), 4)
  assert float(jnp.sum(memory.mask)) == 4 and np.all(np.asarray(memory.y) == 0)
  units = er_ace.ace_units(batch, algo_state.buffer.class_seen)
  np.testing.assert_array_equal(units, [False, True, True])

  def current_loss(params):
    raw = state1.apply_fn({'params': params}, batch.x, batch.t)
    return base.cross_entropy(base.masked_logits(raw, units), batch.y, batch.mask)

  def replay_loss(params):
    return base.task_loss(params, state1, memory, None)[0]

  g_current = jax.jit(jax.grad(current_loss), compiler_options=FAST_COMPILE)(state1.params)
  g_replay = jax.jit(jax.grad(replay_loss), compiler_options=FAST_COMPILE)(state1.params)
  assert float(g_current['head']['bias'][0]) == 0.0
  assert abs(float(g_replay['head']['bias'][0])) > 1e-3
  new, _, metrics = STEP(state1, batch, algo_state)
  np.testing.assert_allclose(float(metrics['replay_loss']), replay_loss(state1.params), rtol=1e-5)
  np.testing.assert_allclose(float(metrics['loss']), current_loss(state1.params), rtol=1e-5)
  want = jax.tree.map(lambda p, a, b: p - LR * (a + b), state1.params, g_current, g_replay)
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
  'kwargs, field',
  [
    (dict(memory_size=0), 'memory_size'),
    (dict(replay_batch_size=0), 'replay_batch_size'),
    (dict(memory_size=2.5), 'memory_size'),
    (dict(policy='fifo'), 'policy'),
  ],
)
def test_spec_validation(kwargs, field):
  with pytest.raises(ValueError, match=f"er_ace: invalid '{field}'"):
    specs.make_spec('er_ace', **kwargs)


def test_needs_a_context_and_a_per_task_memory_that_divides():
  with pytest.raises(ValueError, match='needs a base.Context'):
    algorithms.build(specs.ERACESpec())
  with pytest.raises(ValueError, match="er_ace: invalid 'memory_size'"):
    er_ace.make(specs.ERACESpec(memory_size=10, policy='per_task'), CONTEXT)
