"""Progressive Neural Networks (Rusu et al. 2016), eq. 1-2.

The model is a progressive network (`jcl.models.progressive`): one column per
task, column k reading the hidden layers of columns 0..k-1 through lateral
adapters. Training task k updates column k only (its layers, adapters and
head, all under `params['column_k']`); every other column is frozen, so the
outputs of earlier tasks never change: zero forgetting by construction.

The freeze is exact under any optimizer. A zero gradient is not enough
(momentum, Adam's moments and weight decay still move a parameter), so each
step
  1. zeroes the gradient of every column but `train_state.task` (this also
     keeps frozen columns out of gradient clipping's global norm),
  2. takes the optimizer step,
  3. puts back the old values of the frozen columns' parameters and of their
     optimizer state (`jnp.where`, bit for bit).
Which column a leaf belongs to is read from its path (`column_k`) in the
parameter tree and in the optimizer state, at trace time.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp

from jcl import specs
from jcl.algorithms import base
from jcl.models import progressive
from jcl.train_state import TrainState
from jcl.types import Batch

PyTree = Any
_COLUMN_KEY = re.compile(r'column_(\d+)$')


def column_of(path) -> int | None:
  """The column index `k` of a leaf whose tree path passes a `column_k` key, else None."""
  for key in path:
    name = getattr(key, 'key', None)
    if isinstance(name, str):
      match = _COLUMN_KEY.match(name)
      if match:
        return int(match.group(1))
  return None


def num_columns(params: PyTree) -> int:
  """Columns of a progressive model's parameters.

  Raises:
    ValueError: a parameter outside any `column_k` (a plain model).
  """
  paths = jax.tree_util.tree_flatten_with_path(params)[0]
  outside = [jax.tree_util.keystr(path) for path, _ in paths if column_of(path) is None]
  if outside or not paths:
    raise ValueError(
      'pnn trains a progressive network (one column per task), but the parameters '
      f'{outside[:3]} belong to no column: build the model with '
      'jcl.algorithms.adapt_model(spec, model, context) (or jcl.algorithms.pnn.adapt_model)'
    )
  return 1 + max(column_of(path) for path, _ in paths)


def keep_frozen(new: PyTree, old: PyTree, task: jax.Array) -> PyTree:
  """`new` on the leaves of column `task` and outside any column, `old` on
  the other columns' leaves (`new` and `old` share their structure)."""

  def pick(path, new_leaf, old_leaf):
    k = column_of(path)
    return new_leaf if k is None else jnp.where(task == k, new_leaf, old_leaf)

  return jax.tree_util.tree_map_with_path(pick, new, old)


def active_only(grads: PyTree, task: jax.Array) -> PyTree:
  """`grads` with every leaf outside column `task` set to zero."""
  return keep_frozen(grads, jax.tree.map(jnp.zeros_like, grads), task)


def adapt_model(spec: specs.PNNSpec, model, context: base.Context):
  """The progressive version of `model` (an MLP or a CNN) with one column per
  task of the stream, with `spec.adapter` lateral connections."""
  return progressive.progressive_version(model, context.num_tasks, spec.adapter)


def make(spec: specs.PNNSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  """PNN: trains column `train_state.task` of a progressive model, the rest frozen."""
  spec = spec or specs.PNNSpec()
  del context  # the columns are sized by `adapt_model`

  def init(train_state: TrainState, rng):
    del rng
    num_columns(train_state.params)  # refuses a plain model early
    return base.EmptyState()

  def begin_task(train_state: TrainState, algo_state, task_id):
    columns = num_columns(train_state.params)
    try:
      task = int(task_id)
    except jax.errors.ConcretizationTypeError:  # a traced task id cannot be checked here
      return train_state, algo_state
    if not 0 <= task < columns:
      raise ValueError(
        f'pnn: task {task} has no column (the model has {columns}; '
        'adapt_model sizes it by context.num_tasks)'
      )
    return train_state, algo_state

  def step(train_state: TrainState, batch: Batch, algo_state):
    num_columns(train_state.params)
    task = train_state.task
    grads, _, aux, metrics = base.loss_and_grads(train_state, batch, algo_state)
    updated = base.apply_update(train_state, active_only(grads, task), aux.get('model_state'))
    updated = updated.replace(
      params=keep_frozen(updated.params, train_state.params, task),
      opt_state=keep_frozen(updated.opt_state, train_state.opt_state, task),
    )
    return updated, algo_state, metrics

  return base.make(spec, step, init=init, begin_task=begin_task)
