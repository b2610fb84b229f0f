"""The training state of the PyTorch backend, and the per-task regime.

The counterpart of `jcl.train_state`: the model (parameters and BatchNorm
statistics live in it), the optimizer of the `OptimizerSpec`, the step
counter, the current task, the mask of output units the loss may use and the
source of random numbers. Unlike the JAX state it is updated in place;
functions that take a state return it too, so the loops of both backends read
the same.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
from torch import nn

from jcl.data.augment import Augmentation
from jcl.specs import OptimizerSpec
from jcl.torch import augment as augment_lib
from jcl.torch import models as models_lib
from jcl.torch import random as random_lib
from jcl.torch.optim import Optimizer

Tensors = dict[str, torch.Tensor]


@dataclasses.dataclass
class TrainState:
  """Everything a step reads and updates.

  Attributes:
    model: a `jcl.torch.models` module (its parameters are the trainable ones).
    optimizer: the `Optimizer` of `regime` over `model`'s parameters.
    regime: the `OptimizerSpec` that `begin_task` applies.
    rng: the `RandomSource`; step `s` draws from `rng.key(s, salt)`.
    class_mask: bool `[C]`, output units the training loss and class-IL
      prediction may use.
    step: optimizer steps taken (padding steps excluded).
    task: the task being trained.
    augment: the `jcl.data.augment.Augmentation` every training forward pass
      applies to its inputs (`apply_model`), or None.
  """

  model: nn.Module
  optimizer: Optimizer
  regime: OptimizerSpec
  rng: random_lib.RandomSource
  class_mask: torch.Tensor
  step: int = 0
  task: int = 0
  augment: Augmentation | None = None

  def __post_init__(self):
    # The parameters are looked up once: loading a state dict copies into them,
    # replacing a module's `nn.Parameter` objects needs a new state.
    self._params = dict(self.model.named_parameters())
    self.param_names = list(self._params)
    self.param_list = list(self._params.values())
    self.norm_layers = [
      (name, m) for name, m in self.model.named_modules() if isinstance(m, models_lib.BatchNorm)
    ]

  @property
  def params(self) -> Tensors:
    """`{name: Parameter}`, the model's trainable parameters (live, not copies)."""
    return self._params

  @property
  def model_state(self) -> Tensors:
    """`{name: buffer}`: the BatchNorm running statistics (empty without BatchNorm)."""
    state = {}
    for name, layer in self.norm_layers:
      prefix = f'{name}.' if name else ''
      state[prefix + 'running_mean'] = layer.running_mean
      state[prefix + 'running_var'] = layer.running_var
    return state

  @property
  def learning_rate(self) -> float:
    return self.optimizer.learning_rate

  @property
  def device(self) -> torch.device:
    return next(self.model.parameters()).device

  def step_key(self, salt: int = 0):
    """The key of this step and purpose (`TrainState.step_rng(salt)` in JAX)."""
    return self.rng.key(self.step, salt)

  def apply_gradients(
    self, grads: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor] | None = None
  ) -> 'TrainState':
    """One optimizer step with `grads` (`{name: tensor}`) and the new model
    state (BatchNorm statistics of the step's forward pass), in place."""
    self.optimizer.step(self.param_list, [grads[n] for n in self.param_names])
    if model_state:
      with torch.no_grad():
        current = self.model_state
        for name, value in model_state.items():
          current[name].copy_(value)
    self.step += 1
    return self

  def replace(self, **changes: Any) -> 'TrainState':
    """A shallow copy with `changes` (it shares the model and optimizer)."""
    return dataclasses.replace(self, **changes)


def create_train_state(
  model: nn.Module,
  optimizer: OptimizerSpec,
  *,
  num_classes: int,
  seed: int = 0,
  rng: random_lib.RandomSource | None = None,
  augment: Augmentation | None = None,
) -> TrainState:
  """The initial state of `model` (already initialized) under `optimizer`.

  Args:
    model: a `jcl.torch.models` module, on its device.
    optimizer: the training regime.
    num_classes: width of the model output (the length of `class_mask`).
    seed: seeds the default `TorchRandom` source.
    rng: another `RandomSource` (e.g. one reproducing `jax.random` in tests).
    augment: training-time augmentation of the inputs, or None.
  """
  device = next(model.parameters()).device
  return TrainState(
    model=model,
    optimizer=Optimizer(optimizer, list(model.parameters())),
    regime=optimizer,
    rng=rng if rng is not None else random_lib.TorchRandom(seed, device),
    class_mask=torch.ones(num_classes, dtype=torch.bool, device=device),
    augment=augment,
  )


def apply_model(
  state: TrainState,
  x: torch.Tensor,
  t: torch.Tensor,
  *,
  train: bool,
  params: Mapping[str, torch.Tensor] | None = None,
  model_state: Mapping[str, torch.Tensor] | None = None,
  return_features: bool = False,
):
  """Runs the model; returns `(outputs, new_model_state)` as the JAX `apply_model`.

  `outputs` is the logits `[B, C]`, or `(logits, features)`. With `params`
  / `model_state` the model runs at those values (`torch.func.functional_call`)
  instead of its own. In training mode `new_model_state` holds the updated
  BatchNorm statistics, which nothing writes until `apply_gradients`; in
  evaluation mode it is the model state used. With the state's `augment`, a
  training pass augments its inputs first (`jcl.torch.augment`).
  """
  if train and state.augment is not None:
    x = augment_lib.training_inputs(state, x)
  if params is None and model_state is None:
    outputs = state.model(x, t, train=train, return_features=return_features)
  else:
    values = {**(params or {}), **(model_state or {})}
    outputs = torch.func.functional_call(
      state.model, values, (x, t), dict(train=train, return_features=return_features)
    )
  if not state.norm_layers:
    return outputs, {}
  if not train:
    return outputs, dict(model_state) if model_state is not None else state.model_state
  new_state = {}
  for name, layer in state.norm_layers:
    prefix = f'{name}.' if name else ''
    new_state[prefix + 'running_mean'], new_state[prefix + 'running_var'] = layer.new_stats
    layer.new_stats = None
  return outputs, new_state


def learning_rate_for_task(regime: OptimizerSpec, task_id: int) -> float:
  """`max(lr * lr_decay**task, min_lr)` in float32, the same bits as the JAX regime."""
  return float(regime.learning_rate_for_task(task_id))


def begin_task(state: TrainState, task_id: int) -> TrainState:
  """The regime at a task's start: optional optimizer re-initialisation, the
  task's learning rate, and the current task id (in place)."""
  if state.regime.reinit_per_task:
    state.optimizer.reset(state.param_list)
  state.optimizer.learning_rate = learning_rate_for_task(state.regime, task_id)
  state.task = int(task_id)
  return state


def clone_tensors(tensors: Mapping[str, torch.Tensor]) -> Tensors:
  """Detached copies of `{name: tensor}` (a snapshot of parameters or statistics)."""
  return {name: value.detach().clone() for name, value in tensors.items()}
