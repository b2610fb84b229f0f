"""MC-SGD: the mode-connectivity phase, its knobs and its episodic memory."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcl import algorithms
from jcl import models
from jcl import specs
from jcl.algorithms import buffer as buffer_lib
from jcl.algorithms import mcsgd
from jcl.types import Batch

from tests.algorithms.conftest import INPUT_DIM, NUM_CLASSES, tiny_state

NUM_TASKS = 3
CONTEXT = algorithms.Context((INPUT_DIM,), NUM_CLASSES, num_tasks=NUM_TASKS)
TEACHERS = np.random.default_rng(123).normal(size=(NUM_TASKS, INPUT_DIM, NUM_CLASSES))


def task_chunk(task, samples=64, batch=16, seed=0):
  """`[K, B, ...]` data of a task whose labels come from its own linear teacher."""
  rng = np.random.default_rng([seed, task])
  x = rng.normal(size=(samples, INPUT_DIM)).astype(np.float32)
  y = np.argmax(x @ TEACHERS[task], -1).astype(np.int32)
  k = samples // batch
  return Batch(
    jnp.asarray(x.reshape(k, batch, INPUT_DIM)),
    jnp.asarray(y.reshape(k, batch)),
    jnp.full((k, batch), task, jnp.int32),
    jnp.ones((k, batch), jnp.float32),
  )


# One spec family, so that few functions are compiled: tasks are trained once
# with the first, then each `lmc_epochs` variant runs its own phase.
BASE = dict(memory_per_task=32, lmc_batch_size=8, lmc_lr=0.2, lmc_line_samples=5)


def fresh_state(**kwargs):
  """Every test trains with the same optimizer (a static field): one compile."""
  return tiny_state(lr=0.2, **kwargs)


def built(lmc_epochs=1):
  """`(algo, jitted step, jitted end_task)` of the spec `BASE` + `lmc_epochs`."""
  return _built(lmc_epochs)


@functools.lru_cache(maxsize=None)
def _built(lmc_epochs):
  algo = algorithms.build(specs.make_spec('mcsgd', lmc_epochs=lmc_epochs, **BASE), CONTEXT)
  return algo, jax.jit(algo.step), jax.jit(algo.end_task)


def train_task(state, algo_state, task, epochs=15):
  algo, step, _ = built()
  state, algo_state = algo.begin_task(state, algo_state, task)
  data = task_chunk(task)
  for _ in range(epochs):
    for k in range(data.y.shape[0]):
      state, algo_state, _ = step(state, jax.tree.map(lambda a: a[k], data), algo_state)
  return state, algo_state, data


def memory_batch(buffer, tasks):
  """Every stored sample of `tasks` as one batch (mask = stored and in `tasks`)."""
  keep = buffer.valid & jnp.isin(buffer.t, jnp.asarray(tasks))
  return Batch(buffer.x, buffer.y, buffer.t, keep.astype(jnp.float32))


@functools.lru_cache(maxsize=None)
def two_tasks():
  """Tasks 0 (with its end_task) and 1 trained: what the phase of task 1 starts from."""
  algo, _, end_task = built()
  state = fresh_state()
  algo_state = algo.init(state, None)
  state, algo_state, data0 = train_task(state, algo_state, 0)
  state, algo_state = end_task(state, algo_state, data0)
  state, algo_state, data1 = train_task(state, algo_state, 1)
  return state, algo_state, data1


def line_objective(spec, state, w, w_prev, w_task, buffer):
  """The MC-SGD objective on the whole memory: previous tasks on the w_prev segment, the
  current task's samples on the w_task segment."""
  task = int(state.task)
  return float(
    jax.jit(mcsgd.connectivity_loss)(
      w,
      w_prev,
      w_task,
      state,
      memory_batch(buffer, list(range(task))),
      memory_batch(buffer, [task]),
      mcsgd.line_positions(spec.lmc_line_samples),
    )
  )


def run_phase(lmc_epochs=1):
  """The phase of task 1 with `lmc_epochs` (cached)."""
  return _run_phase(lmc_epochs)


