"""Synaptic Intelligence (Zenke, Poole & Ganguli 2017), as `jcl.algorithms.si`.

Path integral (eq. 3) of the *unregularised* task-loss gradient `g`:
`omega += -g * (theta_after - theta_before)` at every step; at the end of
task k (eq. 5) `Omega += omega / ((theta_k - theta_{k-1})^2 + xi)`,
`omega <- 0`; penalty (eq. 4) `si_lambda * sum Omega (theta - theta_k)^2`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from jcl import specs
from jcl.torch.algorithms import base
from jcl.torch.algorithms import regularization as reg

Tensors = dict[str, torch.Tensor]


class SIState(NamedTuple):
  penalty: reg.QuadraticPenaltyState  # Omega and theta* (the previous task's end)
  path_integral: Tensors  # omega of the current task
  task_start: Tensors  # theta at the start of the current task


def si_importance(path_integral: Tensors, start: Tensors, end: Tensors, xi: float) -> Tensors:
  """`omega / ((end - start)^2 + xi)` (eq. 5)."""
  return {k: w / (torch.square(end[k] - start[k]) + xi) for k, w in path_integral.items()}


def make(
  spec: specs.SISpec | None = None,
  loss_fn: base.LossFn = base.task_loss,
  context: base.Context | None = None,
) -> base.Algorithm:
  """SI from its spec; `loss_fn` is the task loss whose path integral is tracked."""
  del context  # nothing of the stream is needed
  spec = spec or specs.SISpec()

  def init(train_state, rng=None):
    del rng
    params = base.detached_params(train_state)
    return SIState(
      reg.init_penalty(params), base.zeros_like(params), {k: v.clone() for k, v in params.items()}
    )

  def penalty(params, state: SIState):
    return reg.quadratic_penalty_and_grad(params, state.penalty, spec.si_lambda)

  def step(train_state, batch, state: SIState):
    task_grads, grads, aux, metrics = base.loss_and_grads(
      train_state, batch, state, penalty, loss_fn
    )
    before = {k: v.detach().clone() for k, v in train_state.params.items()}
    base.apply_update(train_state, grads, aux.get('model_state'))
    after = train_state.params
    path_integral = {
      k: w - task_grads[k] * (after[k].detach() - before[k]) for k, w in state.path_integral.items()
    }
    return train_state, state._replace(path_integral=path_integral), metrics

  def end_task(train_state, state: SIState, task_data):
    del task_data
    params = base.detached_params(train_state)
    importance = si_importance(state.path_integral, state.task_start, params, spec.xi)
    return train_state, SIState(
      reg.consolidate(state.penalty, importance, params, mode='online'),
      base.zeros_like(params),
      {k: v.clone() for k, v in params.items()},
    )

  return base.make(spec, step, init=init, end_task=end_task)
