"""The optimizer of `jcl.train_state.make_optimizer`, with optax's arithmetic.

`OptimizerSpec` gives the chain (optax order)

    clip_by_global_norm(c) -> add_decayed_weights(wd) -> sgd(lr, momentum) | adam(lr)

and `Optimizer` applies it to lists of tensors in place, operation for
operation as optax does, so the updates agree to float32 rounding:

* clipping: `g` unchanged when `||g|| < c`, else `g / ||g|| * c`;
* weight decay: `g + wd * theta`, added to the gradient after clipping;
* SGD: `trace = g + momentum * trace` (optax's `trace`, no dampening),
  `theta += -lr * trace` (without momentum `theta += -lr * g`);
* Adam: `mu = (1 - b1) g + b1 mu`, `nu = (1 - b2) g^2 + b2 nu`,
  `theta += -lr * mu_hat / (sqrt(nu_hat) + eps)` with bias-corrected
  moments (eps outside the square root, b1 0.9, b2 0.999, eps 1e-8).

The learning rate is a float32 value that `jcl.torch.train_state.begin_task`
sets per task, like optax's injected hyperparameter.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from jcl.specs import OptimizerSpec

ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8


def _f32(value) -> float:
  """`value` rounded to float32 (as optax's float32 hyperparameters), as a Python float."""
  return float(np.float32(value))


def global_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
  """`sqrt(sum_i sum(t_i^2))` over all tensors (optax.tree.norm)."""
  return torch.sqrt(sum(torch.sum(t * t) for t in tensors))


class Optimizer:
  """The optax chain of `spec` over a fixed list of parameters.

  Attributes:
    spec: the `OptimizerSpec`.
    learning_rate: the current (float32) learning rate.
    count: Adam's step count (0 after `reset`).
    trace: SGD momentum buffers (None without momentum).
    mu, nu: Adam's moments (None for SGD).
  """

  def __init__(self, spec: OptimizerSpec, params: Sequence[torch.Tensor]):
    self.spec = spec
    self.learning_rate = _f32(spec.learning_rate)
    self._scratch: list[torch.Tensor] = []
    self.reset(params)

  def reset(self, params: Sequence[torch.Tensor]) -> None:
    """A fresh state, as `tx.init(params)` (the learning rate back to the spec's)."""
    self.learning_rate = _f32(self.spec.learning_rate)
    zeros = lambda: [torch.zeros_like(p) for p in params]
    self.count = 0
    self.trace = zeros() if self.spec.name == 'sgd' and self.spec.momentum else None
    self.mu, self.nu = (zeros(), zeros()) if self.spec.name == 'adam' else (None, None)

  @torch.no_grad()
  def updates(
    self,
    grads: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    out: Sequence[torch.Tensor] | None = None,
  ) -> list[torch.Tensor]:
    """The additive updates of one step (and the state advanced), as
    `tx.update`; SGD's are written into `out` when given (tensors like `params`)."""
    spec = self.spec
    grads = list(grads)
    if spec.grad_clip_norm is not None:
      norm = global_norm(grads)
      if not bool(norm < spec.grad_clip_norm):
        grads = [(g / norm) * spec.grad_clip_norm for g in grads]
    if spec.weight_decay > 0:
      grads = [g + spec.weight_decay * p for g, p in zip(grads, params)]
    neg_lr = -self.learning_rate
    # The moments are updated in place, one fused call per operation over every
    # tensor (`a * t + b` is `t * a` then `+ b`: the same float32 roundings).
    if spec.name == 'sgd':
      if self.trace is not None:
        torch._foreach_mul_(self.trace, spec.momentum)
        torch._foreach_add_(self.trace, grads)
        grads = self.trace
      if out is None:
        return torch._foreach_mul(grads, neg_lr)
      for update, g in zip(out, grads):
        torch.mul(g, neg_lr, out=update)
      return list(out)
    torch._foreach_mul_(self.mu, ADAM_B1)
    torch._foreach_add_(self.mu, torch._foreach_mul(grads, 1 - ADAM_B1))
    torch._foreach_mul_(self.nu, ADAM_B2)
    torch._foreach_add_(self.nu, torch._foreach_mul(torch._foreach_mul(grads, grads), 1 - ADAM_B2))
    self.count += 1
    correction1 = _f32(1 - np.float32(ADAM_B1) ** np.float32(self.count))
    correction2 = _f32(1 - np.float32(ADAM_B2) ** np.float32(self.count))
    return [
      ((m / correction1) / (torch.sqrt(v / correction2) + ADAM_EPS)) * neg_lr
      for m, v in zip(self.mu, self.nu)
    ]

  @torch.no_grad()
  def step(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> None:
    """`params += updates(grads, params)`, in place. The updates go to buffers
    kept from step to step: allocating them anew costs more than computing them."""
    params = list(params)
    scratch = self._scratch
    if len(scratch) != len(params) or any(
      (u.shape, u.dtype, u.device) != (p.shape, p.dtype, p.device) for u, p in zip(scratch, params)
    ):
      scratch = self._scratch = [torch.empty_like(p) for p in params]
    torch._foreach_add_(params, self.updates(grads, params, out=scratch))

  def state_dict(self) -> dict:
    return {
      'learning_rate': self.learning_rate,
      'count': self.count,
      'trace': self.trace,
      'mu': self.mu,
      'nu': self.nu,
    }
