"""Property tests of MIR: the replayed memories are exactly the top-k candidates
by the loss increase under the virtual SGD step (against a brute-force
computation, one candidate at a time), and with as many candidates as
replayed samples MIR is ER with the same draws."""

import jax
import numpy as np
import pytest

from jcl import algorithms
from jcl import specs
from jcl.algorithms import base
from jcl.algorithms import buffer as buffer_lib
from jcl.algorithms import er
from jcl.algorithms import mir
from jcl.types import Batch

from tests.algorithms.conftest import INPUT_DIM, NUM_CLASSES, random_batch, tiny_state

CONTEXT = algorithms.Context((INPUT_DIM,), NUM_CLASSES, num_tasks=3)
LR = 0.5  # a large virtual step: well-separated scores
# XLA's cheap compilation: these tiny programs run a few times, compiling them dominates.
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def jit(fn):
  return jax.jit(fn, compiler_options=FAST_COMPILE)


def fill(algo, state, steps=3):
  """`(state, algo_state, step)` after `steps` steps on batches of 8 (the jitted step)."""
  algo_state = algo.init(state, None)
  step = jit(algo.step)
  for k in range(steps):
    state, algo_state, _ = step(state, random_batch(seed=k, size=8), algo_state)
  return state, algo_state, step


def test_replays_the_top_k_candidates_by_loss_increase():
  spec = specs.MIRSpec(memory_size=16, replay_batch_size=3, mir_candidates=8)
  algo = mir.make(spec, CONTEXT)
  state, algo_state, step = fill(algo, tiny_state(lr=LR))
  batch = random_batch(seed=9, size=8)
  candidates, _ = buffer_lib.sample(algo_state.buffer, state.step_rng(mir.SAMPLE_SALT), 8)
  assert bool(candidates.mask.all())

  # Brute force: the virtual step, then each candidate's loss alone before and after it.
  gradient = jit(jax.grad(lambda p, b: base.task_loss(p, state, b, None)[0]))
  grads = gradient(state.params, batch)
  virtual = jax.tree.map(lambda p, g: p - LR * g, state.params, grads)

  @jit
  def loss(params, x, t, y):  # one sample
    return -jax.nn.log_softmax(state.apply_fn({'params': params}, x[None], t[None]))[0, y]

  sample = lambda i: (candidates.x[i], candidates.t[i], candidates.y[i])
  increase = np.array(
    [float(loss(virtual, *sample(i)) - loss(state.params, *sample(i))) for i in range(8)]
  )
  order = np.argsort(-increase)
  assert increase[order[2]] - increase[order[3]] > 1e-4  # the top 3 are well defined
  top = np.sort(order[:3])
  assert top.tolist() != [0, 1, 2]  # not what ER would replay

  @jit
  def interference_and_retrieval(state, batch, candidates):
    scores = mir.interference(state, batch, candidates)
    return scores, mir.retrieve(scores, candidates, 3)[0]

  scores, memory = interference_and_retrieval(state, batch, candidates)
  np.testing.assert_allclose(scores, increase, rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(memory.x, candidates.x[top])
  np.testing.assert_array_equal(memory.y, candidates.y[top])

  # The step is SGD on the current batch with those memories.
  joint = base.concat_batches(batch, Batch(*(a[top] for a in candidates)))
  want = gradient(state.params, joint)
  after, _, metrics = step(state, batch, algo_state)
  for new, old, g in zip(*(jax.tree.leaves(t) for t in (after.params, state.params, want))):
    np.testing.assert_allclose(new, old - LR * g, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(metrics['interference']), increase[top].mean(), rtol=1e-4)


def test_as_many_candidates_as_replayed_is_er_with_the_same_draws():
  er_algo = er.make(specs.ERSpec(memory_size=16, replay_batch_size=4), CONTEXT)
  mir_algo = mir.make(specs.MIRSpec(memory_size=16, replay_batch_size=4, mir_candidates=4), CONTEXT)
  er_state, er_algo_state, _ = fill(er_algo, tiny_state(), steps=5)
  mir_state, mir_algo_state, _ = fill(mir_algo, tiny_state(), steps=5)
  for a, b in zip(jax.tree.leaves(er_state.params), jax.tree.leaves(mir_state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  for a, b in zip(er_algo_state.buffer, mir_algo_state.buffer):
    np.testing.assert_array_equal(a, b)


def test_mir_needs_a_context():
  with pytest.raises(ValueError, match='mir needs a base.Context'):
    mir.make(specs.MIRSpec())


@pytest.mark.parametrize(
  'kwargs, field',
  [
    (dict(memory_size=0), 'memory_size'),
    (dict(replay_batch_size=0), 'replay_batch_size'),
    (dict(replay_batch_size=10, mir_candidates=5), 'mir_candidates'),
    (dict(mir_candidates=50.0), 'mir_candidates'),
  ],
)
def test_spec_validation(kwargs, field):
  with pytest.raises(ValueError, match=f"mir: invalid '{field}'"):
    specs.make_spec('mir', **kwargs)
