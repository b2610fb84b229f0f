"""Averaged Gradient Episodic Memory (Chaudhry et al. 2019), as `jcl.algorithms.agem`.

A step computes the gradient `g` on the current batch and `g_ref` on
`memory_batch_size` samples drawn from the episodic memories of previous
tasks (`memory_per_task` each), projects `g` when they conflict (eq. 11),
then offers the batch to its task's memory.
"""

from __future__ import annotations

import torch

from jcl import specs
from jcl.torch.algorithms import base
from jcl.torch.algorithms import buffer as buffer_lib
from jcl.torch.algorithms import projection
from jcl.torch.algorithms.er import INSERT_SALT, SAMPLE_SALT, ReplayState, require_context


def init_episodic_memory(memory_per_task: int, context: base.Context, train_state) -> ReplayState:
  return ReplayState(
    buffer_lib.init(
      memory_per_task * context.num_tasks,
      tuple(context.input_shape),
      num_classes=context.num_classes,
      num_tasks=context.num_tasks,
      device=train_state.device,
    )
  )


def previous_tasks(train_state, num_tasks: int) -> torch.Tensor:
  """`[T]` bool: the tasks before the one being trained."""
  return torch.arange(num_tasks, device=train_state.device) < train_state.task


def make(spec: specs.AGEMSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  spec = spec or specs.AGEMSpec()
  context = require_context(context, 'agem')

  def init(train_state, rng=None):
    del rng
    return init_episodic_memory(spec.memory_per_task, context, train_state)

  def step(train_state, batch, state: ReplayState):
    source = train_state.rng
    _, grads, aux, metrics = base.loss_and_grads(train_state, batch, state)
    memory, _ = buffer_lib.sample(
      state.buffer,
      source,
      train_state.step_key(SAMPLE_SALT),
      spec.memory_batch_size,
      task_mask=previous_tasks(train_state, context.num_tasks),
    )
    ref_grads = base.gradient(train_state, memory)
    metrics['projected'] = (base.tree_dot(grads, ref_grads) < 0).float()
    projected = projection.tree_agem_project(grads, ref_grads)
    insert_key = train_state.step_key(INSERT_SALT)
    base.apply_update(train_state, projected, aux['model_state'])
    buffer = buffer_lib.add(
      state.buffer, batch, source, insert_key, policy='per_task', per_task=spec.memory_per_task
    )
    return train_state, ReplayState(buffer), metrics

  return base.make(spec, step, init=init)
