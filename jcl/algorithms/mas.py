"""Memory Aware Synapses (Aljundi et al. 2018).

Importance (eq. 4): `Omega = 1/N sum_k |d ||f(x_k; theta)||_2^2 / d theta|`,
the mean absolute gradient of the squared L2 norm of the output, over the
finished task's inputs (no labels needed); accumulated over tasks and
anchored at the latest solution. Penalty (eq. 3): `mas_lambda * sum Omega
(theta - theta*)^2`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jcl import specs
from jcl import train_state as ts_lib
from jcl.algorithms import base
from jcl.algorithms import per_sample
from jcl.algorithms import regularization as reg
from jcl.types import Batch


def output_norm_sample(params, train_state: ts_lib.TrainState, sample: Batch):
  """`|d ||f(x)||_2^2 / d theta|` for one sample (a batch of one)."""

  def squared_norm(p):
    logits, _ = ts_lib.apply_model(train_state, p, sample.x, sample.t, train=False)
    logits = jnp.where(train_state.class_mask, logits, 0.0)
    return jnp.sum(jnp.square(logits))

  return jax.tree.map(jnp.abs, jax.grad(squared_norm)(params))


def mas_importance(train_state: ts_lib.TrainState, data: Batch):
  """MAS importance over the real samples of `data` `[K, B, ...]`, without
  per-sample gradients (`jcl.algorithms.per_sample`; the same as
  `reference_mas_importance` to float32 rounding)."""

  def objective(logits, batch):
    del batch
    squared_norm = jnp.sum(jnp.square(jnp.where(train_state.class_mask, logits, 0.0)), axis=-1)
    return squared_norm[:, None], jnp.ones_like(squared_norm[:, None])

  return per_sample.power_sums(train_state, data, objective, p=1)


def reference_mas_importance(train_state: ts_lib.TrainState, data: Batch):
  """MAS importance from per-sample gradients (vmapped over samples)."""
  return base.per_sample_mean(
    lambda params, sample: output_norm_sample(params, train_state, sample), train_state.params, data
  )


def make(spec: specs.MASSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  del context  # nothing of the stream is needed
  spec = spec or specs.MASSpec()

  def init(train_state, rng):
    del rng
    return reg.init_penalty(train_state.params)

  def penalty(params, state):
    return reg.quadratic_penalty(params, state, spec.mas_lambda)

  def end_task(train_state, state, task_data):
    importance = mas_importance(train_state, task_data)
    return train_state, reg.consolidate(state, importance, train_state.params, mode='online')

  return base.make(spec, base.sgd_step(penalty), init=init, end_task=end_task)
