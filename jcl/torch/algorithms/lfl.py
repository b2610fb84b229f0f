"""Less-Forgetting Learning (Jung et al. 2016), as `jcl.algorithms.lfl`.

    loss = CE + lfl_lambda * 1/B sum_b ||h(x_b; theta) - h(x_b; theta_old)||_2^2

with `h` the penultimate activations and `theta_old` (with its BatchNorm
statistics, evaluation mode) frozen at the last `end_task`; no penalty
during the first task.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from jcl import specs
from jcl.torch import train_state as ts_lib
from jcl.torch.algorithms import base

Tensors = dict[str, torch.Tensor]


class LFLState(NamedTuple):
  old_params: Tensors
  old_model_state: Tensors
  active: torch.Tensor  # float32 scalar: 0 during the first task, then 1.


def feature_distance(features, old_features, mask) -> torch.Tensor:
  """Masked mean over the batch of `||h - h_old||_2^2`."""
  return base.masked_mean(torch.sum(torch.square(features - old_features), -1), mask)


@torch.no_grad()
def old_features(train_state: ts_lib.TrainState, state: LFLState, batch) -> torch.Tensor:
  """Features `[B, F]` of the frozen previous-task model (evaluation mode, no gradient)."""
  (_, features), _ = ts_lib.apply_model(
    train_state,
    batch.x,
    batch.t,
    train=False,
    params=state.old_params,
    model_state=state.old_model_state,
    return_features=True,
  )
  return features


def make(spec: specs.LFLSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  del context  # nothing of the stream is needed
  spec = spec or specs.LFLSpec()

  def snapshot(train_state, active: float) -> LFLState:
    return LFLState(
      ts_lib.clone_tensors(train_state.params),
      ts_lib.clone_tensors(train_state.model_state),
      torch.tensor(active, device=train_state.device),
    )

  def init(train_state, rng=None):
    del rng
    return snapshot(train_state, 0.0)

  def step(train_state, batch, state: LFLState):
    loss, aux = base.task_loss(train_state, batch, return_features=True)
    distance = feature_distance(
      aux['features'], old_features(train_state, state, batch), batch.mask
    )
    penalty = spec.lfl_lambda * state.active * distance
    grads = base.grad(loss + penalty, train_state)
    metrics = {
      'loss': loss.detach(),
      'penalty': penalty.detach(),
      'accuracy': base.accuracy(aux['logits'].detach(), batch.y, batch.mask),
    }
    return base.apply_update(train_state, grads, aux['model_state']), state, metrics

  def end_task(train_state, state, task_data):
    del task_data
    return train_state, snapshot(train_state, 1.0)

  return base.make(spec, step, init=init, end_task=end_task)
