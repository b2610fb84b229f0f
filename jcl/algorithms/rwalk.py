"""Riemannian Walk (Chaudhry et al. 2018, "Riemannian Walk for Incremental
Learning: Understanding Forgetting and Intransigence"), as Avalanche's
`RWalkPlugin`.

Every step, with `g` the gradient of the *unregularised* task loss on the
mini-batch at `theta_t`:

    F <- ewc_alpha * g^2 + (1 - ewc_alpha) * F        (eq. 6, EWC++; F = g^2 at step 0)
    l <- l - g * (theta_{t+1} - theta_t)               (first-order loss drop, eq. 7)

and every `delta_t` steps (global step count `n`, when `(n + 1) % delta_t == 0`),
with `theta_c` the parameters at the previous such checkpoint:

    s <- s + l / (1/2 F (theta_{t+1} - theta_c)^2 + eps),   l <- 0,   theta_c <- theta_{t+1}

(eq. 7; `eps` the float32 machine epsilon). At the end of task k the scores
are merged, `S = s` after the first task and `S <- (S + s) / 2` after later
ones, and the penalty is rebuilt (eq. 8, with Avalanche's normalisation of
both terms by their maximum over all parameters):

    P(theta) = ewc_lambda * sum (F / max F + relu(S) / max S) (theta - theta_k)^2.

At every task's start `l`, `s` and `theta_c` are reset; `F` runs on over
tasks. All of it lives in `algo_state` (the step counter too): no Python per step.

As in Avalanche and unlike the paper's class-incremental RWalk, there is no
score-based sampling of a memory (the paper's replay variant is not included).
Differences from Avalanche: `g` is the training step's own task gradient (in
training mode; Avalanche takes it in evaluation mode, the same without
BatchNorm or dropout), and a maximum of 0 gives a zero term where Avalanche
divides by zero. The authors' TensorFlow code (facebookresearch/agem,
`RWALK`) differs from Avalanche's, followed here: it moves the running Fisher
only every `delta_t` steps, towards the mean squared gradient of those
steps, and clips each score increment at 0.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jcl import specs
from jcl.algorithms import base
from jcl.algorithms import regularization as reg

PyTree = Any

EPS = float(jnp.finfo(jnp.float32).eps)


class RWalkState(NamedTuple):
  penalty: reg.QuadraticPenaltyState  # F / max F + relu(S) / max S, and theta at the last task end
  fisher: PyTree  # F, the running empirical Fisher (over all tasks)
  scores: PyTree  # S, the merged scores of the finished tasks
  checkpoint_scores: PyTree  # s, this task's scores so far
  checkpoint_loss: PyTree  # l, the loss drop since the last checkpoint
  checkpoint_params: PyTree  # theta_c
  steps: jax.Array  # int32, training steps so far (all tasks)
  tasks: jax.Array  # int32, tasks finished


def _copy(tree: PyTree) -> PyTree:
  return jax.tree.map(jnp.array, tree)


def _tree_max(tree: PyTree) -> jax.Array:
  return jnp.max(jnp.stack([jnp.max(leaf) for leaf in jax.tree.leaves(tree)]))


def _normalised(tree: PyTree, maximum: jax.Array) -> PyTree:
  """`tree / maximum`, or zeros when `maximum <= 0`."""
  positive = maximum > 0
  scale = jnp.where(positive, maximum, 1.0)
  return jax.tree.map(lambda x: jnp.where(positive, x / scale, 0.0), tree)


def penalty_importance(fisher: PyTree, scores: PyTree) -> PyTree:
  """`F / max F + relu(S) / max S`, the maxima over all parameters (eq. 8 as in Avalanche)."""
  fisher_part = _normalised(fisher, _tree_max(fisher))
  score_part = _normalised(jax.tree.map(jax.nn.relu, scores), _tree_max(scores))
  return jax.tree.map(jnp.add, fisher_part, score_part)


def make(
  spec: specs.RWalkSpec | None = None, context: base.Context | None = None
) -> base.Algorithm:
  del context  # nothing of the stream is needed
  spec = spec or specs.RWalkSpec()
  alpha = spec.ewc_alpha

  def init(train_state, rng):
    del rng
    params = train_state.params
    zeros = lambda: base.tree_zeros_like(params)  # distinct buffers
    return RWalkState(
      penalty=reg.init_penalty(params),
      fisher=zeros(),
      scores=zeros(),
      checkpoint_scores=zeros(),
      checkpoint_loss=zeros(),
      checkpoint_params=_copy(params),
      steps=jnp.zeros((), jnp.int32),
      tasks=jnp.zeros((), jnp.int32),
    )

  def penalty(params, state: RWalkState):
    return reg.quadratic_penalty(params, state.penalty, spec.ewc_lambda)

  def step(train_state, batch, state: RWalkState):
    task_grads, grads, aux, metrics = base.loss_and_grads(train_state, batch, state, penalty)
    first = state.steps == 0
    fisher = jax.tree.map(
      lambda f, g: jnp.where(first, jnp.square(g), alpha * jnp.square(g) + (1 - alpha) * f),
      state.fisher,
      task_grads,
    )
    new_train_state = base.apply_update(train_state, grads, aux.get('model_state'))
    new, old = new_train_state.params, train_state.params
    loss = jax.tree.map(
      lambda d, g, a, b: d - g * (a - b), state.checkpoint_loss, task_grads, new, old
    )
    checkpoint = (state.steps + 1) % spec.delta_t == 0
    scores = jax.tree.map(
      lambda s, d, f, a, c: jnp.where(checkpoint, s + d / (0.5 * f * jnp.square(a - c) + EPS), s),
      state.checkpoint_scores,
      loss,
      fisher,
      new,
      state.checkpoint_params,
    )
    state = state._replace(
      fisher=fisher,
      checkpoint_scores=scores,
      checkpoint_loss=jax.tree.map(lambda d: jnp.where(checkpoint, 0.0, d), loss),
      checkpoint_params=jax.tree.map(
        lambda a, c: jnp.where(checkpoint, a, c), new, state.checkpoint_params
      ),
      steps=state.steps + 1,
    )
    return new_train_state, state, metrics

  def begin_task(train_state, state: RWalkState, task_id):
    del task_id
    params = train_state.params
    return train_state, state._replace(
      checkpoint_scores=base.tree_zeros_like(params),
      checkpoint_loss=base.tree_zeros_like(params),
      checkpoint_params=_copy(params),
    )

  def end_task(train_state, state: RWalkState, task_data):
    del task_data
    params = train_state.params
    scores = jax.tree.map(
      lambda old, new: jnp.where(state.tasks == 0, new, 0.5 * (old + new)),
      state.scores,
      state.checkpoint_scores,
    )
    return train_state, state._replace(
      penalty=reg.QuadraticPenaltyState(penalty_importance(state.fisher, scores), _copy(params)),
      scores=scores,
      checkpoint_scores=base.tree_zeros_like(params),
      tasks=state.tasks + 1,
    )

  return base.make(spec, step, init=init, begin_task=begin_task, end_task=end_task)
