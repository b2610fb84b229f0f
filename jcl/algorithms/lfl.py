"""Less-Forgetting Learning (Jung et al. 2016).

Keeps the features of the current inputs close to those the model computed
at the end of the previous task:

    loss = CE + lfl_lambda * 1/B sum_b ||h(x_b; theta) - h(x_b; theta_old)||_2^2

with `h` the penultimate activations and `theta_old` frozen at the last
`end_task` (no penalty during the first task).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jcl import specs
from jcl import train_state as ts_lib
from jcl.algorithms import base

PyTree = Any


class LFLState(NamedTuple):
  old_params: PyTree
  old_model_state: PyTree
  active: jax.Array  # float32 scalar: 0 during the first task, then 1.


def feature_distance(features, old_features, mask) -> jax.Array:
  """Masked mean over the batch of `||h - h_old||_2^2`."""
  per_sample = jnp.sum(jnp.square(features - old_features), axis=-1)
  return jnp.sum(per_sample * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def old_features(train_state: ts_lib.TrainState, state: LFLState, batch) -> jax.Array:
  """Features `[B, F]` of the frozen previous-task model (evaluation mode, no gradient)."""
  (_, features), _ = ts_lib.apply_model(
    train_state.replace(model_state=state.old_model_state),
    state.old_params,
    batch.x,
    batch.t,
    train=False,
    return_features=True,
  )
  return jax.lax.stop_gradient(features)


def make(spec: specs.LFLSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  del context  # nothing of the stream is needed
  spec = spec or specs.LFLSpec()

  def init(train_state, rng):
    del rng
    return LFLState(
      jax.tree.map(jnp.array, train_state.params),
      jax.tree.map(jnp.array, train_state.model_state),
      jnp.zeros((), jnp.float32),
    )

  def loss_fn(params, train_state, batch, state, rng):
    loss, aux = base.task_loss(params, train_state, batch, rng, return_features=True)
    distance = feature_distance(
      aux['features'], old_features(train_state, state, batch), batch.mask
    )
    penalty = spec.lfl_lambda * state.active * distance
    return loss + penalty, dict(aux, task_loss=loss, penalty=penalty)

  def step(train_state, batch, state: LFLState):
    (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      train_state.params, train_state, batch, state, train_state.step_rng()
    )
    metrics = {
      'loss': aux['task_loss'],
      'penalty': aux['penalty'],
      'accuracy': base.accuracy(aux['logits'], batch.y, batch.mask),
    }
    return base.apply_update(train_state, grads, aux['model_state']), state, metrics

  def end_task(train_state, state, task_data):
    del task_data
    return train_state, LFLState(
      jax.tree.map(jnp.array, train_state.params),
      jax.tree.map(jnp.array, train_state.model_state),
      jnp.ones((), jnp.float32),
    )

  return base.make(spec, step, init=init, end_task=end_task)
