"""Gradient projections of A-GEM and GEM (`jcl.algorithms.projection`).

A-GEM (Chaudhry et al. 2019, eq. 11):

    g~ = g - (g . g_ref / g_ref . g_ref) g_ref   if g . g_ref < 0,   else g.

GEM (Lopez-Paz & Ranzato 2017, eqs. 10-12): with `G` the rows of the
previous tasks' memory gradients, when some `<g, G_k> < 0`,

    v = argmin_{v >= margin} 1/2 v^T G G^T v + (G g)^T v,    z = G^T v + g,

else `g`. The JAX backend solves this dual inside XLA in float32; here it is
solved exactly in float64 by Lawson-Hanson's active-set method (a
non-negative least-squares problem in `v - margin`).
"""

from __future__ import annotations

import torch

Tensors = dict[str, torch.Tensor]


def tree_agem_project(grads: Tensors, ref_grads: Tensors) -> Tensors:
  """A-GEM's projection on `{name: tensor}` gradients (dots summed over entries)."""
  dot = sum(torch.sum(grads[k] * ref_grads[k]) for k in grads)
  ref_sq = sum(torch.sum(ref_grads[k] * ref_grads[k]) for k in grads)
  if not bool(dot < 0):
    return grads
  coef = dot / ref_sq
  return {k: grads[k] - coef * ref_grads[k] for k in grads}


def nonnegative_quadratic(
  q: torch.Tensor, b: torch.Tensor, *, max_steps: int | None = None, tol: float = 1e-12
) -> torch.Tensor:
  """`argmin_{u >= 0} 1/2 u^T q u + b^T u` for a PSD `q` `[T, T]` (Lawson-Hanson).

  Each outer step frees the coordinate of largest negative gradient and
  solves the unconstrained problem on the free set (least squares, so a
  singular `q` is fine), stepping back onto `u >= 0` when that solution
  leaves it. Exact up to rounding once the free set is right.
  """
  num = b.shape[0]
  max_steps = max_steps or 3 * num + 10
  scale = torch.max(torch.abs(b)).clamp(min=1e-300)
  u = torch.zeros_like(b)
  free = torch.zeros(num, dtype=torch.bool, device=b.device)

  def solve(free_set):
    s = torch.zeros_like(b)
    idx = torch.nonzero(free_set).flatten()
    sub = torch.linalg.lstsq(q[idx][:, idx], -b[idx][:, None]).solution[:, 0]
    s[idx] = sub
    return s

  for _ in range(max_steps):
    violation = -(q @ u + b)
    candidates = ~free & (violation > tol * scale)
    if not bool(torch.any(candidates)):
      break
    k = torch.argmax(torch.where(candidates, violation, torch.full_like(violation, -torch.inf)))
    free[k] = True
    for _ in range(num + 1):
      s = solve(free)
      if bool(torch.all(s[free] > 0)):
        u = s
        break
      leaving = free & (s <= 0)
      alpha = torch.min(u[leaving] / (u[leaving] - s[leaving]))
      u = u + alpha * (s - u)
      free &= u > tol * torch.max(u).clamp(min=1e-300)
      u = torch.where(free, u, torch.zeros_like(u))
      if not bool(torch.any(free)):
        break
  return u


def gem_project(
  grads: Tensors, memory_grads: list[Tensors], *, margin: float = 0.0, max_steps: int | None = None
) -> Tensors:
  """GEM's projection of `grads` against the constraints `memory_grads` (one per
  previous task with a memory), in float64; `grads` itself when none is violated.
  `max_steps` bounds the active-set steps (None: `3 T + 10`)."""
  if not memory_grads:
    return grads
  names = list(grads)
  flat = torch.cat([grads[k].reshape(-1) for k in names]).double()
  rows = torch.stack([torch.cat([m[k].reshape(-1) for k in names]) for m in memory_grads]).double()
  linear = rows @ flat
  if not bool(torch.any(linear < 0)):
    return grads
  gram = rows @ rows.T
  lower = torch.full_like(linear, float(margin))
  u = nonnegative_quadratic(gram, linear + gram @ lower, max_steps=max_steps)
  projected = (flat + (lower + u) @ rows).float()
  out, start = {}, 0
  for k in names:
    n = grads[k].numel()
    out[k] = projected[start : start + n].reshape(grads[k].shape)
    start += n
  return out
