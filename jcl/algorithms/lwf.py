"""Learning without Forgetting (Li & Hoiem, "Learning without Forgetting",
ECCV 2016 / TPAMI 2017, arXiv:1606.09282), as Avalanche's `LwF` plugin
(`avalanche/training/regularization.py`, `LearningWithoutForgetting`) and the
continual-learning-baselines' Split MNIST run use it.

At each `end_task` the model is kept as the previous model `theta_o` (its
parameters and BatchNorm statistics, fixed-shape in `algo_state`); every step
of task k adds a knowledge-distillation term on the current batch:

    loss = CE(z, y) + alpha_k * L_old
    L_old = 1/B sum_b sum_{c in U} q_bc (log q_bc - log p_bc)
    p_b = softmax(z_b[U] / T),  q_b = softmax(z^o_b[U] / T)

the paper's `L_old` (a cross-entropy between the softened outputs
`y'^(i) = y^(i)^(1/T) / sum_j y^(j)^(1/T)` of the old and the new model; here,
as Avalanche's `kl_div(log p, q, reduction='batchmean')`, a KL divergence,
which differs from it by a constant: the same gradient; no T^2 factor, as
Avalanche). `z [B, C]` are the model's logits (the training forward pass of
the cross-entropy); `z^o` those of the previous model, without gradient and,
as Avalanche's copy of its model in training, in training mode on the same
inputs with the same step key (the same augmentation and dropout masks;
BatchNorm on the batch's statistics, the old model's own left as they were);
`U` the output units of the classes of the tasks before k (Avalanche's
`prev_classes_by_task`, the previous model's active units); `T` the spec's
`temperature`; `alpha_k = alpha[min(k, len(alpha) - 1)]` (Avalanche indexes
its list by the number of finished experiences). The mean is over the real
samples of the padded batch. No penalty during the first task (`U` is
empty). A task's classes are the labels of its real samples, gathered by the
steps (Avalanche reads them from the experience's targets).

Single-head models only (`LwFSpec.scenarios`: class- and domain-incremental):
Avalanche's multi-head form distils every previous task's head, which jcl's
models do not expose.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jcl import specs
from jcl import train_state as ts_lib
from jcl.algorithms import base

PyTree = Any


class LwFState(NamedTuple):
  old_params: PyTree
  old_model_state: PyTree
  old_classes: jax.Array  # bool [C]: the classes of the finished tasks, the distilled units U.
  task_classes: jax.Array  # bool [C]: the classes of the current task seen so far.


def batch_classes(batch, num_classes: int) -> jax.Array:
  """bool `[C]`: the labels of the real samples of `batch`."""
  hits = (batch.y[:, None] == jnp.arange(num_classes)) & (batch.mask[:, None] > 0)
  return jnp.any(hits, axis=0)


def distillation(logits, old_logits, units, temperature: float, mask) -> jax.Array:
  """`1/B sum_b KL(softmax(old_b[U] / T) || softmax(logits_b[U] / T))`.

  Args:
    logits: `[B, C]` of the model being trained.
    old_logits: `[B, C]` of the previous model (constants).
    units: bool `[C]`, the units `U` the softmaxes run over (none: 0).
    temperature: T.
    mask: `[B]` float, 0 for padding.
  Returns:
    scalar, the mean over the real samples.
  """
  log_p = jax.nn.log_softmax(jnp.where(units, logits / temperature, base.MASKED_LOGIT), -1)
  log_q = jax.nn.log_softmax(jnp.where(units, old_logits / temperature, base.MASKED_LOGIT), -1)
  kl = jnp.sum(jnp.where(units, jnp.exp(log_q) * (log_q - log_p), 0.0), -1)
  return jnp.sum(kl * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def alpha_for_task(spec: specs.LwFSpec, task_id) -> jax.Array:
  """`alpha[min(k, len(alpha) - 1)]` for a traced task id `k`."""
  alphas = jnp.asarray(spec.alpha, jnp.float32)
  return alphas[jnp.clip(task_id, 0, len(spec.alpha) - 1)]


def old_logits(train_state: ts_lib.TrainState, state: LwFState, batch, rng) -> jax.Array:
  """Logits `[B, C]` of the previous model, in training mode with the step's key
  `rng` (the current forward pass's inputs), without gradient."""
  logits, _ = ts_lib.apply_model(
    train_state.replace(model_state=state.old_model_state),
    state.old_params,
    batch.x,
    batch.t,
    train=True,
    rng=rng,
  )
  return jax.lax.stop_gradient(logits)


def make(spec: specs.LwFSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  del context  # nothing of the stream is needed
  spec = spec or specs.LwFSpec()

  def init(train_state, rng):
    del rng
    no_classes = jnp.zeros_like(train_state.class_mask, jnp.bool_)
    return LwFState(
      jax.tree.map(jnp.array, train_state.params),
      jax.tree.map(jnp.array, train_state.model_state),
      no_classes,
      no_classes,
    )

  def loss_fn(params, train_state, batch, state, rng):
    loss, aux = base.task_loss(params, train_state, batch, rng)
    kd = distillation(
      aux['raw_logits'],
      old_logits(train_state, state, batch, rng),
      state.old_classes,
      spec.temperature,
      batch.mask,
    )
    penalty = alpha_for_task(spec, train_state.task) * kd
    return loss + penalty, dict(aux, task_loss=loss, penalty=penalty)

  def step(train_state, batch, state: LwFState):
    (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      train_state.params, train_state, batch, state, train_state.step_rng()
    )
    metrics = {
      'loss': aux['task_loss'],
      'penalty': aux['penalty'],
      'accuracy': base.accuracy(aux['logits'], batch.y, batch.mask),
    }
    new_state = base.apply_update(train_state, grads, aux['model_state'])
    seen = state.task_classes | batch_classes(batch, state.task_classes.shape[-1])
    return new_state, state._replace(task_classes=seen), metrics

  def end_task(train_state, state: LwFState, task_data):
    del task_data
    return train_state, LwFState(
      jax.tree.map(jnp.array, train_state.params),
      jax.tree.map(jnp.array, train_state.model_state),
      state.old_classes | state.task_classes,
      jnp.zeros_like(state.task_classes),
    )

  return base.make(spec, step, init=init, end_task=end_task)
