"""Property tests of ER, DER, DER++, A-GEM and GEM steps (buffer and projection
math have their own tests)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcl import algorithms
from jcl import specs
from jcl.algorithms import base
from jcl.algorithms import buffer as buffer_lib

from tests.algorithms.conftest import INPUT_DIM, NUM_CLASSES, random_batch, tiny_state

CONTEXT = algorithms.Context((INPUT_DIM,), NUM_CLASSES, num_tasks=3)


def build(name, **kwargs):
  return algorithms.build(specs.make_spec(name, **kwargs), CONTEXT)


def test_der_stores_the_logits_of_the_model_at_insertion_time():
  algo = build('der', memory_size=64, replay_batch_size=4)
  state = tiny_state()
  algo_state = algo.init(state, None)
  step = jax.jit(algo.step)
  snapshots = []
  for k in range(3):
    batch = random_batch(seed=k, size=8)
    snapshots.append((batch, state.apply_fn({'params': state.params}, batch.x, batch.t)))
    state, algo_state, _ = step(state, batch, algo_state)
  buf = algo_state.buffer
  assert int(buffer_lib.size(buf)) == 24
  # Buffer not full: sample k*8+i sits in slot k*8+i with the logits of the
  # parameters *before* the step that saw it.
  for k, (batch, logits) in enumerate(snapshots):
    np.testing.assert_allclose(buf.x[k * 8 : (k + 1) * 8], batch.x)
    np.testing.assert_allclose(buf.logits[k * 8 : (k + 1) * 8], logits, rtol=1e-5, atol=1e-6)
  # ... and they are not those of the current model.
  now = state.apply_fn({'params': state.params}, buf.x[:8], buf.t[:8])
  assert not np.allclose(now, buf.logits[:8], atol=1e-4)


def test_der_distillation_term_is_zero_when_the_model_has_not_moved():
  algo = build('der', memory_size=64, replay_batch_size=8, alpha=1.0)
  state = tiny_state(lr=1e-9)  # the parameters barely move
  algo_state = algo.init(state, None)
  state, algo_state, _ = algo.step(state, random_batch(seed=0, size=8), algo_state)
  _, _, metrics = algo.step(state, random_batch(seed=1, size=8), algo_state)
  assert float(metrics['distill']) < 1e-10


def test_derpp_adds_the_replayed_labels_term():
  der, derpp = build('der', alpha=0.5), build('derpp', alpha=0.5, beta=1.0)
  state = tiny_state()
  s_der, s_pp = der.init(state, None), derpp.init(state, None)
  for k in range(3):
    _, s_der, _ = der.step(state, random_batch(seed=k), s_der)
    _, s_pp, m = derpp.step(state, random_batch(seed=k), s_pp)
  assert float(m['replay_loss']) > 0
  assert 'replay_loss' not in der.step(state, random_batch(seed=5), s_der)[2]


def test_er_trains_on_current_and_replayed_samples():
  algo = build('er', memory_size=16, replay_batch_size=4)
  state = tiny_state()
  algo_state = algo.init(state, None)
  batch = random_batch(seed=0, size=8)
  # Empty buffer: identical to a naive step (the replay rows are masked out).
  new_er, algo_state, m = algo.step(state, batch, algo_state)
  new_naive, _, _ = algorithms.naive.make().step(state, batch, None)
  for a, b in zip(jax.tree.leaves(new_er.params), jax.tree.leaves(new_naive.params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert int(m['buffer_size']) == 8
  # With a memory, the update is the gradient of the mean loss over both.
  memory, _ = buffer_lib.sample(algo_state.buffer, new_er.step_rng(1), 4)
  joint = base.concat_batches(batch, memory)
  want = jax.grad(lambda p: base.task_loss(p, new_er, joint, None)[0])(new_er.params)
  after, _, _ = algo.step(new_er, batch, algo_state)
  got = jax.tree.map(lambda a, b: (a - b) / -0.1, after.params, new_er.params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_agem_update_never_conflicts_with_the_memory_gradient():
  algo = build('agem', memory_per_task=16, memory_batch_size=16)
  state = tiny_state()
  algo_state = algo.init(state, None)
  state, algo_state = algo.begin_task(state, algo_state, 0)
  for k in range(3):
    state, algo_state, _ = algo.step(state, random_batch(seed=k, size=8, task=0), algo_state)
  state, algo_state = algo.begin_task(state, algo_state, 1)
  projected_any = False
  for k in range(10):
    batch = random_batch(seed=100 + k, size=8, task=1)
    memory, _ = buffer_lib.sample(
      algo_state.buffer, state.step_rng(1), 16, task_mask=jnp.arange(3) < 1
    )
    assert float(jnp.sum(memory.mask)) == 16 and bool(jnp.all(memory.t == 0))
    g_ref = jax.grad(lambda p: base.task_loss(p, state, memory, None)[0])(state.params)
    new_state, algo_state, m = algo.step(state, batch, algo_state)
    update = jax.tree.map(lambda a, b: (b - a) / 0.1, new_state.params, state.params)  # = g~
    assert float(base.tree_dot(update, g_ref)) >= -1e-5
    projected_any |= bool(m['projected'])
    state = new_state
  assert projected_any  # the test exercised the projection


def test_gem_update_satisfies_every_previous_task_constraint():
  algo = build('gem', memory_per_task=8, margin=0.0, solver_iterations=500)
  state = tiny_state(lr=0.5)
  algo_state = algo.init(state, None)
  for task in (0, 1):
    state, algo_state = algo.begin_task(state, algo_state, task)
    for k in range(4):
      state, algo_state, _ = algo.step(
        state, random_batch(seed=10 * task + k, size=8, task=task), algo_state
      )
  state, algo_state = algo.begin_task(state, algo_state, 2)
  projected_any = False
  for k in range(8):
    batch = random_batch(seed=200 + k, size=8, task=2)
    new_state, algo_state_next, m = algo.step(state, batch, algo_state)
    update = jax.tree.map(lambda a, b: (b - a) / 0.5, new_state.params, state.params)
    for task in (0, 1):
      memory, _ = buffer_lib.task_slots(algo_state.buffer, task, 8)
      g_k = jax.grad(lambda p: base.task_loss(p, state, memory, None)[0])(state.params)
      assert float(base.tree_dot(update, g_k)) >= -1e-4 * (1 + float(base.tree_dot(g_k, g_k)))
    projected_any |= bool(m['projected'])
    state, algo_state = new_state, algo_state_next
  assert projected_any


def test_replay_methods_need_a_context():
  with pytest.raises(ValueError, match='needs a base.Context'):
    algorithms.build(specs.make_spec('er'))


@pytest.mark.parametrize(
  'name, kwargs, field',
  [
    ('er', dict(memory_size=0), 'memory_size'),
    ('er', dict(policy='fifo'), 'policy'),
    ('der', dict(alpha=-1.0), 'alpha'),
    ('derpp', dict(beta=-1.0), 'beta'),
    ('agem', dict(memory_per_task=0), 'memory_per_task'),
    ('gem', dict(margin=-0.5), 'margin'),
  ],
)
def test_replay_spec_validation(name, kwargs, field):
  with pytest.raises(ValueError, match=f"invalid '{field}'"):
    specs.make_spec(name, **kwargs)
