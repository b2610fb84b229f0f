"""Less-Forgetful Learning (Jung et al., AAAI 2018), as `jcl.algorithms.lfl`.

After the first task the last layer (`head`) is frozen, bit for bit, and

    loss = CE + lfl_lambda * 1/B sum_b 1/2 ||h(x_b; theta) - h(x_b; theta_old)||_2^2

with `h` the penultimate activations of the current model and of the model
frozen at the last `end_task` (with its BatchNorm statistics), both in
evaluation mode; no penalty during the first task.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from jcl import specs
from jcl.torch import train_state as ts_lib
from jcl.torch.algorithms import base

Tensors = dict[str, torch.Tensor]

# The model's last layer (frozen after the first task): the parameters `head.*`.
HEAD = 'head.'


class LFLState(NamedTuple):
  old_params: Tensors
  old_model_state: Tensors
  active: torch.Tensor  # float32 scalar: 0 during the first task, then 1 (penalty on, head frozen).


def feature_distance(features, old_features, mask) -> torch.Tensor:
  """The paper's Euclidean loss: masked mean over the batch of `1/2 ||h - h_old||_2^2`."""
  return base.masked_mean(0.5 * torch.sum(torch.square(features - old_features), -1), mask)


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


def eval_features(train_state: ts_lib.TrainState, batch, train_features) -> torch.Tensor:
  """Features `[B, F]` of the current model in evaluation mode (with gradient):
  `train_features`, those of the training forward pass, when the model has
  neither BatchNorm nor dropout (the two modes then compute the same)."""
  model = train_state.model
  dropout = getattr(model, 'dropout', 0.0) or any(
    isinstance(m, torch.nn.Dropout) for m in model.modules()
  )
  if not train_state.norm_layers and not dropout:
    return train_features
  (_, features), _ = ts_lib.apply_model(
    train_state, batch.x, batch.t, train=False, return_features=True
  )
  return features


def head_names(train_state: ts_lib.TrainState) -> list[str]:
  """The parameters of the model's last layer, `head.*`, the layer LFL freezes."""
  names = [name for name in train_state.param_names if name.startswith(HEAD)]
  if not names:
    raise ValueError(
      "lfl freezes the model's last layer after the first task and needs it as "
      f"'{HEAD}*' parameters (as jcl's models name it); this model's parameters are "
      f'{sorted(train_state.params)}'
    )
  return names


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
    head_names(train_state)
    return snapshot(train_state, 0.0)

  def step(train_state, batch, state: LFLState):
    loss, aux = base.task_loss(train_state, batch, return_features=True)
    features = eval_features(train_state, batch, aux['features'])
    distance = feature_distance(features, old_features(train_state, state, batch), batch.mask)
    penalty = spec.lfl_lambda * state.active * distance
    grads = base.grad(loss + penalty, train_state)
    metrics = {
      'loss': loss.detach(),
      'penalty': penalty.detach(),
      'accuracy': base.accuracy(aux['logits'].detach(), batch.y, batch.mask),
    }
    # A frozen head gets no gradient (nor a share of a clipped norm) and keeps
    # its values through weight decay and momentum.
    frozen = state.active > 0
    head = head_names(train_state)
    kept = {name: train_state.params[name].detach().clone() for name in head}
    for name in head:
      grads[name] = torch.where(frozen, 0.0, grads[name])
    train_state = base.apply_update(train_state, grads, aux['model_state'])
    with torch.no_grad():
      for name in head:
        param = train_state.params[name]
        param.copy_(torch.where(frozen, kept[name], param))
    return train_state, state, metrics

  def end_task(train_state, state, task_data):
    del state, task_data
    return train_state, snapshot(train_state, 1.0)

  return base.make(spec, step, init=init, end_task=end_task)
