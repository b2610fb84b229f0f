"""Dark Experience Replay and DER++ (Buzzega et al. 2020).

A reservoir buffer stores each sample with the logits `z` the model gave it
when it entered the buffer. DER (eq. 4) matches them on a replayed batch:

    loss = CE(x, y) + alpha * ||f(x') - z'||^2

and DER++ (eq. 6) adds the cross-entropy on the labels of a second replayed
batch: `+ beta * CE(f(x''), y'')`. The stored logits are the raw
(unmasked) outputs of the training forward pass, as in the authors' code;
the squared error is averaged over output units and real samples. All three
batches go through the model in one forward pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jcl import specs
from jcl.algorithms import base
from jcl.algorithms import buffer as buffer_lib
from jcl.algorithms.er import INSERT_SALT, ReplayState, init_buffer, require_context

DISTILL_SALT, LABEL_SALT = 3, 4


def logit_distance(logits, stored, mask) -> jax.Array:
  """Masked mean over samples of the mean squared error over output units."""
  per_sample = jnp.mean(jnp.square(logits - stored), axis=-1)
  return jnp.sum(per_sample * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def make_der(spec: specs.DERSpec | specs.DERPPSpec, context: base.Context | None) -> base.Algorithm:
  context = require_context(context, spec.name)
  beta = spec.beta if isinstance(spec, specs.DERPPSpec) else 0.0
  size = spec.replay_batch_size

  def init(train_state, rng):
    del train_state, rng
    return ReplayState(init_buffer(spec, context, logits_dim=context.num_classes))

  def loss_fn(params, train_state, batch, rng, distill_logits):
    aux = base.forward(params, train_state, batch, rng)
    n = batch.mask.shape[0] - (2 * size if beta else size)
    cur = slice(0, n)
    ce = base.cross_entropy(aux['logits'][cur], batch.y[cur], batch.mask[cur])
    distill = logit_distance(
      aux['raw_logits'][n : n + size], distill_logits, batch.mask[n : n + size]
    )
    loss = ce + spec.alpha * distill
    metrics = {'loss': ce, 'distill': distill}
    if beta:
      replay_ce = base.cross_entropy(
        aux['logits'][n + size :], batch.y[n + size :], batch.mask[n + size :]
      )
      loss = loss + beta * replay_ce
      metrics['replay_loss'] = replay_ce
    return loss, dict(aux, metrics=metrics)

  def step(train_state, batch, state: ReplayState):
    distill, distill_logits = buffer_lib.sample(
      state.buffer, train_state.step_rng(DISTILL_SALT), size
    )
    parts = [batch, distill]
    if beta:
      parts.append(buffer_lib.sample(state.buffer, train_state.step_rng(LABEL_SALT), size)[0])
    joint = base.concat_batches(*parts)
    (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      train_state.params, train_state, joint, train_state.step_rng(), distill_logits
    )
    n = batch.mask.shape[0]
    metrics = dict(aux['metrics'], accuracy=base.accuracy(aux['logits'][:n], batch.y, batch.mask))
    new_state = base.apply_update(train_state, grads, aux['model_state'])
    buffer = buffer_lib.add(
      state.buffer,
      batch,
      train_state.step_rng(INSERT_SALT),
      policy='reservoir',
      logits=jax.lax.stop_gradient(aux['raw_logits'][:n]),
    )
    metrics['buffer_size'] = buffer_lib.size(buffer)
    return new_state, ReplayState(buffer), metrics

  return base.make(spec, step, init=init)


def make(spec: specs.DERSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  return make_der(spec or specs.DERSpec(), context)