@functools.lru_cache(maxsize=None)
def _run_phase(lmc_epochs):
  algo, _, end_task = built(lmc_epochs)
  state, algo_state, data = two_tasks()
  new_state, new_algo_state = end_task(state, algo_state, data)
  return algo.spec, state, algo_state.anchor, state.params, new_state, new_algo_state


def test_connectivity_phase_lowers_the_loss_along_both_segments():
  spec, state, w_prev, w_task, new_state, new_algo_state = run_phase(lmc_epochs=2)
  buffer = new_algo_state.buffer
  start = mcsgd.interpolate(w_prev, w_task, spec.lmc_init_position)
  at_start = line_objective(spec, state, start, w_prev, w_task, buffer)
  at_task = line_objective(spec, state, w_task, w_prev, w_task, buffer)
  after = line_objective(spec, state, new_state.params, w_prev, w_task, buffer)
  print(f'line loss: start {at_start:.3f}, continual solution {at_task:.3f}, after {after:.3f}')
  assert after < 0.85 * at_start
  assert after < at_task  # better connected than the continual solution itself
  # ... and it is the previous tasks' segment that improves over w_task.
  prev_batch = memory_batch(buffer, [0])
  taus = mcsgd.line_positions(spec.lmc_line_samples)
  segment_loss = jax.jit(mcsgd.segment_loss)
  prev_after = float(segment_loss(new_state.params, w_prev, state, prev_batch, taus))
  prev_task = float(segment_loss(w_task, w_prev, state, prev_batch, taus))
  assert prev_after < prev_task


def test_result_becomes_the_params_and_the_next_anchor():
  _, _, w_prev, w_task, new_state, new_algo_state = run_phase()
  for a, b, c, d in zip(
    *map(jax.tree.leaves, (new_state.params, new_algo_state.anchor, w_task, w_prev))
  ):
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, d)


def test_first_task_keeps_its_continual_solution():
  algo, _, end_task = built()
  state = fresh_state()
  state, algo_state, data = train_task(state, algo.init(state, None), 0, epochs=1)
  new_state, new_algo_state = end_task(state, algo_state, data)
  assert int(new_algo_state.lmc_steps) == 0
  for a, b, c in zip(
    *map(jax.tree.leaves, (new_state.params, new_algo_state.anchor, state.params))
  ):
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(b, c)


def test_lmc_epochs_passes_over_the_larger_segment_data():
  # Task 1: 32 samples on each segment, batch 8 -> 4 steps per pass.
  results = {n: run_phase(lmc_epochs=n) for n in (1, 2)}
  steps = {n: int(r[-1].lmc_steps) for n, r in results.items()}
  assert steps == {1: 4, 2: 8}
  losses = {}
  for n, (spec, state, w_prev, w_task, new_state, new_algo_state) in results.items():
    losses[n] = line_objective(spec, state, new_state.params, w_prev, w_task, new_algo_state.buffer)
  assert losses[2] < losses[1]


def test_line_samples_sets_the_vmapped_points_and_the_gradient_has_the_tau_factor():
  state = fresh_state()
  w_end = jax.tree.map(lambda p: p + 0.3, state.params)
  w = state.params
  batch = Batch(*(a[0] for a in task_chunk(0)))
  eval_loss, eval_grad = jax.jit(mcsgd.eval_loss), jax.jit(jax.grad(mcsgd.eval_loss))
  segment_loss, segment_grad = jax.jit(mcsgd.segment_loss), jax.jit(jax.grad(mcsgd.segment_loss))
  for n in (1, 4):
    taus = mcsgd.line_positions(n)
    np.testing.assert_allclose(taus, np.arange(1, n + 1) / n, rtol=1e-6)
    points = [mcsgd.interpolate(w_end, w, tau) for tau in taus]
    # vmapped mean over exactly these n points...
    want = np.mean([float(eval_loss(p, state, batch)) for p in points])
    np.testing.assert_allclose(float(segment_loss(w, w_end, state, batch, taus)), want, rtol=1e-5)
    # ... and its gradient carries the chain-rule factor tau of each point.
    grads = segment_grad(w, w_end, state, batch, taus)
    point_grads = [eval_grad(p, state, batch) for p in points]
    want_grads = jax.tree.map(
      lambda *g: sum(float(t) * gi for t, gi in zip(taus, g)) / n, *point_grads
    )
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # The vmapped axis of the traced line loss is n long.
  jaxpr = str(jax.make_jaxpr(mcsgd.segment_loss)(w, w_end, state, batch, mcsgd.line_positions(4)))
  assert f'f32[4,16,{NUM_CLASSES}]' in jaxpr


