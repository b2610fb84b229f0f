"""The algorithm protocol and the pieces every algorithm shares.

An `Algorithm` is a NamedTuple of pure functions, in the spirit of optax's
`GradientTransformation`:

  init(train_state, rng)                   -> algo_state
  begin_task(train_state, algo_state, k)   -> (train_state, algo_state)
  step(train_state, batch, algo_state)     -> (train_state, algo_state, metrics)
  end_task(train_state, algo_state, data)  -> (train_state, algo_state)

`algo_state` is a pytree of fixed-shape arrays, so `step` jit-compiles, runs
under `lax.scan` and vmaps over a leading seed axis. `batch` is a
`jcl.types.Batch` `(x [B, ...], y [B], t [B], mask [B])`; `data` in
`end_task` is the finished task's training set as a chunk `[K, B, ...]`, or
None for a method whose spec has `uses_task_data = False` (the loop then
builds no copy of the task's data).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jcl import train_state as ts_lib
from jcl.models import heads
from jcl.train_state import TrainState
from jcl.types import Batch
from jcl.types import Context  # noqa: F401  (re-exported: one Context for both backends)

PyTree = Any
Metrics = dict[str, jax.Array]

# A large negative logit for masked output units: finite, so softmax and
# cross-entropy stay NaN-free.
MASKED_LOGIT = heads.MASK_VALUE


class Algorithm(NamedTuple):
  """A continual-learning algorithm as pure functions (see module docstring)."""

  init: Callable[[TrainState, jax.Array], PyTree]
  step: Callable[[TrainState, Batch, PyTree], tuple[TrainState, PyTree, Metrics]]
  begin_task: Callable[[TrainState, PyTree, Any], tuple[TrainState, PyTree]]
  end_task: Callable[[TrainState, PyTree, Batch], tuple[TrainState, PyTree]]
  spec: Any = None


class EmptyState(NamedTuple):
  """The `algo_state` of an algorithm that keeps none."""


# The logits of units outside `class_mask` (`[C]` or `[B, C]`) set to
# `MASKED_LOGIT`: the models' own masking (`jcl.models.heads.mask_logits`).
masked_logits = heads.mask_logits


def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy over the real samples of a padded batch.

  Args:
    logits: `[B, C]`.
    labels: `[B]` int.
    mask: `[B]` float, 0 for padding.
  Returns:
    scalar, `sum(mask * ce) / max(sum(mask), 1)`.
  """
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def accuracy(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """Fraction of correct argmax predictions among the real samples."""
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  return jnp.sum(correct * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def forward(
  params: PyTree, state: TrainState, batch: Batch, rng: jax.Array, *, return_features: bool = False
) -> dict:
  """The model on `batch` in training mode.

  Returns:
    a dict of `logits [B, C]` (masked by the state's `class_mask`),
    `raw_logits` (unmasked), `model_state` (updated BatchNorm statistics)
    and, with `return_features`, `features [B, F]`.
  """
  outputs, model_state = ts_lib.apply_model(
    state, params, batch.x, batch.t, train=True, rng=rng, return_features=return_features
  )
  logits, features = outputs if return_features else (outputs, None)
  aux = {
    'logits': masked_logits(logits, state.class_mask),
    'raw_logits': logits,
    'model_state': model_state,
  }
  if return_features:
    aux['features'] = features
  return aux


def task_loss(
  params: PyTree, state: TrainState, batch: Batch, rng: jax.Array, *, return_features: bool = False
):
  """Cross-entropy of the model on `batch`, in training mode: `(loss, aux)`
  with aux the outputs of `forward`."""
  aux = forward(params, state, batch, rng, return_features=return_features)
  return cross_entropy(aux['logits'], batch.y, batch.mask), aux


# `(params, train_state, batch, rng) -> (loss, aux)`; aux may hold `logits`,
# `model_state` (new BatchNorm statistics) and `features`.
LossFn = Callable[[PyTree, TrainState, Batch, jax.Array], tuple[jax.Array, dict]]


def apply_update(state: TrainState, grads: PyTree, model_state: PyTree) -> TrainState:
  """One optimizer step with `grads`, keeping the new model state."""
  return state.apply_gradients(grads, model_state=model_state)


def concat_batches(*batches: Batch) -> Batch:
  """Concatenates batches along the sample axis."""
  return Batch(*[jnp.concatenate(parts, axis=0) for parts in zip(*batches)])


def tree_dot(a: PyTree, b: PyTree) -> jax.Array:
  """`sum_i a_i * b_i` over all leaves."""
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def tree_zeros_like(tree: PyTree) -> PyTree:
  return jax.tree.map(jnp.zeros_like, tree)


def default_begin_task(train_state: TrainState, algo_state: PyTree, task_id):
  """The regime every algorithm gets: per-task learning-rate decay,
  optional optimizer re-initialisation, and the current task id."""
  return ts_lib.begin_task(train_state, task_id), algo_state


def no_end_task(train_state: TrainState, algo_state: PyTree, task_data: Batch | None):
  del task_data  # None too: such a method's spec has `uses_task_data = False`
  return train_state, algo_state


def gradient(train_state: TrainState, batch: Batch) -> PyTree:
  """Gradient of the task loss on `batch` at the current parameters (e.g. on
  an episodic memory; the BatchNorm statistics it computes are discarded)."""
  return jax.grad(lambda p: task_loss(p, train_state, batch, train_state.step_rng())[0])(
    train_state.params
  )


def loss_and_grads(
  train_state: TrainState,
  batch: Batch,
  algo_state: PyTree,
  penalty_fn: Callable[[PyTree, PyTree], jax.Array] | None = None,
  loss_fn: LossFn = task_loss,
):
  """Gradients of `loss_fn` and of `penalty_fn(params, algo_state)`, taken separately.

  Returns:
    `(task_grads, total_grads, aux, metrics)`: the unregularised gradient (SI
    needs it), the sum with the penalty's gradient, the loss's aux and the
    step's metrics (`loss`, `penalty`, `accuracy` where logits exist).
  """
  (loss, aux), task_grads = jax.value_and_grad(loss_fn, has_aux=True)(
    train_state.params, train_state, batch, train_state.step_rng()
  )
  metrics = {'loss': loss}
  if 'logits' in aux:
    metrics['accuracy'] = accuracy(aux['logits'], batch.y, batch.mask)
  grads = task_grads
  if penalty_fn is not None:
    penalty, penalty_grads = jax.value_and_grad(penalty_fn)(train_state.params, algo_state)
    grads = jax.tree.map(jnp.add, task_grads, penalty_grads)
    metrics['penalty'] = penalty
  return task_grads, grads, aux, metrics


def sgd_step(
  penalty_fn: Callable[[PyTree, PyTree], jax.Array] | None = None, loss_fn: LossFn = task_loss
):
  """A step on `loss_fn + penalty_fn(params, algo_state)`; `algo_state` passes through."""

  def step(train_state: TrainState, batch: Batch, algo_state: PyTree):
    _, grads, aux, metrics = loss_and_grads(train_state, batch, algo_state, penalty_fn, loss_fn)
    return apply_update(train_state, grads, aux.get('model_state')), algo_state, metrics

  return step


def scan_batches(fn: Callable[[PyTree, Batch], PyTree], carry: PyTree, data: Batch) -> PyTree:
  """Folds `fn(carry, batch)` over the leading axis of a chunk `[K, B, ...]`."""

  def body(c, batch):
    return fn(c, batch), None

  return jax.lax.scan(body, carry, data)[0]


def per_sample_mean(fn: Callable[[PyTree, Batch], PyTree], params: PyTree, data: Batch) -> PyTree:
  """`1/N sum_n fn(params, sample_n)` over the real samples of `data` `[K, B, ...]`.

  `fn(params, batch_of_one)` returns a pytree shaped like `params` (e.g. a
  squared gradient); it is vmapped over each batch and summed with the mask.
  """

  def one(sample_x, sample_y, sample_t):
    return fn(
      params, Batch(sample_x[None], sample_y[None], sample_t[None], jnp.ones((1,), jnp.float32))
    )

  def add_batch(acc, batch):
    values = jax.vmap(one)(batch.x, batch.y, batch.t)
    summed = jax.tree.map(lambda v: jnp.tensordot(batch.mask, v, axes=1), values)
    return jax.tree.map(jnp.add, acc[0], summed), acc[1] + jnp.sum(batch.mask)

  total, count = scan_batches(add_batch, (tree_zeros_like(params), jnp.zeros(())), data)
  return jax.tree.map(lambda v: v / jnp.maximum(count, 1.0), total)


def make(spec: Any, step, *, init=None, begin_task=None, end_task=None) -> Algorithm:
  """Assembles an `Algorithm`; the algorithm's own `begin_task` runs after the regime's."""
  init = init or (lambda train_state, rng: EmptyState())

  def begin(train_state, algo_state, task_id):
    train_state, algo_state = default_begin_task(train_state, algo_state, task_id)
    if begin_task is not None:
      train_state, algo_state = begin_task(train_state, algo_state, task_id)
    return train_state, algo_state

  return Algorithm(
    init=init, step=step, begin_task=begin, end_task=end_task or no_end_task, spec=spec
  )
