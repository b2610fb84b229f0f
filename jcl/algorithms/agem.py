"""Averaged Gradient Episodic Memory (Chaudhry et al. 2019).

Each task keeps an episodic memory of `memory_per_task` samples. A step
computes the gradient `g` on the current batch and the reference gradient
`g_ref` on `memory_batch_size` samples drawn from the memories of previous
tasks; when they conflict (`g . g_ref < 0`) the update uses the projection
(eq. 11)

    g~ = g - (g . g_ref / g_ref . g_ref) g_ref,

else `g` itself. The current batch then enters its task's memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jcl import specs
from jcl.algorithms import base
from jcl.algorithms import buffer as buffer_lib
from jcl.algorithms import projection
from jcl.algorithms.er import INSERT_SALT, SAMPLE_SALT, ReplayState, require_context


def init_episodic_memory(memory_per_task: int, context: base.Context) -> ReplayState:
  return ReplayState(
    buffer_lib.init(
      memory_per_task * context.num_tasks,
      tuple(context.input_shape),
      num_classes=context.num_classes,
      num_tasks=context.num_tasks,
    )
  )


def previous_tasks(train_state, num_tasks: int) -> jax.Array:
  """`[T]` bool: the tasks before the one being trained."""
  return jnp.arange(num_tasks) < train_state.task


def make(spec: specs.AGEMSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  spec = spec or specs.AGEMSpec()
  context = require_context(context, 'agem')

  def init(train_state, rng):
    del train_state, rng
    return init_episodic_memory(spec.memory_per_task, context)

  def step(train_state, batch, state: ReplayState):
    _, grads, aux, metrics = base.loss_and_grads(train_state, batch, state)
    memory, _ = buffer_lib.sample(
      state.buffer,
      train_state.step_rng(SAMPLE_SALT),
      spec.memory_batch_size,
      task_mask=previous_tasks(train_state, context.num_tasks),
    )
    ref_grads = base.gradient(train_state, memory)
    projected = projection.tree_agem_project(grads, ref_grads)
    metrics['projected'] = (base.tree_dot(grads, ref_grads) < 0).astype(jnp.float32)
    new_state = base.apply_update(train_state, projected, aux['model_state'])
    buffer = buffer_lib.add(
      state.buffer,
      batch,
      train_state.step_rng(INSERT_SALT),
      policy='per_task',
      per_task=spec.memory_per_task,
    )
    return new_state, ReplayState(buffer), metrics

  return base.make(spec, step, init=init)
