"""The algorithm protocol of the PyTorch backend and the pieces every algorithm shares.

The same four functions as `jcl.algorithms.base.Algorithm`, with the same
signatures:

  init(train_state, rng=None)              -> algo_state
  begin_task(train_state, algo_state, k)   -> (train_state, algo_state)
  step(train_state, batch, algo_state)     -> (train_state, algo_state, metrics)
  end_task(train_state, algo_state, data)  -> (train_state, algo_state)

The states are updated in place (the model's parameters, the optimizer's
buffers, the replay buffer's tensors) and returned. `batch` is a
`jcl.types.Batch` of tensors `(x [B, ...], y [B], t [B], mask [B])`; `data`
in `end_task` is the finished task's training set as a chunk `[K, B, ...]`, or
None for a method whose spec has `uses_task_data = False`.
Random choices come from `train_state.rng` (see `jcl.torch.random`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import torch
import torch.nn.functional as F

from jcl.torch import train_state as ts_lib
from jcl.torch.models import MASK_VALUE
from jcl.torch.train_state import TrainState
from jcl.types import Batch
from jcl.types import Context  # noqa: F401  (re-exported: the one of `jcl.algorithms`)

Tensors = dict[str, torch.Tensor]
Metrics = dict[str, torch.Tensor]

MASKED_LOGIT = MASK_VALUE


class Algorithm(NamedTuple):
  """A continual-learning algorithm as four functions (see module docstring)."""

  init: Callable[..., Any]
  step: Callable[[TrainState, Batch, Any], tuple[TrainState, Any, Metrics]]
  begin_task: Callable[[TrainState, Any, int], tuple[TrainState, Any]]
  end_task: Callable[[TrainState, Any, Batch], tuple[TrainState, Any]]
  spec: Any = None


class EmptyState(NamedTuple):
  """The `algo_state` of an algorithm that keeps none."""


def masked_logits(logits: torch.Tensor, class_mask: torch.Tensor) -> torch.Tensor:
  """`MASKED_LOGIT` outside `class_mask` (`[C]` or `[B, C]` bool)."""
  return torch.where(class_mask, logits, MASKED_LOGIT)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
  """`sum(mask * values) / max(sum(mask), 1)`."""
  return torch.sum(values * mask) / torch.clamp(torch.sum(mask), min=1.0)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
  """Mean softmax cross-entropy over the real samples of a padded batch."""
  return masked_mean(F.cross_entropy(logits, labels.long(), reduction='none'), mask)


def accuracy(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
  """Fraction of correct argmax predictions among the real samples."""
  return masked_mean(torch.argmax(logits, -1) == labels, mask)


def forward(
  state: TrainState,
  batch: Batch,
  *,
  return_features: bool = False,
  params: Mapping[str, torch.Tensor] | None = None,
) -> dict:
  """The model on `batch` in training mode (at `params` when given).

  Returns:
    a dict of `logits` (masked by the state's `class_mask`), `raw_logits`,
    `model_state` (new BatchNorm statistics) and, with `return_features`,
    `features`.
  """
  outputs, model_state = ts_lib.apply_model(
    state, batch.x, batch.t, train=True, params=params, return_features=return_features
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


def task_loss(state: TrainState, batch: Batch, *, return_features: bool = False):
  """Cross-entropy of the model on `batch` in training mode: `(loss, aux)`."""
  aux = forward(state, batch, return_features=return_features)
  return cross_entropy(aux['logits'], batch.y, batch.mask), aux


# `(train_state, batch) -> (loss, aux)`, the loss at the model's own parameters.
LossFn = Callable[[TrainState, Batch], tuple[torch.Tensor, dict]]


def grad(loss: torch.Tensor, state: TrainState) -> Tensors:
  """`{name: d loss / d param}` over the model's parameters."""
  grads = torch.autograd.grad(loss, state.param_list, allow_unused=True, materialize_grads=True)
  return dict(zip(state.param_names, grads))


def apply_update(state: TrainState, grads: Tensors, model_state: Tensors | None) -> TrainState:
  """One optimizer step with `grads`, keeping the new model state."""
  return state.apply_gradients(grads, model_state=model_state)


def concat_batches(*batches: Batch) -> Batch:
  """Concatenates batches along the sample axis."""
  return Batch(*[torch.cat(parts, dim=0) for parts in zip(*batches)])


def tree_dot(a: Tensors, b: Tensors) -> torch.Tensor:
  """`sum_i a_i * b_i` over all entries."""
  return sum(torch.sum(a[k] * b[k]) for k in a)


def tree_add(a: Tensors, b: Tensors) -> Tensors:
  return {k: a[k] + b[k] for k in a}


def zeros_like(tensors: Mapping[str, torch.Tensor]) -> Tensors:
  return {k: torch.zeros_like(v) for k, v in tensors.items()}


def default_begin_task(train_state: TrainState, algo_state: Any, task_id: int):
  """The regime every algorithm gets: per-task learning-rate decay, optional
  optimizer re-initialisation, and the current task id."""
  return ts_lib.begin_task(train_state, task_id), algo_state


def no_end_task(train_state: TrainState, algo_state: Any, task_data: Batch | None):
  del task_data  # None too: such a method's spec has `uses_task_data = False`
  return train_state, algo_state


def gradient(state: TrainState, batch: Batch) -> Tensors:
  """Gradient of the task loss on `batch` at the current parameters (e.g. on
  an episodic memory; the BatchNorm statistics it computes are discarded)."""
  with torch.enable_grad():
    return grad(task_loss(state, batch)[0], state)


def loss_and_grads(
  state: TrainState,
  batch: Batch,
  algo_state: Any,
  penalty_fn: Callable[[Tensors, Any], torch.Tensor] | None = None,
  loss_fn: LossFn = task_loss,
):
  """Gradients of `loss_fn` and of `penalty_fn(params, algo_state)`, taken separately.

  `penalty_fn` returns the penalty (differentiated here) or `(penalty,
  gradient)` with its gradient in closed form (new tensors: the task gradient
  is added to them in place).

  Returns:
    `(task_grads, total_grads, aux, metrics)` as `jcl.algorithms.base.loss_and_grads`.
  """
  loss, aux = loss_fn(state, batch)
  task_grads = grad(loss, state)
  metrics = {'loss': loss.detach()}
  if 'logits' in aux:
    metrics['accuracy'] = accuracy(aux['logits'].detach(), batch.y, batch.mask)
  grads = task_grads
  if penalty_fn is not None:
    penalty = penalty_fn(state.params, algo_state)
    if isinstance(penalty, tuple):  # (value, gradient in closed form): total in place
      penalty, grads = penalty
      with torch.no_grad():
        torch._foreach_add_([grads[k] for k in task_grads], list(task_grads.values()))
    else:
      grads = tree_add(task_grads, grad(penalty, state))
    metrics['penalty'] = penalty.detach()
  return task_grads, grads, aux, metrics


def sgd_step(
  penalty_fn: Callable[[Tensors, Any], torch.Tensor] | None = None, loss_fn: LossFn = task_loss
):
  """A step on `loss_fn + penalty_fn(params, algo_state)`; `algo_state` passes through."""

  def step(train_state: TrainState, batch: Batch, algo_state: Any):
    _, grads, aux, metrics = loss_and_grads(train_state, batch, algo_state, penalty_fn, loss_fn)
    return apply_update(train_state, grads, aux.get('model_state')), algo_state, metrics

  return step


def detached_params(state: TrainState) -> Tensors:
  return {k: v.detach() for k, v in state.params.items()}


def per_sample_mean(
  fn: Callable[[Tensors, Batch], Tensors], params: Tensors, data: Batch
) -> Tensors:
  """`1/N sum_n fn(params, sample_n)` over the real samples of `data` `[K, B, ...]`.

  `fn(params, batch_of_one)` returns `{name: tensor}` shaped like `params`
  (e.g. a squared gradient, taken with `torch.func.grad`); it is vmapped
  over each batch and summed with the mask.
  """

  def one(x, y, t):
    return fn(params, Batch(x[None], y[None], t[None], torch.ones(1, device=x.device)))

  per_batch = torch.func.vmap(one)
  total = zeros_like(params)
  count = torch.zeros((), device=data.mask.device)
  for k in range(data.mask.shape[0]):
    mask = data.mask[k]
    if not bool(torch.any(mask > 0)):
      continue
    values = per_batch(data.x[k], data.y[k], data.t[k])
    for name in total:
      total[name] = total[name] + torch.tensordot(mask, values[name], dims=1)
    count = count + torch.sum(mask)
  return {name: value / torch.clamp(count, min=1.0) for name, value in total.items()}


def make(spec: Any, step, *, init=None, begin_task=None, end_task=None) -> Algorithm:
  """Assembles an `Algorithm`; the algorithm's own `begin_task` runs after the regime's."""
  init = init or (lambda train_state, rng=None: EmptyState())

  def begin(train_state, algo_state, task_id):
    train_state, algo_state = default_begin_task(train_state, algo_state, task_id)
    if begin_task is not None:
      train_state, algo_state = begin_task(train_state, algo_state, task_id)
    return train_state, algo_state

  return Algorithm(
    init=init, step=step, begin_task=begin, end_task=end_task or no_end_task, spec=spec
  )
