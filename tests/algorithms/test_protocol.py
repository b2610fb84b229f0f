"""Every algorithm's step works in a user's own loop: jit, scan and vmap; the
registry finds every algorithm by name, and each spec's declarations (what
`end_task` reads) are what its implementation does."""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcl import algorithms
from jcl import specs
from jcl import train as train_lib
from jcl import types
from jcl.algorithms import base
from jcl.algorithms import buffer as buffer_lib

from tests.algorithms.conftest import (
  INPUT_DIM,
  MODEL,
  NUM_CLASSES,
  random_batch,
  random_chunk,
  tiny_state,
)
from tests.small import SMALL_HPARAMS, small_spec

CONTEXT = algorithms.Context((INPUT_DIM,), NUM_CLASSES, num_tasks=2)
NAMES = algorithms.names()


@pytest.mark.parametrize('name', NAMES)
def test_step_jit_scan_vmap(name):
  spec = small_spec(name)
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

  (s4, a4), losses = jax.jit(lambda s, a, c: jax.lax.scan(body, (s, a), c))(
    state, algo_state, chunk
  )
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
  for a, b in zip(
    jax.tree.leaves(single.params), jax.tree.leaves(jax.tree.map(lambda x: x[1], vs.params))
  ):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

  # end_task jit-compiles too.
  jax.jit(algo.end_task)(s1, a1, chunk)


def test_begin_task_applies_lr_decay_and_reinit():
  state = tiny_state(lr=0.1, momentum=0.9)
  state = state.replace(
    regime=specs.OptimizerSpec(learning_rate=0.1, momentum=0.9, lr_decay=0.5, min_lr=0.02)
  )
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


@pytest.mark.parametrize('decay', [0.8, 0.97, 0.5, 1.0, 0.123])
def test_decayed_learning_rate_has_integer_pow_bits(decay):
  """The host's float32 power (no compilation per task, shared with torch) is
  `lax.integer_pow`'s, bit for bit, so decayed runs keep their numbers."""
  regime = specs.OptimizerSpec(learning_rate=0.08, lr_decay=decay, min_lr=0.0)
  for task in range(40):
    expected = jax.lax.integer_pow(jnp.float32(decay), task) if task else jnp.float32(1)
    assert regime.decay_power(task) == np.float32(expected), task
    assert regime.learning_rate_for_task(task) == np.float32(0.08) * np.float32(expected)


def test_grad_clipping_bounds_the_update():
  state = tiny_state(lr=1.0)
  clipped = state.replace(regime=specs.OptimizerSpec(learning_rate=1.0, grad_clip_norm=1e-3))
  from jcl import train_state as ts_lib

  clipped = clipped.replace(tx=ts_lib.make_optimizer(clipped.regime))
  clipped = clipped.replace(opt_state=clipped.tx.init(clipped.params))
  new, _, _ = algorithms.naive.make().step(clipped, random_batch(), None)
  norm = np.sqrt(
    sum(
      float(jnp.sum((a - b) ** 2))
      for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params))
    )
  )
  np.testing.assert_allclose(norm, 1e-3, rtol=1e-3)


# ----------------------------------------------------------------------------
# The registry and the specs' declarations.


def test_every_spec_is_registered_and_has_a_module():
  """Every spec class of `jcl.specs` registered itself and has a JAX module."""
  defined = {
    cls.name
    for cls in vars(specs).values()
    if isinstance(cls, type)
    and issubclass(cls, specs.AlgorithmSpec)
    and cls is not specs.AlgorithmSpec
  }
  assert defined <= set(specs.SPECS)
  assert defined <= set(NAMES)
  assert set(SMALL_HPARAMS) <= set(NAMES)
  for name in NAMES:
    assert algorithms.module(name) is getattr(algorithms, name)
    assert callable(algorithms.module(name).make)


def test_submodules_are_attributes():
  assert algorithms.ewc.make(specs.EWCSpec()).spec == specs.EWCSpec()
  assert algorithms.buffer is buffer_lib and algorithms.base is base
  with pytest.raises(AttributeError, match='no attribute'):
    algorithms.nope  # noqa: B018


def test_one_context():
  assert algorithms.Context is base.Context is types.Context


def test_unknown_algorithm_is_refused_clearly():
  @dataclasses.dataclass(frozen=True)
  class Unimplemented(specs.AlgorithmSpec):
    name: ClassVar[str] = 'test_unimplemented'

  with pytest.raises(
    ValueError,
    match=r'no JAX implementation of algorithm '
    r"'test_unimplemented'; known: agem, der",
  ):
    algorithms.build(Unimplemented())
  model = object()
  assert algorithms.adapt_model(Unimplemented(), model, CONTEXT) is model


def test_buffer_policies_are_the_specs():
  assert tuple(buffer_lib.POLICIES) == specs.REPLAY_POLICIES
  with pytest.raises(ValueError, match='unknown buffer policy'):
    buffer_lib.add(None, random_batch(), jax.random.PRNGKey(0), policy='fifo')


def test_end_task_samples():
  assert specs.NaiveSpec().end_task_samples(7) == 7
  assert specs.MCSGDSpec().end_task_samples(None) is None
  for name in ('ewc', 'mas'):
    assert specs.make_spec(name).end_task_samples(7) == 7
    assert specs.make_spec(name, importance_samples=5).end_task_samples(7) == 5
    assert specs.make_spec(name, importance_samples=5).end_task_samples(None) == 5
  assert sorted(n for n in NAMES if specs.SPECS[n].uses_task_data) == ['ewc', 'mas', 'mcsgd']


def after_one_step(name):
  """`(algo, train_state, algo_state)` after one step of task 0."""
  spec = small_spec(name)
  algo = algorithms.build(spec, CONTEXT)
  state = tiny_state(model=algorithms.adapt_model(spec, MODEL, CONTEXT))
  algo_state = algo.init(state, jax.random.PRNGKey(0))
  state, algo_state = algo.begin_task(state, algo_state, 0)
  state, algo_state, _ = algo.step(state, random_batch(), algo_state)
  return algo, state, algo_state


def leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize('name', NAMES)
def test_end_task_reads_the_task_data_iff_the_spec_says_so(name):
  """`uses_task_data = False`: `end_task` runs on None and gives the states it
  gives on the data; True: other data give other states."""
  algo, state, algo_state = after_one_step(name)
  end_task = jax.jit(algo.end_task)
  with_data = end_task(state, algo_state, random_chunk(seed=1))
  other = end_task(
    state, algo_state, None if not algo.spec.uses_task_data else random_chunk(seed=2)
  )
  assert jax.tree.structure(other) == jax.tree.structure(with_data)
  same = [np.array_equal(a, b) for a, b in zip(leaves(with_data), leaves(other))]
  if algo.spec.uses_task_data:
    assert not all(same), f'{name}: end_task does not depend on its data'
  else:
    assert all(same), f'{name}: end_task reads its data but uses_task_data is False'
