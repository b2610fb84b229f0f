"""Maximally Interfered Retrieval (Aljundi et al. 2019, "Online Continual
Learning with Maximally Interfered Retrieval"), ER-MIR.

A reservoir buffer as ER's. Each step draws `C = mir_candidates` memories
`(x_c, y_c)` uniformly, takes a virtual SGD step on the current batch with
the optimizer's learning rate `lr`,

    theta_v = theta - lr * grad L(theta; x, y),

scores each candidate by the increase of its loss under it (Sec. 3.1),

    s_c = l(theta_v; x_c, y_c) - l(theta; x_c, y_c),

and replays the `replay_batch_size` candidates of largest score
(`lax.top_k`, kept in draw order) with the current batch, as ER does:
`loss = CE([x; x_mem], [y; y_mem])`. The current batch is then offered to the
buffer. Rows with nothing behind them (a buffer not yet that full) score
`-inf` and keep mask 0. With `mir_candidates == replay_batch_size` every
candidate is replayed: ER with the same draws.

The authors' code and Avalanche's `MIRPlugin` add the two mean losses
(current and replayed) instead of taking the mean over both (a factor 2 in
the gradient with equal batch sizes), and draw the candidates from the
memories of earlier tasks (classes) only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jcl import specs
from jcl.algorithms import base
from jcl.algorithms import buffer as buffer_lib
from jcl.algorithms import er
from jcl.types import Batch

SAMPLE_SALT, INSERT_SALT = er.SAMPLE_SALT, er.INSERT_SALT


def per_sample_losses(params, train_state, batch: Batch, rng) -> jax.Array:
  """`[B]` cross-entropies of the model (training mode, class-masked) at `params`."""
  logits = base.forward(params, train_state, batch, rng)['logits']
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch.y)


def interference(train_state, batch: Batch, candidates: Batch) -> jax.Array:
  """`[C]` loss increase of each candidate under a virtual SGD step on `batch`;
  `-inf` for rows with mask 0."""
  rng = train_state.step_rng()
  grads = base.gradient(train_state, batch)
  virtual = jax.tree.map(lambda p, g: p - train_state.learning_rate * g, train_state.params, grads)
  before = per_sample_losses(train_state.params, train_state, candidates, rng)
  after = per_sample_losses(virtual, train_state, candidates, rng)
  return jnp.where(candidates.mask > 0, after - before, -jnp.inf)


def retrieve(scores: jax.Array, candidates: Batch, k: int) -> tuple[Batch, jax.Array]:
  """The `k` candidates of largest score, in draw order: `(batch [k], scores [k])`."""
  _, idx = jax.lax.top_k(scores, k)
  idx = jnp.sort(idx)
  return jax.tree.map(lambda a: a[idx], candidates), scores[idx]


def make(spec: specs.MIRSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  spec = spec or specs.MIRSpec()
  context = er.require_context(context, 'mir')

  def init(train_state, rng):
    del train_state, rng
    return er.ReplayState(er.init_buffer(spec, context))

  def step(train_state, batch, state: er.ReplayState):
    candidates, _ = buffer_lib.sample(
      state.buffer, train_state.step_rng(SAMPLE_SALT), spec.mir_candidates
    )
    scores = interference(train_state, batch, candidates)
    memory, chosen = retrieve(scores, candidates, spec.replay_batch_size)
    new_state, algo_state, metrics = base.sgd_step()(
      train_state, base.concat_batches(batch, memory), state
    )
    buffer = buffer_lib.add(
      state.buffer, batch, train_state.step_rng(INSERT_SALT), policy='reservoir'
    )
    real = memory.mask > 0
    metrics['interference'] = jnp.sum(jnp.where(real, chosen, 0.0)) / jnp.maximum(jnp.sum(real), 1)
    metrics['buffer_size'] = buffer_lib.size(buffer)
    return new_state, algo_state._replace(buffer=buffer), metrics

  return base.make(spec, step, init=init)
