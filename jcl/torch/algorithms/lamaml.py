"""La-MAML, C-MAML and Sync-La-MAML (Gupta, Yadav & Paull 2020, Alg. 1-2),
as `jcl.algorithms.lamaml`.

Each incoming batch of `k` samples gets `glances` meta-updates. A glance
(keys `split(fold_in(key(step, 5), glance), 4)` for the permutation, the
memory draw, the insertion and dropout):

  1. permutes the batch and draws `replay_batch_size` memory samples
     uniformly with replacement among the stored ones; the meta-batch is
     `memory + current`; on the first glance the permuted batch then enters
     the reservoir buffer;
  2. from `theta_0 = theta` takes single-sample inner steps (eq. 4)
     `theta_i = theta_{i-1} - relu(alpha) * grad l(theta_{i-1}; b[i])`
     (padding takes none), each followed by the meta-batch loss at
     `theta_i`; the meta-loss is their mean (eq. 5, 7). First order treats
     the inner gradients as constants, `second_order` differentiates
     through them;
  3. clips the meta-gradients of `theta` and `alpha` separately by global
     norm (`g * min(1, c / (||g|| + 1e-6))`, torch's `clip_grad_norm_`),
     steps `alpha <- alpha - alpha_lr * g_alpha` (`learn_lr`), then
     `theta <- theta - relu(alpha) * g_theta` (eq. 8) or the run's optimizer
     on `g_theta` (`sync_update`).

BatchNorm: inner steps in evaluation mode, meta-losses in training mode; the
statistics advance once per glance, to those of the last meta-batch forward.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from jcl import specs
from jcl.torch import train_state as ts_lib
from jcl.torch.algorithms import base
from jcl.torch.algorithms import buffer as buffer_lib
from jcl.torch.algorithms.er import init_buffer, require_context
from jcl.types import Batch

Tensors = dict[str, torch.Tensor]

GLANCE_SALT = 5
CLIP_EPS = 1e-6


class LaMAMLState(NamedTuple):
  """`alpha`: per-parameter learning rates (`{name: tensor}` like the params);
  `buffer`: the reservoir replay buffer."""

  alpha: Tensors
  buffer: buffer_lib.ReplayBuffer


def clip_by_global_norm(grads: Tensors, max_norm: float | None) -> tuple[Tensors, torch.Tensor]:
  """`g * min(1, max_norm / (||g|| + 1e-6))` and the norm before clipping."""
  norm = torch.sqrt(sum(torch.sum(g * g) for g in grads.values()))
  if max_norm is None:
    return grads, norm
  scale = torch.clamp(max_norm / (norm + CLIP_EPS), max=1.0)
  return {k: g * scale for k, g in grads.items()}, norm


def sample_with_replacement(buffer: buffer_lib.ReplayBuffer, source, key, size: int) -> Batch:
  """`size` rows uniformly with replacement among the valid slots; the rows
  beyond `min(size, stored)` have mask 0 (the authors' `getBatch`)."""
  zeros = torch.zeros(buffer.capacity, device=buffer.x.device)
  logits = torch.where(buffer.valid, zeros, zeros - torch.inf)
  idx = source.categorical(key, logits, size)
  mask = torch.arange(size, device=idx.device) < torch.clamp(buffer_lib.size(buffer), max=size)
  return Batch(buffer.x[idx], buffer.y[idx], buffer.t[idx], mask.float())


def _logits(state, params, batch: Batch, *, train: bool):
  outputs, model_state = ts_lib.apply_model(state, batch.x, batch.t, train=train, params=params)
  return base.masked_logits(outputs, state.class_mask), model_state


def meta_objective(
  state: ts_lib.TrainState,
  params: Tensors,
  alpha: Tensors,
  inner: Batch,
  meta: Batch,
  spec: specs.LaMAMLSpec,
):
  """`(meta-loss, model_state)`: the mean over the real inner steps of the
  meta-batch loss at the look-ahead weights, differentiable in `params` and
  `alpha`; the BatchNorm statistics of the last meta-batch forward."""
  inner_train_mode = not state.norm_layers
  lrs = {k: torch.relu(a) for k, a in alpha.items()}
  names = list(params)
  fast = dict(params)
  loss_sum, model_state = 0.0, None
  real = inner.mask > 0
  for i in range(inner.y.shape[0]):
    if not bool(real[i]):
      continue  # no step, no term (the JAX scan multiplies them by 0)
    one = Batch(inner.x[i : i + 1], inner.y[i : i + 1], inner.t[i : i + 1], inner.mask[i : i + 1])
    logits, _ = _logits(state, fast, one, train=inner_train_mode)
    inner_loss = base.cross_entropy(logits, one.y, torch.ones_like(one.mask))
    grads = torch.autograd.grad(
      inner_loss, [fast[k] for k in names], create_graph=spec.second_order
    )
    if spec.inner_grad_clip is not None:
      grads = [torch.clamp(g, -spec.inner_grad_clip, spec.inner_grad_clip) for g in grads]
    fast = {k: fast[k] - lrs[k] * g for k, g in zip(names, grads)}
    logits, model_state = _logits(state, fast, meta, train=True)
    loss_sum = loss_sum + base.cross_entropy(logits, meta.y, meta.mask)
  return loss_sum / torch.clamp(torch.sum(inner.mask), min=1.0), model_state


def make(
  spec: specs.LaMAMLSpec | None = None, context: base.Context | None = None
) -> base.Algorithm:
  spec = spec or specs.LaMAMLSpec()
  context = require_context(context, 'lamaml')

  def init(train_state, rng=None):
    del rng
    alpha = {k: torch.full_like(p.detach(), spec.alpha_init) for k, p in train_state.params.items()}
    return LaMAMLState(alpha, init_buffer(spec, context, train_state))

  def step(train_state, batch: Batch, state: LaMAMLState):
    source = train_state.rng
    key = train_state.step_key(GLANCE_SALT)
    num_samples = batch.y.shape[0]
    with torch.no_grad():  # prequential accuracy: the batch before any update on it
      logits, _ = _logits(train_state, None, batch, train=False)
      accuracy = base.accuracy(logits, batch.y, batch.mask)
    params = train_state.params
    alpha, buffer = state.alpha, state.buffer
    per_glance = []
    for index in range(spec.glances):
      k_perm, k_memory, k_insert, _ = source.split(source.fold_in(key, index), 4)
      order = source.permutation(k_perm, num_samples)
      current = Batch(*(a[order] for a in batch))
      memory = sample_with_replacement(buffer, source, k_memory, spec.replay_batch_size)
      if index == 0:
        buffer = buffer_lib.add(buffer, current, source, k_insert, policy='reservoir')
      alpha_leaves = {k: a.detach().requires_grad_(spec.learn_lr) for k, a in alpha.items()}
      loss, model_state = meta_objective(
        train_state, params, alpha_leaves, current, base.concat_batches(memory, current), spec
      )
      wrt = list(params.values()) + (list(alpha_leaves.values()) if spec.learn_lr else [])
      grads = torch.autograd.grad(loss, wrt, allow_unused=True, materialize_grads=True)
      g_theta = dict(zip(params, grads[: len(params)]))
      g_theta, theta_norm = clip_by_global_norm(g_theta, spec.grad_clip_norm)
      metrics = {'loss': loss.detach(), 'meta_grad_norm': theta_norm}
      if spec.learn_lr:
        g_alpha, alpha_norm = clip_by_global_norm(
          dict(zip(params, grads[len(params) :])), spec.grad_clip_norm
        )
        alpha = {k: alpha[k] - spec.alpha_lr * g_alpha[k] for k in alpha}
        metrics['alpha_grad_norm'] = alpha_norm
      with torch.no_grad():
        if spec.sync_update:
          train_state.optimizer.step(
            train_state.param_list, [g_theta[k] for k in train_state.param_names]
          )
        else:
          for k, p in params.items():
            p.sub_(torch.relu(alpha[k]) * g_theta[k])
        for name, value in (model_state or {}).items():
          train_state.model_state[name].copy_(value)
      per_glance.append(metrics)
    train_state.step += 1
    alphas = torch.cat([a.reshape(-1) for a in alpha.values()])
    metrics = {k: torch.stack([m[k] for m in per_glance]).mean() for k in per_glance[0]}
    metrics.update(
      accuracy=accuracy,
      alpha_mean=alphas.mean(),
      alpha_zero_fraction=(alphas <= 0).float().mean(),
      buffer_size=buffer_lib.size(buffer),
    )
    return train_state, LaMAMLState(alpha, buffer), metrics

  return base.make(spec, step, init=init)
