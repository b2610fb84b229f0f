"""Learning without Forgetting (Li & Hoiem 2016), as `jcl.algorithms.lwf`
(Avalanche's `LwF` plugin).

At each `end_task` the model is kept as the previous model; a step of task k
trains on

    loss = CE(z, y) + alpha_k * 1/B sum_b KL(softmax(z^o_b[U] / T) || softmax(z_b[U] / T))

with `z` the logits of the training forward pass, `z^o` those of the previous
model (no gradient; in training mode on the step's inputs, as Avalanche's copy
of its training model), `U` the units of the classes of the
tasks before k, `alpha_k = alpha[min(k, len(alpha) - 1)]`; no T^2 factor.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from jcl import specs
from jcl.torch import train_state as ts_lib
from jcl.torch.algorithms import base

Tensors = dict[str, torch.Tensor]


class LwFState(NamedTuple):
  old_params: Tensors
  old_model_state: Tensors
  old_classes: torch.Tensor  # bool [C]: the classes of the finished tasks, the distilled units U.
  task_classes: torch.Tensor  # bool [C]: the classes of the current task seen so far.


def batch_classes(batch, num_classes: int) -> torch.Tensor:
  """bool `[C]`: the labels of the real samples of `batch`."""
  classes = torch.arange(num_classes, device=batch.y.device)
  return torch.any((batch.y[:, None] == classes) & (batch.mask[:, None] > 0), dim=0)


def distillation(logits, old_logits, units, temperature: float, mask) -> torch.Tensor:
  """`1/B sum_b KL(softmax(old_b[U] / T) || softmax(logits_b[U] / T))` over the real samples."""
  log_p = torch.log_softmax(torch.where(units, logits / temperature, base.MASKED_LOGIT), -1)
  log_q = torch.log_softmax(torch.where(units, old_logits / temperature, base.MASKED_LOGIT), -1)
  kl = torch.sum(torch.where(units, torch.exp(log_q) * (log_q - log_p), 0.0), -1)
  return base.masked_mean(kl, mask)


@torch.no_grad()
def old_logits(train_state: ts_lib.TrainState, state: LwFState, batch) -> torch.Tensor:
  """Logits `[B, C]` of the previous model, in training mode on the step's
  inputs (its augmentation, if any), without gradient."""
  logits, _ = ts_lib.apply_model(
    train_state,
    batch.x,
    batch.t,
    train=True,
    params=state.old_params,
    model_state=state.old_model_state,
  )
  return logits


def make(spec: specs.LwFSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  del context  # nothing of the stream is needed
  spec = spec or specs.LwFSpec()

  def init(train_state, rng=None):
    del rng
    no_classes = torch.zeros_like(train_state.class_mask, dtype=torch.bool)
    return LwFState(
      ts_lib.clone_tensors(train_state.params),
      ts_lib.clone_tensors(train_state.model_state),
      no_classes,
      no_classes.clone(),
    )

  def step(train_state, batch, state: LwFState):
    loss, aux = base.task_loss(train_state, batch)
    kd = distillation(
      aux['raw_logits'],
      old_logits(train_state, state, batch),
      state.old_classes,
      spec.temperature,
      batch.mask,
    )
    penalty = spec.alpha_for_task(train_state.task) * kd
    grads = base.grad(loss + penalty, train_state)
    metrics = {
      'loss': loss.detach(),
      'penalty': penalty.detach(),
      'accuracy': base.accuracy(aux['logits'].detach(), batch.y, batch.mask),
    }
    train_state = base.apply_update(train_state, grads, aux['model_state'])
    seen = state.task_classes | batch_classes(batch, state.task_classes.shape[-1])
    return train_state, state._replace(task_classes=seen), metrics

  def end_task(train_state, state: LwFState, task_data):
    del task_data
    return train_state, LwFState(
      ts_lib.clone_tensors(train_state.params),
      ts_lib.clone_tensors(train_state.model_state),
      state.old_classes | state.task_classes,
      torch.zeros_like(state.task_classes),
    )

  return base.make(spec, step, init=init, end_task=end_task)
