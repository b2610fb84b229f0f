"""Gradient Episodic Memory (Lopez-Paz & Ranzato 2017), as `jcl.algorithms.gem`.

One constraint `<g~, g_k> >= 0` per previous task k with a memory, `g_k`
the gradient on its episodic memory (all `memory_per_task` slots, empty ones
masked); a violating gradient is replaced by the solution of the dual QP
(eqs. 10-12), solved exactly in float64 (`projection.gem_project`).
"""

from __future__ import annotations

import torch

from jcl import specs
from jcl.torch.algorithms import base
from jcl.torch.algorithms import buffer as buffer_lib
from jcl.torch.algorithms import projection
from jcl.torch.algorithms.agem import init_episodic_memory
from jcl.torch.algorithms.er import INSERT_SALT, ReplayState, require_context


def memory_gradients(train_state, buffer, per_task: int) -> list:
  """The gradients on the memories of the previous tasks that have one."""
  grads = []
  for task_id in range(train_state.task):
    memory, _ = buffer_lib.task_slots(buffer, task_id, per_task)
    if bool(torch.any(memory.mask > 0)):
      grads.append(base.gradient(train_state, memory))
  return grads


def make(spec: specs.GEMSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  spec = spec or specs.GEMSpec()
  context = require_context(context, 'gem')

  def init(train_state, rng=None):
    del rng
    return init_episodic_memory(spec.memory_per_task, context, train_state)

  def step(train_state, batch, state: ReplayState):
    _, grads, aux, metrics = base.loss_and_grads(train_state, batch, state)
    task_grads = memory_gradients(train_state, state.buffer, spec.memory_per_task)
    violated = any(bool(base.tree_dot(grads, g) < 0) for g in task_grads)
    metrics['projected'] = torch.tensor(float(violated))
    projected = projection.gem_project(
      grads, task_grads, margin=spec.margin, max_steps=spec.solver_iterations
    )
    insert_key = train_state.step_key(INSERT_SALT)
    base.apply_update(train_state, projected, aux['model_state'])
    buffer = buffer_lib.add(
      state.buffer,
      batch,
      train_state.rng,
      insert_key,
      policy='per_task',
      per_task=spec.memory_per_task,
    )
    return train_state, ReplayState(buffer), metrics

  return base.make(spec, step, init=init)
