"""Dark Experience Replay and DER++ (Buzzega et al. 2020), as `jcl.algorithms.der`.

A reservoir buffer stores each sample with the raw logits `z` of the
training forward pass that saw it. DER (eq. 4):

    loss = CE(x, y) + alpha * ||f(x') - z'||^2

and DER++ (eq. 6) adds `beta * CE(f(x''), y'')` on a second replayed batch;
the squared error is averaged over output units and real samples, and the
three batches go through the model in one forward pass.
"""

from __future__ import annotations

import torch

from jcl import specs
from jcl.torch.algorithms import base
from jcl.torch.algorithms import buffer as buffer_lib
from jcl.torch.algorithms.er import INSERT_SALT, ReplayState, init_buffer, require_context

DISTILL_SALT, LABEL_SALT = 3, 4


def logit_distance(logits, stored, mask) -> torch.Tensor:
  """Masked mean over samples of the mean squared error over output units."""
  return base.masked_mean(torch.mean(torch.square(logits - stored), -1), mask)


def make_der(spec: specs.DERSpec | specs.DERPPSpec, context: base.Context | None) -> base.Algorithm:
  context = require_context(context, spec.name)
  beta = spec.beta if isinstance(spec, specs.DERPPSpec) else 0.0
  size = spec.replay_batch_size

  def init(train_state, rng=None):
    del rng
    return ReplayState(init_buffer(spec, context, train_state, logits_dim=context.num_classes))

  def step(train_state, batch, state: ReplayState):
    source = train_state.rng
    distill, distill_logits = buffer_lib.sample(
      state.buffer, source, train_state.step_key(DISTILL_SALT), size
    )
    parts = [batch, distill]
    if beta:
      parts.append(
        buffer_lib.sample(state.buffer, source, train_state.step_key(LABEL_SALT), size)[0]
      )
    joint = base.concat_batches(*parts)
    insert_key = train_state.step_key(INSERT_SALT)
    aux = base.forward(train_state, joint)
    n = batch.mask.shape[0]
    cur = slice(0, n)
    ce = base.cross_entropy(aux['logits'][cur], joint.y[cur], joint.mask[cur])
    distill_loss = logit_distance(
      aux['raw_logits'][n : n + size], distill_logits, joint.mask[n : n + size]
    )
    loss = ce + spec.alpha * distill_loss
    metrics = {'loss': ce.detach(), 'distill': distill_loss.detach()}
    if beta:
      replay_ce = base.cross_entropy(
        aux['logits'][n + size :], joint.y[n + size :], joint.mask[n + size :]
      )
      loss = loss + beta * replay_ce
      metrics['replay_loss'] = replay_ce.detach()
    grads = base.grad(loss, train_state)
    metrics['accuracy'] = base.accuracy(aux['logits'][:n].detach(), batch.y, batch.mask)
    base.apply_update(train_state, grads, aux['model_state'])
    buffer = buffer_lib.add(
      state.buffer,
      batch,
      source,
      insert_key,
      policy='reservoir',
      logits=aux['raw_logits'][:n].detach(),
    )
    metrics['buffer_size'] = buffer_lib.size(buffer)
    return train_state, ReplayState(buffer), metrics

  return base.make(spec, step, init=init)


def make(spec: specs.DERSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  return make_der(spec or specs.DERSpec(), context)