def test_line_phase_runs_without_dropout():
  with_dropout = models.MLP(widths=(8,), num_classes=NUM_CLASSES, dropout=0.5)
  state = fresh_state(model=with_dropout)
  plain = fresh_state(model=models.MLP(widths=(8,), num_classes=NUM_CLASSES))
  batch = Batch(*(a[0] for a in task_chunk(0)))
  taus = mcsgd.line_positions(4)
  w_end = jax.tree.map(lambda p: p - 0.2, state.params)
  segment_loss = jax.jit(mcsgd.segment_loss)
  a = segment_loss(state.params, w_end, state, batch, taus)
  b = segment_loss(state.params, w_end, plain.replace(params=state.params), batch, taus)
  np.testing.assert_allclose(a, b, rtol=1e-6)
  # The training step does use dropout.
  algo, step, _ = built()
  _, _, metrics = step(state, batch, algo.init(state, None))
  assert (
    abs(float(metrics['loss']) - float(jax.jit(mcsgd.eval_loss)(state.params, state, batch))) > 1e-4
  )


def test_memory_holds_memory_per_task_samples_of_each_task():
  algo, _, end_task = built()
  per_task = algo.spec.memory_per_task
  state = fresh_state()
  algo_state = algo.init(state, None)
  for task in range(2):
    state, algo_state = algo.begin_task(state, algo_state, task)
    data = task_chunk(task)
    state, algo_state = end_task(state, algo_state, data)
  buf = algo_state.buffer
  assert int(buffer_lib.size(buf)) == 2 * per_task
  for task in range(2):
    region = slice(task * per_task, (task + 1) * per_task)
    assert bool(jnp.all(buf.valid[region])) and bool(jnp.all(buf.t[region] == task))
    stored = np.asarray(buf.x[region])
    pool = np.asarray(task_chunk(task).x).reshape(-1, INPUT_DIM)
    matches = np.abs(stored[:, None] - pool[None]).sum(-1) == 0
    assert matches.any(1).all()  # every stored sample is one of the task's
    assert len(set(matches.argmax(1))) == per_task  # drawn without replacement
  assert not bool(jnp.any(buf.valid[2 * per_task :]))  # task 2 not seen yet


def test_padding_never_enters_the_memory():
  algo, _, end_task = built()
  state = fresh_state()
  data = task_chunk(0)
  data = data._replace(mask=data.mask.at[2:].set(0.0))  # 32 real samples
  _, algo_state = end_task(state, algo.init(state, None), data)
  real = np.asarray(data.x[:2]).reshape(-1, INPUT_DIM)
  np.testing.assert_array_equal(np.sort(np.asarray(algo_state.buffer.x[:32]), 0), np.sort(real, 0))


def test_end_task_is_deterministic():
  first = run_phase()[-2].params
  second = _run_phase.__wrapped__(1)[-2].params
  for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
    np.testing.assert_array_equal(a, b)


def test_spec_rejects_meaningless_values():
  for field, value in (
    ('lmc_line_samples', 0),
    ('lmc_epochs', 0),
    ('lmc_init_position', 1.5),
    ('lmc_momentum', 1.0),
    ('memory_per_task', 0),
    ('lmc_lr', 0.0),
  ):
    with pytest.raises(ValueError, match=field):
      specs.make_spec('mcsgd', **{field: value})
