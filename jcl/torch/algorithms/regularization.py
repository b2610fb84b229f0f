"""Quadratic-penalty machinery shared by EWC, online EWC, SI and MAS
(`jcl.algorithms.regularization`).

    P(theta) = coefficient * sum_i Omega_i (theta_i - theta*_i)^2

`mode='sum'` keeps the sum of one penalty per task exactly as one quadratic
(`Omega = sum_k F_k`, `theta* = sum_k F_k theta_k / Omega`);
`mode='online'` decays and re-anchors: `Omega <- gamma Omega + F`, `theta* <- theta`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

Tensors = dict[str, torch.Tensor]


class QuadraticPenaltyState(NamedTuple):
  importance: Tensors  # Omega, shaped like the parameters; 0 before the first task ends.
  anchor: Tensors  # theta*.


def init_penalty(params: Tensors) -> QuadraticPenaltyState:
  return QuadraticPenaltyState(
    importance={k: torch.zeros_like(v.detach()) for k, v in params.items()},
    anchor={k: v.detach().clone() for k, v in params.items()},
  )


def quadratic_penalty(params: Tensors, state: QuadraticPenaltyState, coefficient) -> torch.Tensor:
  """`coefficient * sum Omega * (theta - theta*)^2` (a scalar)."""
  terms = [
    torch.sum(state.importance[k] * torch.square(params[k] - state.anchor[k]))
    for k in state.importance
  ]
  return coefficient * sum(terms)


@torch.no_grad()
def quadratic_penalty_and_grad(
  params: Tensors, state: QuadraticPenaltyState, coefficient
) -> tuple[torch.Tensor, Tensors]:
  """`(P, dP/dtheta)` with `dP/dtheta = (coefficient Omega) (2 (theta - theta*))`,
  in the order of operations of JAX's derivative of `quadratic_penalty`; the
  gradient's tensors are new (the caller may add to them in place)."""
  names = list(state.importance)
  importance = [state.importance[k] for k in names]
  diffs = torch._foreach_sub([params[k] for k in names], [state.anchor[k] for k in names])
  # Two buffers, updated in place (`a * b` is `b * a`: the same roundings).
  weighted = torch._foreach_mul(diffs, diffs)
  torch._foreach_mul_(weighted, importance)
  value = coefficient * torch.sum(torch.stack([torch.sum(w) for w in weighted]))
  grads = weighted
  for g, omega in zip(grads, importance):
    torch.mul(omega, coefficient, out=g)
  torch._foreach_mul_(diffs, 2.0)
  torch._foreach_mul_(grads, diffs)
  return value, dict(zip(names, grads))


def consolidate(
  state: QuadraticPenaltyState,
  new_importance: Tensors,
  params: Tensors,
  *,
  mode: str,
  gamma: float = 1.0,
) -> QuadraticPenaltyState:
  """Merges the finished task's importance `F` and solution `theta` into the penalty."""
  params = {k: v.detach() for k, v in params.items()}
  if mode == 'online':
    importance = {k: gamma * state.importance[k] + new_importance[k] for k in state.importance}
    return QuadraticPenaltyState(importance, {k: v.clone() for k, v in params.items()})
  if mode == 'sum':
    importance, anchors = {}, {}
    for k in state.importance:
      w = state.importance[k] + new_importance[k]
      weighted = state.importance[k] * state.anchor[k] + new_importance[k] * params[k]
      importance[k] = w
      anchors[k] = torch.where(
        w > 0, weighted / torch.where(w > 0, w, torch.ones_like(w)), params[k]
      )
    return QuadraticPenaltyState(importance, anchors)
  raise ValueError(f"mode must be 'sum' or 'online', got {mode!r}")
