"""Progressive Neural Networks (Rusu et al. 2016), eq. 1-2, as `jcl.algorithms.pnn`.

The model is a progressive network (`jcl.torch.progressive`): one column per
task, column k reading the hidden layers of columns 0..k-1 through lateral
adapters. Training task k updates column k only (its layers, adapters and
head, the parameters named `column_k.*`); every other column is frozen, so
the outputs of earlier tasks never change.

The freeze is exact under any optimizer (momentum, Adam's moments and weight
decay move a parameter whose gradient is zero), so each step
  1. zeroes the gradient of every column but `train_state.task` (this also
     keeps frozen columns out of gradient clipping's global norm),
  2. takes the optimizer step,
  3. puts back the frozen columns' parameters and optimizer buffers as they
     were before the step, bit for bit (the JAX step's `jnp.where`).
"""

from __future__ import annotations

import re

import torch

from jcl import specs
from jcl.torch import progressive
from jcl.torch.algorithms import base
from jcl.torch.train_state import TrainState
from jcl.types import Batch

_COLUMN = re.compile(r'^column_(\d+)\.')
_OPTIMIZER_BUFFERS = ('trace', 'mu', 'nu')  # per-parameter state of `jcl.torch.optim.Optimizer`


def column_of(name: str) -> int | None:
  """The column `k` of a parameter named `column_k.*`, else None."""
  match = _COLUMN.match(name)
  return int(match.group(1)) if match else None


def num_columns(train_state: TrainState) -> int:
  """Columns of a progressive model's parameters.

  Raises:
    ValueError: a parameter outside any `column_k` (a plain model).
  """
  names = train_state.param_names
  outside = [name for name in names if column_of(name) is None]
  if outside or not names:
    raise ValueError(
      'pnn trains a progressive network (one column per task), but the parameters '
      f'{outside[:3]} belong to no column: build the model with '
      'jcl.torch.algorithms.adapt_model(spec, model, context) '
      '(or jcl.torch.algorithms.pnn.adapt_model)'
    )
  return 1 + max(column_of(name) for name in names)


def frozen_indices(train_state: TrainState, task: int) -> list[int]:
  """Positions in `train_state.param_list` of the parameters outside column `task`."""
  return [i for i, name in enumerate(train_state.param_names) if column_of(name) != task]


def active_only(grads: base.Tensors, task: int) -> base.Tensors:
  """`grads` with every entry outside column `task` set to zero."""
  return {name: g if column_of(name) == task else torch.zeros_like(g) for name, g in grads.items()}


def adapt_model(
  spec: specs.PNNSpec, model: torch.nn.Module, context: base.Context
) -> progressive.ProgressiveMLP | progressive.ProgressiveCNN:
  """The progressive version of `model` (an MLP or a CNN) with one column per
  task of the stream, with `spec.adapter` lateral connections; initialized
  from a generator seeded by `model`'s weights (so by the run's seed)."""
  device = next(model.parameters()).device
  return progressive.progressive_version(
    model,
    tuple(context.input_shape),
    context.num_tasks,
    spec.adapter,
    generator=progressive.generator_from_weights(model),
  ).to(device)


def make(spec: specs.PNNSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  """PNN: trains column `train_state.task` of a progressive model, the rest frozen."""
  spec = spec or specs.PNNSpec()
  del context  # the columns are sized by `adapt_model`

  def init(train_state: TrainState, rng=None):
    del rng
    num_columns(train_state)  # refuses a plain model early
    return base.EmptyState()

  def begin_task(train_state: TrainState, algo_state, task_id):
    columns = num_columns(train_state)
    if not 0 <= int(task_id) < columns:
      raise ValueError(
        f'pnn: task {int(task_id)} has no column (the model has {columns}; '
        'adapt_model sizes it by context.num_tasks)'
      )
    return train_state, algo_state

  def step(train_state: TrainState, batch: Batch, algo_state):
    num_columns(train_state)
    task = train_state.task
    grads, _, aux, metrics = base.loss_and_grads(train_state, batch, algo_state)
    frozen = frozen_indices(train_state, task)
    optimizer = train_state.optimizer
    params = [train_state.param_list[i].detach().clone() for i in frozen]
    buffers = {
      field: [getattr(optimizer, field)[i].clone() for i in frozen]
      for field in _OPTIMIZER_BUFFERS
      if getattr(optimizer, field) is not None
    }
    train_state = base.apply_update(train_state, active_only(grads, task), aux.get('model_state'))
    with torch.no_grad():
      for i, value in zip(frozen, params):
        train_state.param_list[i].copy_(value)
    for field, values in buffers.items():
      for i, value in zip(frozen, values):
        getattr(optimizer, field)[i] = value
    return train_state, algo_state, metrics

  return base.make(spec, step, init=init, begin_task=begin_task)
