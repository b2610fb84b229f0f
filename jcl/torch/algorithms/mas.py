"""Memory Aware Synapses (Aljundi et al. 2018), as `jcl.algorithms.mas`.

Importance (eq. 4): `Omega = 1/N sum_k |d ||f(x_k; theta)||_2^2 / d theta|`
over the finished task's inputs (evaluation mode, outputs outside the class
mask left out), accumulated over tasks and anchored at the latest solution;
penalty (eq. 3) `mas_lambda * sum Omega (theta - theta*)^2`.
"""

from __future__ import annotations

import torch

from jcl import specs
from jcl.torch import train_state as ts_lib
from jcl.torch.algorithms import base
from jcl.torch.algorithms import per_sample
from jcl.torch.algorithms import regularization as reg
from jcl.types import Batch


def output_norm_sample(params, train_state: ts_lib.TrainState, sample: Batch):
  """`|d ||f(x)||_2^2 / d theta|` for one sample (a batch of one)."""

  def squared_norm(p):
    logits, _ = ts_lib.apply_model(train_state, sample.x, sample.t, train=False, params=p)
    logits = torch.where(train_state.class_mask, logits, torch.zeros_like(logits))
    return torch.sum(torch.square(logits))

  return {k: torch.abs(g) for k, g in torch.func.grad(squared_norm)(params).items()}


def mas_importance(train_state: ts_lib.TrainState, data: Batch):
  """MAS importance over the real samples of `data` `[K, B, ...]`, without
  per-sample gradients where the layers allow (`per_sample.power_sums`; the
  same as `reference_mas_importance` to float32 rounding)."""

  def objective(logits, batch):
    del batch
    squared_norm = torch.sum(
      torch.square(torch.where(train_state.class_mask, logits, torch.zeros_like(logits))), -1
    )
    return squared_norm[:, None], torch.ones_like(squared_norm[:, None])

  return per_sample.power_sums(train_state, data, objective, p=1)


def reference_mas_importance(train_state: ts_lib.TrainState, data: Batch):
  """MAS importance from per-sample gradients (vmapped over samples)."""
  return base.per_sample_mean(
    lambda params, sample: output_norm_sample(params, train_state, sample),
    base.detached_params(train_state),
    data,
  )


def make(spec: specs.MASSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  del context  # nothing of the stream is needed
  spec = spec or specs.MASSpec()

  def init(train_state, rng=None):
    del rng
    return reg.init_penalty(train_state.params)

  def penalty(params, state):
    return reg.quadratic_penalty_and_grad(params, state, spec.mas_lambda)

  def end_task(train_state, state, task_data):
    importance = mas_importance(train_state, task_data)
    return train_state, reg.consolidate(state, importance, train_state.params, mode='online')

  return base.make(spec, base.sgd_step(penalty), init=init, end_task=end_task)
