"""Elastic Weight Consolidation (Kirkpatrick et al. 2017) and online EWC
(Schwarz et al. 2018).

Penalty (EWC eq. 3): `ewc_lambda / 2 * sum_i F_i (theta_i - theta*_i)^2`, with
`F` the diagonal Fisher information at the end of each task:

* empirical: `F = 1/N sum_n (d log p(y_n | x_n) / d theta)^2` (true labels);
* true:      `F = 1/N sum_n sum_c p(c | x_n) (d log p(c | x_n) / d theta)^2`.

Separate EWC keeps the sum of one penalty per task; online EWC keeps one
running Fisher `F <- gamma F + F_t` anchored at the latest solution.
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


def log_probs(params, train_state: ts_lib.TrainState, x, t) -> jax.Array:
  """`log p(c | x)` of the model in evaluation mode, `[B, C]` (class-masked)."""
  logits, _ = ts_lib.apply_model(train_state, params, x, t, train=False)
  return jax.nn.log_softmax(base.masked_logits(logits, train_state.class_mask))


def empirical_fisher_sample(params, train_state, sample: Batch):
  """`(d log p(y | x) / d theta)^2` for one sample (a batch of one)."""
  grads = jax.grad(lambda p: log_probs(p, train_state, sample.x, sample.t)[0, sample.y[0]])(params)
  return jax.tree.map(jnp.square, grads)


def true_fisher_sample(params, train_state, sample: Batch):
  """`sum_c p(c | x) (d log p(c | x) / d theta)^2` for one sample."""
  logp = log_probs(params, train_state, sample.x, sample.t)[0]
  jac = jax.jacrev(lambda p: log_probs(p, train_state, sample.x, sample.t)[0])(params)
  probs = jax.lax.stop_gradient(jnp.exp(logp))
  return jax.tree.map(lambda j: jnp.tensordot(probs, jnp.square(j), axes=1), jac)


def fisher_objective(train_state: ts_lib.TrainState, kind: str):
  """The Fisher as a `per_sample` objective: `log p(y_n | x_n)` (empirical),
  or `log p(c | x_n)` for every class c weighted by `p(c | x_n)` (true)."""

  def objective(logits, batch):
    logp = jax.nn.log_softmax(base.masked_logits(logits, train_state.class_mask))
    if kind == 'empirical':
      return jnp.take_along_axis(logp, batch.y[:, None], axis=1), jnp.ones_like(logp[:, :1])
    return logp, jnp.exp(logp)

  return objective


def fisher_diagonal(train_state: ts_lib.TrainState, data: Batch, kind: str = 'empirical'):
  """The diagonal Fisher over the real samples of `data` `[K, B, ...]`,
  without per-sample gradients (`jcl.algorithms.per_sample`; the same as
  `reference_fisher_diagonal` to float32 rounding)."""
  return per_sample.power_sums(train_state, data, fisher_objective(train_state, kind), p=2)


def reference_fisher_diagonal(train_state: ts_lib.TrainState, data: Batch, kind: str = 'empirical'):
  """The diagonal Fisher from per-sample gradients (vmapped over samples)."""
  sample_fn = {'empirical': empirical_fisher_sample, 'true': true_fisher_sample}[kind]
  return base.per_sample_mean(
    lambda params, sample: sample_fn(params, train_state, sample), train_state.params, data
  )


def make(spec: specs.EWCSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  del context  # nothing of the stream is needed
  spec = spec or specs.EWCSpec()
  mode = 'online' if spec.online else 'sum'

  def init(train_state, rng):
    del rng
    return reg.init_penalty(train_state.params)

  def penalty(params, state):
    return reg.quadratic_penalty(params, state, spec.ewc_lambda / 2)

  def end_task(train_state, state, task_data):
    fisher = fisher_diagonal(train_state, task_data, spec.fisher)
    return train_state, reg.consolidate(
      state, fisher, train_state.params, mode=mode, gamma=spec.gamma
    )

  return base.make(spec, base.sgd_step(penalty), init=init, end_task=end_task)
