"""Sums over samples of per-sample gradient powers, without per-sample
gradients (`jcl.algorithms.per_sample` for the PyTorch backend).

The importance passes (EWC's diagonal Fisher, MAS's importance) need, over
the N samples of a task and per parameter,

  S = sum_n sum_c w_{n,c} |d o_{n,c} / d theta|^p     (p = 2 or p = 1)

for per-sample objectives `o_{n,c}` and weights `w_{n,c} >= 0` (see
`jcl.algorithms.per_sample`). The model runs once per batch, in evaluation
mode (samples independent), with every linear layer (an `nn.Linear`, or the
`TaskHead`'s projection before its head selection and mask) called once on
`[B, F]` inputs swapped for `_PowerLinear`: the per-sample weight gradient
is `delta_n (outer) x_n`, and `|delta_n x_n|^p = |delta_n|^p |x_n|^p`, so its
backward returns `S_weight = |delta|^p.T @ |x|^p` and `S_bias = sum_n
|delta_n|^p` (one matmul, nothing per sample) and the true input gradient,
which carries the backward pass on. `sum_c w |g_c|^p` comes from scaling
objective c by `w^(1/p)`, one backward pass per c. Every other parameter
(convolutions, BatchNorm, a layer called twice or on inputs of more dims)
gets the per-sample reference (`reference_power_sums`, a vmapped gradient per
sample), which the tests compare the closed form against.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

from jcl.torch import models as models_lib
from jcl.torch import train_state as ts_lib
from jcl.torch.algorithms import base
from jcl.types import Batch

Tensors = dict[str, torch.Tensor]
# `objective(logits [B, C], batch) -> (o [B, C'], w [B, C'])`: per-sample
# objectives `o` (differentiable in the logits) and their weights `w >= 0`.
Objective = Callable[[torch.Tensor, Batch], tuple[torch.Tensor, torch.Tensor]]


def _power(v: torch.Tensor, p: int) -> torch.Tensor:
  return torch.square(v) if p == 2 else torch.abs(v)


class _PowerLinear(torch.autograd.Function):
  """`F.linear(x, weight, bias)` whose backward gives, for `weight` and
  `bias`, the sums over the batch of the per-sample gradient powers."""

  @staticmethod
  def forward(x, weight, bias, p):
    return F.linear(x, weight, bias)

  @staticmethod
  def setup_context(ctx, inputs, output):
    x, weight, bias, p = inputs
    ctx.save_for_backward(x, weight)
    ctx.p, ctx.has_bias = p, bias is not None

  @staticmethod
  def backward(ctx, g):
    x, weight = ctx.saved_tensors
    g_p = _power(g, ctx.p)
    d_x = g @ weight if ctx.needs_input_grad[0] else None
    return d_x, g_p.T @ _power(x, ctx.p), g_p.sum(0) if ctx.has_bias else None, None


def _linear_layers(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
  """`(name, module, method)`: the layers `_PowerLinear` can stand in for, and
  the method that applies their weights."""
  layers = []
  for name, module in model.named_modules():
    if type(module) is nn.Linear:
      layers.append((name, module, 'forward'))
    elif isinstance(module, models_lib.TaskHead):
      layers.append((name, module, 'linear'))
  return layers


@contextlib.contextmanager
def _power_linears(model: nn.Module, p: int, calls: dict[str, int]):
  """Inside, the model's linear layers are `_PowerLinear`; `calls[name]`
  counts each layer's calls (`-1` once it got an input other than `[B, F]`)."""
  layers = _linear_layers(model)

  def power_linear(name, module):
    def apply(x):
      calls[name] = -1 if x.ndim != 2 or calls.get(name, 0) < 0 else calls.get(name, 0) + 1
      return _PowerLinear.apply(x, module.weight, module.bias, p)

    return apply

  try:
    for name, module, method in layers:
      setattr(module, method, power_linear(name, module))
    yield
  finally:
    for _, module, method in layers:
      delattr(module, method)  # the class's method again


def _covered(train_state: ts_lib.TrainState, calls: dict[str, int]) -> set[str]:
  """The parameters of the linear layers called exactly once on `[B, F]` inputs."""
  prefixes = [f'{name}.' if name else '' for name, n in calls.items() if n == 1]
  return {
    prefix + own
    for prefix in prefixes
    for own in ('weight', 'bias')
    if prefix + own in train_state.params
  }


def power_sums(
  train_state: ts_lib.TrainState, data: Batch, objective: Objective, p: int
) -> Tensors:
  """`1/N sum_n sum_c w_{n,c} |d o_{n,c} / d theta|^p` over the real samples
  of `data` `[K, B, ...]` (see the module docstring), `{name: tensor}`.

  Args:
    train_state: the model (evaluation mode: BatchNorm uses its statistics).
    data: the samples, a chunk `[K, B, ...]` with a mask.
    objective: `(logits [B, C], batch) -> (o [B, C'], w [B, C'])`.
    p: 2 (squares) or 1 (absolute values).
  """
  if p not in (1, 2):
    raise ValueError(f'p must be 1 or 2, got {p!r}')
  names, params = train_state.param_names, train_state.param_list
  total = [torch.zeros_like(v) for v in params]
  count = torch.zeros((), device=data.mask.device)
  calls: dict[str, int] = {}
  with torch.enable_grad(), _power_linears(train_state.model, p, calls):
    for k in range(data.mask.shape[0]):
      batch = Batch(data.x[k], data.y[k], data.t[k], data.mask[k])
      if not bool(torch.any(batch.mask > 0)):
        continue
      calls.clear()
      logits, _ = ts_lib.apply_model(train_state, batch.x, batch.t, train=False)
      o, w = objective(logits, batch)
      w = (w * batch.mask[:, None]).detach()
      scale = torch.sqrt(w) if p == 2 else w
      for c in range(o.shape[-1]):
        grads = torch.autograd.grad(
          torch.sum(scale[:, c] * o[:, c]),
          params,
          retain_graph=c + 1 < o.shape[-1],
          allow_unused=True,
          materialize_grads=True,
        )
        torch._foreach_add_(total, grads)
      count = count + torch.sum(batch.mask)
  sums = dict(zip(names, (v / torch.clamp(count, min=1.0) for v in total)))
  covered = _covered(train_state, calls)
  if covered.issuperset(names):
    return sums
  reference = reference_power_sums(train_state, data, objective, p)
  return {name: sums[name] if name in covered else reference[name] for name in names}


def reference_power_sums(
  train_state: ts_lib.TrainState, data: Batch, objective: Objective, p: int
) -> Tensors:
  """The same as `power_sums`, from per-sample gradients (vmapped over
  samples): the reference the tests compare with, and the route for the
  parameters that `power_sums` has no closed form for."""

  def one(params, sample: Batch):
    def outputs(q):
      logits, _ = ts_lib.apply_model(train_state, sample.x, sample.t, train=False, params=q)
      return objective(logits, sample)

    w = outputs(params)[1][0].detach()
    jacobian = torch.func.jacrev(lambda q: outputs(q)[0][0])(params)  # {name: [C', ...]}
    return {k: torch.tensordot(w, _power(j, p), dims=1) for k, j in jacobian.items()}

  return base.per_sample_mean(one, base.detached_params(train_state), data)
