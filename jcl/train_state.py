"""The training state every algorithm updates, and the per-task regime.

`TrainState` is a pytree: model parameters, model state (BatchNorm
statistics), optimizer state, step counter, a base RNG key, the current task
and the mask of output units the loss may use. The model's `apply` and the
optimizer are static fields, so the state jit-compiles, scans and vmaps.

The learning rate lives in the optimizer state (`optax.inject_hyperparams`),
so the per-task decay of `OptimizerSpec` changes it without recompiling.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jcl import augment as augment_lib
from jcl.specs import OptimizerSpec

PyTree = Any


@functools.lru_cache(maxsize=None)
def make_optimizer(spec: OptimizerSpec) -> optax.GradientTransformation:
  """The optax optimizer of `spec`, with its learning rate injected into the state.

  Cached: equal specs give the same object, so train states built separately
  (one per seed, say) have equal static fields and stack into one pytree.
  """

  def factory(learning_rate):
    parts = []
    if spec.grad_clip_norm is not None:
      parts.append(optax.clip_by_global_norm(spec.grad_clip_norm))
    if spec.weight_decay > 0:
      parts.append(optax.add_decayed_weights(spec.weight_decay))
    if spec.name == 'sgd':
      parts.append(optax.sgd(learning_rate, momentum=spec.momentum or None))
    else:
      parts.append(optax.adam(learning_rate))
    return optax.chain(*parts)

  return optax.inject_hyperparams(factory)(learning_rate=spec.learning_rate)


class TrainState(struct.PyTreeNode):
  """Everything the optimizer and the model need, as one pytree.

  Attributes:
    step: int32 scalar, optimizer steps taken (padding steps excluded).
    params: the model's trainable parameters.
    model_state: the model's other collections (`{'batch_stats': ...}` or `{}`).
    opt_state: the optimizer state; its learning rate is
      `opt_state.hyperparams['learning_rate']`.
    rng: base PRNG key; step `s` uses `fold_in(rng, s)`, so a resumed run
      draws the same numbers.
    task: int32 scalar, the task being trained.
    class_mask: bool `[C]`, output units the training loss and class-IL
      prediction may use (class-incremental learning masks unseen classes).
    apply_fn: the flax module's `apply` (static).
    tx: the optimizer (static).
    regime: the `OptimizerSpec` (static) that `begin_task` applies.
    augment: the `jcl.data.augment.Augmentation` (static) every training
      forward pass applies to its inputs (`apply_model`), or None.
  """

  step: jax.Array
  params: PyTree
  model_state: PyTree
  opt_state: PyTree
  rng: jax.Array
  task: jax.Array
  class_mask: jax.Array
  apply_fn: Callable = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)
  regime: OptimizerSpec = struct.field(pytree_node=False)
  augment: augment_lib.Augmentation | None = struct.field(pytree_node=False, default=None)

  @property
  def learning_rate(self) -> jax.Array:
    return self.opt_state.hyperparams['learning_rate']

  def step_rng(self, salt: int = 0) -> jax.Array:
    """A key for this step, unique per (step, salt)."""
    return jax.random.fold_in(jax.random.fold_in(self.rng, self.step), salt)

  def apply_gradients(self, grads: PyTree, model_state: PyTree | None = None) -> 'TrainState':
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(
      step=self.step + 1,
      params=optax.apply_updates(self.params, updates),
      opt_state=opt_state,
      model_state=self.model_state if model_state is None else model_state,
    )


def create_train_state(
  model: nn.Module,
  optimizer: OptimizerSpec,
  rng: jax.Array,
  input_shape: tuple[int, ...],
  num_classes: int,
  *,
  augment: augment_lib.Augmentation | None = None,
) -> TrainState:
  """Initialises `model` on a dummy batch of `input_shape` and its optimizer.

  Args:
    model: a jcl model, called as `model.apply(variables, x, t, train=...)`.
    optimizer: the training regime.
    rng: PRNG key; split into the init key and the state's base key.
    input_shape: one example's shape, e.g. `(28, 28, 1)`.
    num_classes: width of the model output (the length of `class_mask`).
    augment: training-time augmentation of the inputs (`jcl.data.augment.make`),
      or None.
  """
  tx = make_optimizer(optimizer)

  def init_arrays(rng):
    init_rng, state_rng = jax.random.split(rng)
    variables = model.init(
      {'params': init_rng, 'dropout': init_rng},
      jnp.zeros((1, *input_shape), jnp.float32),
      jnp.zeros((1,), jnp.int32),
    )
    variables = dict(variables)
    params = variables.pop('params')
    return params, variables, tx.init(params), state_rng

  # One compiled program instead of dozens of eagerly dispatched (and
  # compiled) operations: the first initialisation of a process is 2x faster,
  # with the same numbers.
  params, variables, opt_state, state_rng = jax.jit(init_arrays)(rng)
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    model_state=variables,
    opt_state=opt_state,
    rng=state_rng,
    task=jnp.zeros((), jnp.int32),
    class_mask=jnp.ones((num_classes,), bool),
    apply_fn=model.apply,
    tx=tx,
    regime=optimizer,
    augment=augment,
  )


def apply_model(
  state: TrainState,
  params: PyTree,
  x: jax.Array,
  t: jax.Array,
  *,
  train: bool,
  rng: jax.Array | None = None,
  return_features: bool = False,
):
  """Runs the model; returns `(outputs, new_model_state)`.

  `outputs` is the logits `[B, C]`, or `(logits, features)` with
  `return_features`. In training mode the BatchNorm statistics are updated
  (returned as the new model state) and dropout draws from `rng`; with the
  state's `augment`, the inputs are augmented first, from `fold_in(rng,
  jcl.augment.AUGMENT_SALT)` (`jcl.augment.training_inputs`). The training
  forward passes of the algorithms go through here (`base.forward`; KCL,
  which calls its model's `fit_terms`, uses `training_inputs` itself), so
  every algorithm augments without code of its own; evaluation and the
  importance passes of `end_task` (`train=False`) never do.
  """
  if train and state.augment is not None:
    x = augment_lib.training_inputs(state.augment, x, rng)
  variables = {'params': params, **state.model_state}
  rngs = {'dropout': rng} if (train and rng is not None) else {}
  if train and state.model_state:
    outputs, new_model_state = state.apply_fn(
      variables,
      x,
      t,
      train=True,
      return_features=return_features,
      rngs=rngs,
      mutable=list(state.model_state),
    )
    return outputs, dict(new_model_state)
  outputs = state.apply_fn(variables, x, t, train=train, return_features=return_features, rngs=rngs)
  return outputs, state.model_state


def learning_rate_for_task(regime: OptimizerSpec, task_id, learning_rate=None) -> jax.Array:
  """`max(lr * lr_decay**task, min_lr)` as a float32 array (`lr`: `learning_rate`,
  e.g. a gridded traced value, else the regime's); the power is computed on
  the host for a Python task id (`OptimizerSpec.decay_power`)."""
  lr = regime.learning_rate if learning_rate is None else learning_rate
  if isinstance(task_id, (int, np.integer)):
    power = regime.decay_power(task_id)
  else:
    power = jnp.power(jnp.float32(regime.lr_decay), task_id)
  return jnp.maximum(lr * power, regime.min_lr).astype(jnp.float32)


def begin_task(state: TrainState, task_id) -> TrainState:
  """Applies the regime at a task's start: learning-rate decay, optional
  optimizer re-initialisation, and the current task id."""
  opt_state = state.tx.init(state.params) if state.regime.reinit_per_task else state.opt_state
  hyperparams = dict(opt_state.hyperparams)
  hyperparams['learning_rate'] = learning_rate_for_task(state.regime, task_id)
  opt_state = opt_state._replace(hyperparams=hyperparams)
  return state.replace(opt_state=opt_state, task=jnp.asarray(task_id, jnp.int32))
