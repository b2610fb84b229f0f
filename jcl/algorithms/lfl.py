"""Less-Forgetful Learning (Jung, Ju, Jung & Kim, "Less-forgetful learning for
domain expansion in deep neural networks", AAAI 2018, arXiv:1711.05959; first
as arXiv:1607.00122).

The method keeps two properties while a new task is learnt without its data:

1. *The decision boundaries do not change*: the last layer (the softmax
   classifier, the model's `head`) is frozen after the first task (the
   paper's Algorithm 1; Avalanche's `LFLPlugin.after_training_exp`): from
   the second task on its parameters stay bit for bit as they were. The paper
   expands a domain (the first task has every class); in a class- or
   task-incremental stream the output units of later tasks' classes keep
   their initial weights, and the features learn to use them.
2. *The features of the new inputs stay where the old network put them*:

     L_t = L_c(x; theta_n) + lfl_lambda * L_e(x; theta_o, theta_n)
     L_e = 1/2 ||f_{L-1}(x; theta_o) - f_{L-1}(x; theta_n)||_2^2

   (the paper's total loss with lambda_c = 1 and lambda_e = `lfl_lambda`; L_e
   is summed over the F feature dimensions and averaged over the mini-batch;
   Avalanche's `mse_loss` also averages over F, so its lambda_e is
   `lfl_lambda * F / 2`), `f_{L-1}` the penultimate activations and
   `theta_o` the model at the previous `end_task`. Both features are taken
   in evaluation mode (no dropout, BatchNorm on its running statistics), so
   the penalty is 0 while the network computes the old features; the
   cross-entropy is the training-mode forward pass. No penalty during the
   first task.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jcl import specs
from jcl import train_state as ts_lib
from jcl.algorithms import base

PyTree = Any

# The model's last layer (frozen after the first task): `params[HEAD]`.
HEAD = 'head'


class LFLState(NamedTuple):
  old_params: PyTree
  old_model_state: PyTree
  active: jax.Array  # float32 scalar: 0 during the first task, then 1 (penalty on, head frozen).


def feature_distance(features, old_features, mask) -> jax.Array:
  """The paper's Euclidean loss: masked mean over the batch of `1/2 ||h - h_old||_2^2`."""
  per_sample = 0.5 * jnp.sum(jnp.square(features - old_features), axis=-1)
  return jnp.sum(per_sample * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def eval_features(train_state: ts_lib.TrainState, params, model_state, batch) -> jax.Array:
  """Features `[B, F]` of the model at `params` in evaluation mode."""
  (_, features), _ = ts_lib.apply_model(
    train_state.replace(model_state=model_state),
    params,
    batch.x,
    batch.t,
    train=False,
    return_features=True,
  )
  return features


def old_features(train_state: ts_lib.TrainState, state: LFLState, batch) -> jax.Array:
  """Features `[B, F]` of the frozen previous-task model (evaluation mode, no gradient)."""
  return jax.lax.stop_gradient(
    eval_features(train_state, state.old_params, state.old_model_state, batch)
  )


def check_head(params) -> None:
  """Raises unless the model's last layer is `params['head']`, the layer LFL freezes."""
  if HEAD not in params:
    raise ValueError(
      f"lfl freezes the model's last layer after the first task and needs it as "
      f"params['{HEAD}'] (as jcl's models name it); this model's parameters are "
      f'{sorted(params)}'
    )


def keep_head(params, kept, frozen) -> PyTree:
  """`params` with the head's leaves taken from `kept` where `frozen` (a 0/1 scalar)."""

  def leaf(path, value, old):
    if getattr(path[0], 'key', None) != HEAD:
      return value
    return jnp.where(frozen > 0, old, value)

  return jax.tree_util.tree_map_with_path(leaf, params, kept)


def make(spec: specs.LFLSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  del context  # nothing of the stream is needed
  spec = spec or specs.LFLSpec()

  def init(train_state, rng):
    del rng
    check_head(train_state.params)
    return LFLState(
      jax.tree.map(jnp.array, train_state.params),
      jax.tree.map(jnp.array, train_state.model_state),
      jnp.zeros((), jnp.float32),
    )

  def loss_fn(params, train_state, batch, state, rng):
    loss, aux = base.task_loss(params, train_state, batch, rng)
    features = eval_features(train_state, params, train_state.model_state, batch)
    distance = feature_distance(features, old_features(train_state, state, batch), batch.mask)
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
    # A frozen head gets no gradient (nor a share of a clipped norm) and keeps
    # its values through weight decay and momentum.
    grads = keep_head(grads, jax.tree.map(jnp.zeros_like, grads), state.active)
    new_state = base.apply_update(train_state, grads, aux['model_state'])
    new_state = new_state.replace(
      params=keep_head(new_state.params, train_state.params, state.active)
    )
    return new_state, state, metrics

  def end_task(train_state, state, task_data):
    del state, task_data
    return train_state, LFLState(
      jax.tree.map(jnp.array, train_state.params),
      jax.tree.map(jnp.array, train_state.model_state),
      jnp.ones((), jnp.float32),
    )

  return base.make(spec, step, init=init, end_task=end_task)
