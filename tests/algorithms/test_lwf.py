"""Property tests of LwF (Li & Hoiem 2016) as Avalanche's plugin: the step is
`CE + alpha_k * KL(softmax(z_old[U] / T) || softmax(z[U] / T))` on the units `U`
of the classes of earlier tasks, the previous model kept at `end_task`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcl import specs
from jcl import train_state as ts_lib
from jcl.algorithms import lwf
from jcl.algorithms import naive

from tests.algorithms.conftest import NUM_CLASSES, random_batch, tiny_state

# XLA's cheap compilation: these tiny programs run a few times, compiling them dominates.
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}

ALPHA, TEMPERATURE = (0.0, 5.0, 2.0), 2.0
ALGO = lwf.make(specs.LwFSpec(alpha=ALPHA, temperature=TEMPERATURE))
STEP = jax.jit(ALGO.step, compiler_options=FAST_COMPILE)
NAIVE_STEP = jax.jit(naive.make().step, compiler_options=FAST_COMPILE)
OLD_UNITS = jnp.asarray([True, True, False])  # task 0 had classes 0 and 1


def labelled(seed, labels, task=0, size=8):
  """A random batch whose labels cycle through `labels`."""
  batch = random_batch(seed, size, task)
  return batch._replace(y=jnp.asarray(np.resize(labels, size), jnp.int32))


def moved(state, seed=1, scale=0.5):
  """`state` with every parameter perturbed."""
  rng = np.random.default_rng(seed)
  params = jax.tree.map(
    lambda p: p + scale * rng.normal(size=p.shape).astype(np.float32), state.params
  )
  return state.replace(params=params)


def previous(state, units=OLD_UNITS):
  """An algorithm state whose previous model is `state` and whose old classes are `units`."""
  return lwf.LwFState(state.params, state.model_state, units, jnp.zeros_like(units))


@jax.jit
def logits(state, batch):
  return ts_lib.apply_model(state, state.params, batch.x, batch.t, train=False)[0]


DISTILLATION = jax.jit(lwf.distillation, static_argnums=3, compiler_options=FAST_COMPILE)


def kd(state, old_state, batch, units=OLD_UNITS):
  return float(
    DISTILLATION(logits(state, batch), logits(old_state, batch), units, TEMPERATURE, batch.mask)
  )


def assert_same_params(a, b, rtol=1e-6, atol=1e-7):
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def test_alpha_zero_step_is_naive_even_where_the_models_differ():
  """Task 0 of the schedule has alpha 0: with a previous model far from the
  current one (KD > 0 on the old units), the step is Naive's."""
  state, old = tiny_state(), moved(tiny_state())
  batch = labelled(0, [2])
  assert kd(state, old, batch) > 1e-3
  state, _ = ALGO.begin_task(state, None, 0)
  new, _, metrics = STEP(state, batch, previous(old))
  assert float(metrics['penalty']) == 0.0
  assert_same_params(new, NAIVE_STEP(state, batch, None)[0])


def test_kd_is_zero_and_pulls_nothing_at_the_previous_model():
  """Right after `end_task` the model is its own previous model: the penalty
  is 0 and so is its gradient, even at alpha 5 (task 1)."""
  state = tiny_state()
  _, algo_state = ALGO.end_task(state, previous(state), None)
  state, algo_state = ALGO.begin_task(state, algo_state, 1)
  batch = labelled(1, [0, 1, 2], task=1)
  new, _, metrics = STEP(state, batch, algo_state)
  assert abs(float(metrics['penalty'])) < 1e-6
  assert_same_params(new, NAIVE_STEP(state, batch, None)[0], rtol=1e-5, atol=1e-6)


