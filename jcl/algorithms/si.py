"""Synaptic Intelligence (Zenke, Poole & Ganguli 2017).

During training each parameter accumulates its contribution to the drop of
the loss along the optimisation path (eq. 3):

    omega += -g * (theta_after - theta_before)

with `g` the gradient of the *unregularised* task loss at the step. At the end
of task k (eq. 5):

    Omega += omega / ((theta_k - theta_{k-1})^2 + xi),   omega <- 0,

and the penalty (eq. 4) is `si_lambda * sum Omega (theta - theta_k)^2`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jcl import specs
from jcl.algorithms import base
from jcl.algorithms import regularization as reg

PyTree = Any


class SIState(NamedTuple):
  penalty: reg.QuadraticPenaltyState  # Omega and theta* (the previous task's end)
  path_integral: PyTree  # omega of the current task
  task_start: PyTree  # theta at the start of the current task


def si_importance(path_integral: PyTree, start: PyTree, end: PyTree, xi: float) -> PyTree:
  """`omega / ((end - start)^2 + xi)` (eq. 5)."""
  return jax.tree.map(lambda w, a, b: w / (jnp.square(b - a) + xi), path_integral, start, end)


def make(
  spec: specs.SISpec | None = None,
  loss_fn: base.LossFn = base.task_loss,
  context: base.Context | None = None,
) -> base.Algorithm:
  """SI from its spec; `loss_fn` is the task loss whose path integral is tracked."""
  del context  # nothing of the stream is needed
  spec = spec or specs.SISpec()

  def init(train_state, rng):
    del rng
    params = train_state.params
    return SIState(
      reg.init_penalty(params), base.tree_zeros_like(params), jax.tree.map(jnp.array, params)
    )

  def penalty(params, state: SIState):
    return reg.quadratic_penalty(params, state.penalty, spec.si_lambda)

  def step(train_state, batch, state: SIState):
    task_grads, grads, aux, metrics = base.loss_and_grads(
      train_state, batch, state, penalty, loss_fn
    )
    new_train_state = base.apply_update(train_state, grads, aux.get('model_state'))
    path_integral = jax.tree.map(
      lambda w, g, new, old: w - g * (new - old),
      state.path_integral,
      task_grads,
      new_train_state.params,
      train_state.params,
    )
    return new_train_state, state._replace(path_integral=path_integral), metrics

  def end_task(train_state, state: SIState, task_data):
    del task_data
    params = train_state.params
    importance = si_importance(state.path_integral, state.task_start, params, spec.xi)
    return train_state, SIState(
      reg.consolidate(state.penalty, importance, params, mode='online'),
      base.tree_zeros_like(params),
      jax.tree.map(jnp.array, params),
    )

  return base.make(spec, step, init=init, end_task=end_task)
