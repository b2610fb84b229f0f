"""Maximally Interfered Retrieval (Aljundi et al. 2019), ER-MIR, as `jcl.algorithms.mir`.

Each step draws `mir_candidates` memories from the reservoir buffer, takes a
virtual SGD step `theta_v = theta - lr * grad L(theta; x, y)` on the current
batch, scores each candidate by `l(theta_v) - l(theta)` (Sec. 3.1) and
replays the `replay_batch_size` of largest score (in draw order) with the
current batch, as ER: `loss = CE([x; x_mem], [y; y_mem])`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jcl import specs
from jcl.torch.algorithms import base
from jcl.torch.algorithms import buffer as buffer_lib
from jcl.torch.algorithms import er
from jcl.types import Batch

SAMPLE_SALT, INSERT_SALT = er.SAMPLE_SALT, er.INSERT_SALT


def per_sample_losses(train_state, batch: Batch, params=None) -> torch.Tensor:
  """`[B]` cross-entropies of the model (training mode, class-masked), at `params` if given."""
  logits = base.forward(train_state, batch, params=params)['logits']
  return F.cross_entropy(logits, batch.y.long(), reduction='none')


@torch.no_grad()
def interference(train_state, batch: Batch, candidates: Batch) -> torch.Tensor:
  """`[C]` loss increase of each candidate under a virtual SGD step on `batch`;
  `-inf` for rows with mask 0."""
  grads = base.gradient(train_state, batch)
  lr = train_state.learning_rate
  virtual = {k: p.detach() - lr * grads[k] for k, p in train_state.params.items()}
  before = per_sample_losses(train_state, candidates)
  after = per_sample_losses(train_state, candidates, params=virtual)
  return torch.where(candidates.mask > 0, after - before, -torch.inf)


def retrieve(scores: torch.Tensor, candidates: Batch, k: int) -> tuple[Batch, torch.Tensor]:
  """The `k` candidates of largest score (ties: the earlier), in draw order."""
  idx = torch.sort(scores, descending=True, stable=True)[1][:k]
  idx = torch.sort(idx)[0]
  return Batch(*[a[idx] for a in candidates]), scores[idx]


def make(spec: specs.MIRSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  spec = spec or specs.MIRSpec()
  context = er.require_context(context, 'mir')
  plain_step = base.sgd_step()

  def init(train_state, rng=None):
    del rng
    return er.ReplayState(er.init_buffer(spec, context, train_state))

  def step(train_state, batch, state: er.ReplayState):
    source = train_state.rng
    candidates, _ = buffer_lib.sample(
      state.buffer, source, train_state.step_key(SAMPLE_SALT), spec.mir_candidates
    )
    insert_key = train_state.step_key(INSERT_SALT)
    scores = interference(train_state, batch, candidates)
    memory, chosen = retrieve(scores, candidates, spec.replay_batch_size)
    train_state, state, metrics = plain_step(train_state, base.concat_batches(batch, memory), state)
    buffer = buffer_lib.add(state.buffer, batch, source, insert_key, policy='reservoir')
    real = memory.mask > 0
    metrics['interference'] = torch.sum(torch.where(real, chosen, 0.0)) / torch.clamp(
      torch.sum(real), min=1
    )
    metrics['buffer_size'] = buffer_lib.size(buffer)
    return train_state, er.ReplayState(buffer), metrics

  return base.make(spec, step, init=init)
