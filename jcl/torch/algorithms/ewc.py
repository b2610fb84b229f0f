"""Elastic Weight Consolidation (Kirkpatrick et al. 2017) and online EWC
(Schwarz et al. 2018), as `jcl.algorithms.ewc`.

Penalty (EWC eq. 3): `ewc_lambda / 2 * sum_i F_i (theta_i - theta*_i)^2`, with
the diagonal Fisher `F` at the end of each task, per sample, in evaluation
mode (dropout off, BatchNorm running statistics), on the class-masked outputs:

* empirical: `F = 1/N sum_n (d log p(y_n | x_n) / d theta)^2`;
* true:      `F = 1/N sum_n sum_c p(c | x_n) (d log p(c | x_n) / d theta)^2`.
"""

from __future__ import annotations

import torch

from jcl import specs
from jcl.torch import train_state as ts_lib
from jcl.torch.algorithms import base
from jcl.torch.algorithms import per_sample
from jcl.torch.algorithms import regularization as reg
from jcl.types import Batch


def log_probs(params, train_state: ts_lib.TrainState, x, t) -> torch.Tensor:
  """`log p(c | x)` of the model in evaluation mode at `params`, `[B, C]` (class-masked)."""
  logits, _ = ts_lib.apply_model(train_state, x, t, train=False, params=params)
  return torch.log_softmax(base.masked_logits(logits, train_state.class_mask), -1)


def empirical_fisher_sample(params, train_state, sample: Batch):
  """`(d log p(y | x) / d theta)^2` for one sample (a batch of one)."""

  def log_likelihood(p):
    return torch.gather(log_probs(p, train_state, sample.x, sample.t)[0], 0, sample.y.long())[0]

  return {k: torch.square(g) for k, g in torch.func.grad(log_likelihood)(params).items()}


def true_fisher_sample(params, train_state, sample: Batch):
  """`sum_c p(c | x) (d log p(c | x) / d theta)^2` for one sample."""
  num_classes = train_state.class_mask.shape[0]
  probs = torch.exp(log_probs(params, train_state, sample.x, sample.t)[0]).detach()
  total = None
  for c in range(num_classes):
    grads = torch.func.grad(lambda p: log_probs(p, train_state, sample.x, sample.t)[0, c])(params)
    term = {k: probs[c] * torch.square(g) for k, g in grads.items()}
    total = term if total is None else {k: total[k] + term[k] for k in total}
  return total


def fisher_objective(train_state: ts_lib.TrainState, kind: str) -> per_sample.Objective:
  """The Fisher as a `per_sample` objective: `log p(y_n | x_n)` (empirical),
  or `log p(c | x_n)` for every class c weighted by `p(c | x_n)` (true)."""

  def objective(logits, batch):
    logp = torch.log_softmax(base.masked_logits(logits, train_state.class_mask), -1)
    if kind == 'empirical':
      return torch.gather(logp, 1, batch.y.long()[:, None]), torch.ones_like(logp[:, :1])
    return logp, torch.exp(logp)

  return objective


def fisher_diagonal(train_state: ts_lib.TrainState, data: Batch, kind: str = 'empirical'):
  """The diagonal Fisher over the real samples of `data` `[K, B, ...]`,
  without per-sample gradients where the layers allow (`per_sample.power_sums`;
  the same as `reference_fisher_diagonal` to float32 rounding)."""
  return per_sample.power_sums(train_state, data, fisher_objective(train_state, kind), p=2)


def reference_fisher_diagonal(train_state: ts_lib.TrainState, data: Batch, kind: str = 'empirical'):
  """The diagonal Fisher from per-sample gradients (vmapped over samples)."""
  sample_fn = {'empirical': empirical_fisher_sample, 'true': true_fisher_sample}[kind]
  return base.per_sample_mean(
    lambda params, sample: sample_fn(params, train_state, sample),
    base.detached_params(train_state),
    data,
  )


def make(spec: specs.EWCSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  del context  # nothing of the stream is needed
  spec = spec or specs.EWCSpec()
  mode = 'online' if spec.online else 'sum'

  def init(train_state, rng=None):
    del rng
    return reg.init_penalty(train_state.params)

  def penalty(params, state):
    return reg.quadratic_penalty_and_grad(params, state, spec.ewc_lambda / 2)

  def end_task(train_state, state, task_data):
    fisher = fisher_diagonal(train_state, task_data, spec.fisher)
    return train_state, reg.consolidate(
      state, fisher, train_state.params, mode=mode, gamma=spec.gamma
    )

  return base.make(spec, base.sgd_step(penalty), init=init, end_task=end_task)
