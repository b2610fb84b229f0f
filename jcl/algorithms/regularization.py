"""Quadratic-penalty machinery shared by EWC, online EWC, SI and MAS.

These methods differ only in how they measure parameter importance `Omega`:
the penalty is always

    P(theta) = coefficient * sum_i Omega_i (theta_i - theta*_i)^2

and at a task's end the new importance `F` of the finished task is merged in:

* `mode='sum'` keeps the sum of one penalty per task,
  `sum_k F_k (theta - theta_k)^2`, exactly as one quadratic:
  `Omega = sum_k F_k` and `theta* = sum_k F_k theta_k / Omega` (the two
  differ by a constant only, so gradients are identical), in fixed memory.
* `mode='online'` decays the old importance and moves the anchor to the new
  solution: `Omega <- gamma * Omega + F`, `theta* <- theta` (online EWC, SI, MAS).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any


class QuadraticPenaltyState(NamedTuple):
  importance: PyTree  # Omega, shaped like the parameters; 0 before the first task ends.
  anchor: PyTree  # theta*, shaped like the parameters.


def init_penalty(params: PyTree) -> QuadraticPenaltyState:
  return QuadraticPenaltyState(
    importance=jax.tree.map(jnp.zeros_like, params), anchor=jax.tree.map(jnp.array, params)
  )


def quadratic_penalty(params: PyTree, state: QuadraticPenaltyState, coefficient) -> jax.Array:
  """`coefficient * sum Omega * (theta - theta*)^2` (a scalar)."""
  terms = jax.tree.map(
    lambda w, p, a: jnp.sum(w * jnp.square(p - a)), state.importance, params, state.anchor
  )
  return coefficient * sum(jax.tree.leaves(terms))


def consolidate(
  state: QuadraticPenaltyState,
  new_importance: PyTree,
  params: PyTree,
  *,
  mode: str,
  gamma: float = 1.0,
) -> QuadraticPenaltyState:
  """Merges the finished task's importance `F` and solution `theta` into the penalty."""
  if mode == 'online':
    importance = jax.tree.map(lambda o, f: gamma * o + f, state.importance, new_importance)
    return QuadraticPenaltyState(importance, jax.tree.map(jnp.array, params))
  if mode == 'sum':
    importance = jax.tree.map(jnp.add, state.importance, new_importance)

    def anchor(old_w, old_a, f, p, w):
      weighted = old_w * old_a + f * p
      return jnp.where(w > 0, weighted / jnp.where(w > 0, w, 1.0), p)

    anchors = jax.tree.map(
      anchor, state.importance, state.anchor, new_importance, params, importance
    )
    return QuadraticPenaltyState(importance, anchors)
  raise ValueError(f"mode must be 'sum' or 'online', got {mode!r}")
