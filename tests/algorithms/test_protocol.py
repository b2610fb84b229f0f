"""Every algorithm's step works in a user's own loop: jit, scan and vmap."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcl import algorithms
from jcl import specs
from jcl import train as train_lib

from tests.algorithms.conftest import INPUT_DIM, MODEL, NUM_CLASSES, random_batch, random_chunk, tiny_state

CONTEXT = algorithms.Context((INPUT_DIM,), NUM_CLASSES, num_tasks=2)
SMALL = {'er': dict(memory_size=8, replay_batch_size=4), 'der': dict(memory_size=8, replay_batch_size=4),
         'derpp': dict(memory_size=8, replay_batch_size=4),
         'agem': dict(memory_per_task=4, memory_batch_size=4), 'gem': dict(memory_per_task=4),
         'lamaml': dict(memory_size=8, replay_batch_size=4, glances=2),
         'mcsgd': dict(memory_per_task=4, lmc_batch_size=4, lmc_line_samples=2),
         'kcl': dict(core_size=4, num_random_features=16)}

NAMES = algorithms.names()


@pytest.mark.parametrize('name', NAMES)
def test_step_jit_scan_vmap(name):
  spec = specs.make_spec(name, **SMALL.get(name, {}))
  algo = algorithms.build(spec, CONTEXT)
  model = algorithms.adapt_model(spec, MODEL, CONTEXT)  # the model the algorithm trains
  state = tiny_state(model=model)
  algo_state = algo.init(state, jax.random.PRNGKey(0))
  state, algo_state = algo.begin_task(state, algo_state, 0)
  batch = random_batch()

  jitted = jax.jit(algo.step)
  s1, a1, m1 = jitted(state, batch, algo_state)
  assert set(m1) >= {'loss'} and np.isfinite(float(m1['loss']))

  chunk = random_chunk(steps=4)
  def body(carry, b):
    s, a = carry
    s, a, m = algo.step(s, b, a)
    return (s, a), m['loss']
  (s4, a4), losses = jax.jit(lambda s, a, c: jax.lax.scan(body, (s, a), c))(state, algo_state, chunk)
  assert losses.shape == (4,) and int(s4.step) == 4

  # The same scan as jcl.train's chunk runner, which also skips padding batches.
  padded = chunk._replace(mask=chunk.mask.at[3].set(0.0))
  s_run, a_run, _, valid = jax.jit(train_lib.run_chunk_fn(algo.step))(state, algo_state, padded)
  assert valid.tolist() == [True, True, True, False] and int(s_run.step) == 3

  # vmap over a leading seed axis of (train_state, algo_state).
  states = [tiny_state(seed=k, model=model) for k in range(3)]
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
  algo_states = jax.vmap(algo.init)(stacked, jax.random.split(jax.random.PRNGKey(0), 3))
  vs, va, vm = jax.jit(jax.vmap(algo.step, in_axes=(0, None, 0)))(stacked, batch, algo_states)
  assert vm['loss'].shape == (3,)
  single, _, sm = algo.step(states[1], batch, jax.tree.map(lambda x: x[1], algo_states))
  np.testing.assert_allclose(vm['loss'][1], sm['loss'], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(jax.tree.map(lambda x: x[1], vs.params))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

  # end_task jit-compiles too.
  jax.jit(algo.end_task)(s1, a1, chunk)


def test_begin_task_applies_lr_decay_and_reinit():
  state = tiny_state(lr=0.1, momentum=0.9)
  state = state.replace(regime=specs.OptimizerSpec(learning_rate=0.1, momentum=0.9, lr_decay=0.5,
                                                   min_lr=0.02))
  algo = algorithms.naive.make()
  s, a = algo.begin_task(state, None, 0)
  np.testing.assert_allclose(float(s.learning_rate), 0.1)
  s, a, _ = algo.step(s, random_batch(), a)
  s2, _ = algo.begin_task(s, a, 2)
  np.testing.assert_allclose(float(s2.learning_rate), 0.025, rtol=1e-6)
  s3, _ = algo.begin_task(s, a, 5)
  np.testing.assert_allclose(float(s3.learning_rate), 0.02, rtol=1e-6)  # floor
  assert all(float(jnp.max(jnp.abs(x))) == 0 for x in jax.tree.leaves(s2.opt_state.inner_state))
  assert int(s3.task) == 5


def test_grad_clipping_bounds_the_update():
  state = tiny_state(lr=1.0)
  clipped = state.replace(regime=specs.OptimizerSpec(learning_rate=1.0, grad_clip_norm=1e-3))
  from jcl import train_state as ts_lib
  clipped = clipped.replace(tx=ts_lib.make_optimizer(clipped.regime))
  clipped = clipped.replace(opt_state=clipped.tx.init(clipped.params))
  new, _, _ = algorithms.naive.make().step(clipped, random_batch(), None)
  norm = np.sqrt(sum(float(jnp.sum((a - b)**2)) for a, b in
                     zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params))))
  np.testing.assert_allclose(norm, 1e-3, rtol=1e-3)