def test_kd_gradient_pulls_old_class_outputs_toward_the_previous_model():
  """d KL / d z_c = (p_c - q_c) / (T B) on the old units, 0 on the others; a
  step at alpha 5 brings the outputs closer to the previous model's, where
  Naive's step takes them away."""
  state = tiny_state()
  old = moved(state)
  batch = labelled(2, [2], task=1)
  z, z_old = logits(state, batch), logits(old, batch)
  grad = jax.jit(jax.grad(lwf.distillation), static_argnums=3)(
    z, z_old, OLD_UNITS, TEMPERATURE, batch.mask
  )
  p = jax.nn.softmax(np.asarray(z)[:, :2] / TEMPERATURE)
  q = jax.nn.softmax(np.asarray(z_old)[:, :2] / TEMPERATURE)
  np.testing.assert_allclose(grad[:, :2], (p - q) / TEMPERATURE / 8, rtol=1e-4, atol=1e-7)
  np.testing.assert_array_equal(grad[:, 2], 0.0)

  state, algo_state = ALGO.begin_task(state, previous(old), 1)
  before = kd(state, old, batch)
  lwf_state = STEP(state, batch, algo_state)[0]
  naive_state = NAIVE_STEP(state, batch, None)[0]
  after, naive_after = kd(lwf_state, old, batch), kd(naive_state, old, batch)
  assert after < 0.9 * before and after < naive_after - 0.005  # seen: 0.048 -> 0.040, naive 0.051


def test_the_schedule_picks_alpha_per_task():
  """`alpha[min(k, len - 1)]`: 0, 5, 2, then 2 for every later task."""
  state = tiny_state()
  old = moved(state)
  batch = labelled(3, [0, 1, 2])
  want_kd = kd(state, old, batch)
  for task, alpha in enumerate([0.0, 5.0, 2.0, 2.0, 2.0]):
    state_k, algo_state = ALGO.begin_task(state, previous(old), task)
    _, _, metrics = STEP(state_k, batch, algo_state)
    np.testing.assert_allclose(float(metrics['penalty']), alpha * want_kd, rtol=1e-5, atol=1e-8)
  assert specs.LwFSpec(alpha=ALPHA).alpha_for_task(7) == 2.0


def test_end_task_keeps_the_model_and_the_classes_of_the_finished_task():
  """The previous model is the model at `end_task`; the distilled units are
  the labels of the real samples of every finished task (padding ignored)."""
  state = tiny_state()
  algo_state = ALGO.init(state, None)
  assert not np.any(algo_state.old_classes) and algo_state.old_classes.shape == (NUM_CLASSES,)
  state, algo_state = ALGO.begin_task(state, algo_state, 0)
  padded = labelled(4, [0, 1, 2])
  padded = padded._replace(mask=jnp.asarray(padded.y != 2, jnp.float32))  # class 2 only padding
  for batch in (labelled(5, [0]), padded):
    state, algo_state, _ = STEP(state, batch, algo_state)
  state, algo_state = ALGO.end_task(state, algo_state, None)
  np.testing.assert_array_equal(algo_state.old_classes, [True, True, False])
  assert not np.any(algo_state.task_classes)
  for a, b in zip(jax.tree.leaves(algo_state.old_params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, b)
  state, algo_state = ALGO.begin_task(state, algo_state, 1)
  state, algo_state, _ = STEP(state, labelled(6, [2], task=1), algo_state)
  _, algo_state = ALGO.end_task(state, algo_state, None)
  np.testing.assert_array_equal(algo_state.old_classes, [True, True, True])


def test_spec_normalises_and_validates():
  assert specs.LwFSpec(alpha=0.5).alpha == (0.5,)
  assert specs.LwFSpec(alpha=[0, 1]).alpha == (0.0, 1.0)
  assert specs.make_spec('lwf', alpha=[1.0, 2.0]) == specs.LwFSpec(alpha=(1.0, 2.0))
  hash(specs.LwFSpec(alpha=[1.0]))
  for alpha in ((), (-1.0,), 'x', (0.5, float('nan')), float('inf')):
    with pytest.raises(ValueError, match="lwf: invalid 'alpha'"):
      specs.LwFSpec(alpha=alpha)
  with pytest.raises(ValueError, match="lwf: invalid 'temperature'"):
    specs.LwFSpec(temperature=0.0)
