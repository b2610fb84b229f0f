"""Gradient Episodic Memory (Lopez-Paz & Ranzato 2017).

Each previous task k contributes a constraint `<g~, g_k> >= 0`, with `g_k`
the gradient on its episodic memory (`memory_per_task` samples). When the
current gradient `g` violates one, the update is the closest gradient that
satisfies all of them (eq. 10), found through the dual QP (eq. 11-12)
solved inside JAX by `projection.gem_project`. The gradients of all tasks'
memories are computed in one `vmap` (fixed shapes: future tasks' rows are
masked out).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jcl import specs
from jcl.algorithms import base
from jcl.algorithms import buffer as buffer_lib
from jcl.algorithms import projection
from jcl.algorithms.agem import init_episodic_memory, previous_tasks
from jcl.algorithms.er import INSERT_SALT, ReplayState, require_context


def memory_gradients(train_state, buffer, per_task: int, num_tasks: int):
  """`([T, P] flat gradients on each task's memory, [T] bool: memory non-empty)`."""

  def task_gradient(task_id):
    memory, _ = buffer_lib.task_slots(buffer, task_id, per_task)
    return ravel_pytree(base.gradient(train_state, memory))[0], jnp.any(memory.mask > 0)

  return jax.vmap(task_gradient)(jnp.arange(num_tasks))


def make(spec: specs.GEMSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  spec = spec or specs.GEMSpec()
  context = require_context(context, 'gem')

  def init(train_state, rng):
    del train_state, rng
    return init_episodic_memory(spec.memory_per_task, context)

  def step(train_state, batch, state: ReplayState):
    _, grads, aux, metrics = base.loss_and_grads(train_state, batch, state)
    flat, unravel = ravel_pytree(grads)
    task_grads, has_memory = memory_gradients(
      train_state, state.buffer, spec.memory_per_task, context.num_tasks
    )
    active = has_memory & previous_tasks(train_state, context.num_tasks)
    projected = projection.gem_project(
      flat, task_grads, active, margin=spec.margin, iterations=spec.solver_iterations
    )
    metrics['projected'] = jnp.any(active & (task_grads @ flat < 0)).astype(jnp.float32)
    new_state = base.apply_update(train_state, unravel(projected), aux['model_state'])
    buffer = buffer_lib.add(
      state.buffer,
      batch,
      train_state.step_rng(INSERT_SALT),
      policy='per_task',
      per_task=spec.memory_per_task,
    )
    return new_state, ReplayState(buffer), metrics

  return base.make(spec, step, init=init)
