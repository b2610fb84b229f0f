"""Riemannian Walk (Chaudhry et al. 2018), as `jcl.algorithms.rwalk` (Avalanche's
`RWalkPlugin`).

Every step, with `g` the unregularised task gradient at `theta_t`:
`F <- ewc_alpha g^2 + (1 - ewc_alpha) F` (eq. 6; `F = g^2` at step 0) and
`l <- l - g (theta_{t+1} - theta_t)`; every `delta_t` steps
`s <- s + l / (1/2 F (theta_{t+1} - theta_c)^2 + eps)`, `l <- 0`,
`theta_c <- theta_{t+1}` (eq. 7). At a task's end `S = s` (first task) or
`(S + s) / 2` and the penalty (eq. 8) is
`ewc_lambda * sum (F / max F + relu(S) / max S) (theta - theta_k)^2`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from jcl import specs
from jcl.torch.algorithms import base
from jcl.torch.algorithms import regularization as reg

Tensors = dict[str, torch.Tensor]

EPS = float(torch.finfo(torch.float32).eps)


class RWalkState(NamedTuple):
  penalty: reg.QuadraticPenaltyState  # F / max F + relu(S) / max S, theta at the last task end
  fisher: Tensors  # F, the running empirical Fisher (over all tasks)
  scores: Tensors  # S, the merged scores of the finished tasks
  checkpoint_scores: Tensors  # s, this task's scores so far
  checkpoint_loss: Tensors  # l, the loss drop since the last checkpoint
  checkpoint_params: Tensors  # theta_c
  steps: torch.Tensor  # int64 scalar, training steps so far (all tasks)
  tasks: torch.Tensor  # int64 scalar, tasks finished


def _copy(tensors: Tensors) -> Tensors:
  return {k: v.detach().clone() for k, v in tensors.items()}


def _normalised(tensors: Tensors, maximum: torch.Tensor) -> Tensors:
  """`tensors / maximum`, or zeros when `maximum <= 0`."""
  if float(maximum) <= 0:
    return {k: torch.zeros_like(v) for k, v in tensors.items()}
  return {k: v / maximum for k, v in tensors.items()}


def _max(tensors: Tensors) -> torch.Tensor:
  return torch.max(torch.stack([torch.max(v) for v in tensors.values()]))


def penalty_importance(fisher: Tensors, scores: Tensors) -> Tensors:
  """`F / max F + relu(S) / max S`, the maxima over all parameters."""
  fisher_part = _normalised(fisher, _max(fisher))
  score_part = _normalised({k: torch.relu(v) for k, v in scores.items()}, _max(scores))
  return {k: fisher_part[k] + score_part[k] for k in fisher}


def make(
  spec: specs.RWalkSpec | None = None, context: base.Context | None = None
) -> base.Algorithm:
  del context  # nothing of the stream is needed
  spec = spec or specs.RWalkSpec()
  alpha = spec.ewc_alpha

  def init(train_state, rng=None):
    del rng
    params = base.detached_params(train_state)
    return RWalkState(
      penalty=reg.init_penalty(params),
      fisher=base.zeros_like(params),
      scores=base.zeros_like(params),
      checkpoint_scores=base.zeros_like(params),
      checkpoint_loss=base.zeros_like(params),
      checkpoint_params=_copy(params),
      steps=torch.zeros((), dtype=torch.int64),
      tasks=torch.zeros((), dtype=torch.int64),
    )

  def penalty(params, state: RWalkState):
    return reg.quadratic_penalty_and_grad(params, state.penalty, spec.ewc_lambda)

  def step(train_state, batch, state: RWalkState):
    task_grads, grads, aux, metrics = base.loss_and_grads(train_state, batch, state, penalty)
    with torch.no_grad():
      if int(state.steps) == 0:
        fisher = {k: torch.square(g) for k, g in task_grads.items()}
      else:
        fisher = {
          k: alpha * torch.square(task_grads[k]) + (1 - alpha) * state.fisher[k] for k in task_grads
        }
      before = _copy(train_state.params)
      base.apply_update(train_state, grads, aux.get('model_state'))
      after = base.detached_params(train_state)
      loss = {
        k: state.checkpoint_loss[k] - task_grads[k] * (after[k] - before[k]) for k in task_grads
      }
      scores, checkpoint_params = state.checkpoint_scores, state.checkpoint_params
      if (int(state.steps) + 1) % spec.delta_t == 0:
        scores = {
          k: scores[k]
          + loss[k] / (0.5 * fisher[k] * torch.square(after[k] - checkpoint_params[k]) + EPS)
          for k in loss
        }
        loss = base.zeros_like(loss)
        checkpoint_params = _copy(after)
    return (
      train_state,
      state._replace(
        fisher=fisher,
        checkpoint_scores=scores,
        checkpoint_loss=loss,
        checkpoint_params=checkpoint_params,
        steps=state.steps + 1,
      ),
      metrics,
    )

  def begin_task(train_state, state: RWalkState, task_id):
    del task_id
    params = base.detached_params(train_state)
    return train_state, state._replace(
      checkpoint_scores=base.zeros_like(params),
      checkpoint_loss=base.zeros_like(params),
      checkpoint_params=_copy(params),
    )

  def end_task(train_state, state: RWalkState, task_data):
    del task_data
    params = base.detached_params(train_state)
    if int(state.tasks) == 0:
      scores = _copy(state.checkpoint_scores)
    else:
      scores = {k: 0.5 * (state.scores[k] + state.checkpoint_scores[k]) for k in state.scores}
    importance = penalty_importance(state.fisher, scores)
    return train_state, state._replace(
      penalty=reg.QuadraticPenaltyState(importance, _copy(params)),
      scores=scores,
      checkpoint_scores=base.zeros_like(params),
      tasks=state.tasks + 1,
    )

  return base.make(spec, step, init=init, begin_task=begin_task, end_task=end_task)
