"""Mode-Connectivity SGD (Mirzadeh et al. 2021, "Linear mode connectivity in
multitask and continual learning"), Sec. 4, as `jcl.algorithms.mcsgd`.

Task t trains as Naive from w̄_{t-1} (`w_prev`) to `w_task`; its `end_task`
stores `memory_per_task` of the task's samples (a per-task reservoir) and,
from the second task on, looks for w̄_t linearly connected to both:

    w̄_t = argmin_w  mean_j  L_prev(w_prev + tau_j (w - w_prev))
                   + mean_j  L_task(w_task + tau_j (w - w_task)),

`tau_j = j / n`, `j = 1..n`, `L_prev` on the memory of tasks 0..t-1 and
`L_task` on the current task's. From `w_prev + lmc_init_position (w_task -
w_prev)`, `lmc_epochs` passes of SGD(`lmc_lr`, `lmc_momentum`) on
`lmc_batch_size` samples of each segment's data (both cycling through their
shuffled memory, `ceil(max(n_prev, n_task) / lmc_batch_size)` steps a pass)
follow the exact gradient, chain-rule factor `tau` included. The model runs
in evaluation mode (no dropout, BatchNorm statistics of the trained model).
w̄_t replaces the parameters and becomes the next `w_prev`. The choices and
their reasons are those of the JAX module's docstring.

Random draws (the same keys as the JAX module): the memory draws with
`step_key(MEMORY_SALT)`, split once per batch of the task's data; pass `e`
of the phase shuffles with the two halves of `fold_in(step_key(SHUFFLE_SALT),
e)`, scoring each eligible slot with `jax.random.uniform`'s float (the top
23 of 32 random bits), sorted in descending order, ties in slot order.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from jcl import specs
from jcl.torch import optim
from jcl.torch import train_state as ts_lib
from jcl.torch.algorithms import base
from jcl.torch.algorithms import buffer as buffer_lib
from jcl.torch.algorithms.er import require_context
from jcl.torch.random import Key, RandomSource
from jcl.torch.train_state import TrainState
from jcl.types import Batch

Tensors = dict[str, torch.Tensor]

MEMORY_SALT, SHUFFLE_SALT = 11, 12


class MCSGDState(NamedTuple):
  """`algo_state` of MC-SGD.

  Attributes:
    buffer: the episodic memory, `memory_per_task` slots per task.
    anchor: w̄ of the last finished task (`w_prev` of the next phase), `{name: tensor}`.
    lmc_steps: SGD steps taken by all mode-connectivity phases.
  """

  buffer: buffer_lib.ReplayBuffer
  anchor: Tensors
  lmc_steps: int


def line_positions(num_points: int, device=None) -> torch.Tensor:
  """`tau_j = j / n`, `j = 1..n`: the `[n]` float32 points of a segment."""
  return torch.arange(1, num_points + 1, dtype=torch.float32, device=device) / num_points


def interpolate(w_end: Tensors, w: Tensors, tau) -> Tensors:
  """`w_end + tau (w - w_end)` tensor by tensor."""
  return {k: w_end[k] + tau * (w[k] - w_end[k]) for k in w}


def eval_loss(params: Tensors, train_state: TrainState, batch: Batch) -> torch.Tensor:
  """Masked mean cross-entropy of the model at `params` in evaluation mode (no dropout)."""
  logits, _ = ts_lib.apply_model(train_state, batch.x, batch.t, train=False, params=params)
  return base.cross_entropy(base.masked_logits(logits, train_state.class_mask), batch.y, batch.mask)


def segment_loss(
  w: Tensors, w_end: Tensors, train_state: TrainState, batch: Batch, taus: torch.Tensor
) -> torch.Tensor:
  """`mean_j L(w_end + tau_j (w - w_end))` on `batch` over the points `taus [n]`."""
  return torch.mean(
    torch.stack([eval_loss(interpolate(w_end, w, tau), train_state, batch) for tau in taus])
  )


def connectivity_loss(
  w: Tensors,
  w_prev: Tensors,
  w_task: Tensors,
  train_state: TrainState,
  prev_batch: Batch,
  task_batch: Batch,
  taus: torch.Tensor,
) -> torch.Tensor:
  """The MC-SGD objective on one batch per segment (from `w_prev` on
  `prev_batch`, from `w_task` on `task_batch`)."""
  return segment_loss(w, w_prev, train_state, prev_batch, taus) + segment_loss(
    w, w_task, train_state, task_batch, taus
  )


def uniform(source: RandomSource, key: Key, num: int) -> torch.Tensor:
  """`[num]` float32 uniform on `[0, 1)` as `jax.random.uniform(key, (num,))`
  builds it: the top 23 of 32 random bits as the mantissa (`bits31 >> 8`)."""
  return (source.bits31(key, num) >> 8).to(torch.float32) * 2.0**-23


def shuffled_slots(source: RandomSource, key: Key, eligible: torch.Tensor) -> torch.Tensor:
  """The eligible slots first, in random order: `[N]` int64."""
  scores = torch.where(
    eligible,
    uniform(source, key, eligible.shape[0]).to(eligible.device),
    torch.full(eligible.shape, -1.0, device=eligible.device),
  )
  return torch.sort(scores, descending=True, stable=True).indices


def cycled_batch(
  buffer: buffer_lib.ReplayBuffer, order: torch.Tensor, count: int, step: int, batch_size: int
) -> Batch:
  """Batch `step` of the first `count` slots of `order`, wrapping around;
  all-masked when `count == 0`."""
  position = torch.remainder(
    step * batch_size + torch.arange(batch_size, device=order.device), max(count, 1)
  )
  idx = order[position]
  mask = torch.full((batch_size,), float(count > 0), device=order.device)
  return Batch(buffer.x[idx], buffer.y[idx], buffer.t[idx], mask)


def store_task(
  buffer: buffer_lib.ReplayBuffer, data: Batch, source: RandomSource, key: Key, per_task: int
) -> buffer_lib.ReplayBuffer:
  """Offers every real sample of `data [K, B, ...]` to its task's memory: each
  task keeps `per_task` of them, uniformly without replacement (in place)."""
  for k in range(data.mask.shape[0]):
    key, sub = source.split(key, 2)
    batch = Batch(data.x[k], data.y[k], data.t[k], data.mask[k])
    buffer = buffer_lib.add_per_task(buffer, batch, source, sub, per_task)
  return buffer


def connect(
  spec: specs.MCSGDSpec,
  train_state: TrainState,
  buffer: buffer_lib.ReplayBuffer,
  w_prev: Tensors,
  key: Key,
) -> tuple[Tensors, int]:
  """The mode-connectivity phase of task `train_state.task` (> 0).

  Args:
    spec: the hyperparameters.
    train_state: holds `w_task` (its parameters), the task id and class mask.
    buffer: the memory, with the current task's samples stored.
    w_prev: w̄ of the previous task.
    key: key of the shuffles (from `train_state.rng`).
  Returns:
    `(w_bar, steps)`: the connected solution (detached tensors) and the SGD steps taken.
  """
  source, task = train_state.rng, train_state.task
  w_task = base.detached_params(train_state)
  taus = line_positions(spec.lmc_line_samples, train_state.device)
  prev_eligible = buffer.valid & (buffer.t < task)
  task_eligible = buffer.valid & (buffer.t == task)
  num_prev, num_task = int(prev_eligible.sum()), int(task_eligible.sum())
  batch_size = spec.lmc_batch_size
  steps_per_epoch = math.ceil(max(num_prev, num_task) / batch_size)

  w = {
    k: v.clone().requires_grad_(True)
    for k, v in interpolate(w_prev, w_task, spec.lmc_init_position).items()
  }
  names = list(w)
  optimizer = optim.Optimizer(
    specs.OptimizerSpec(learning_rate=spec.lmc_lr, momentum=spec.lmc_momentum), list(w.values())
  )
  with torch.enable_grad():
    for e in range(spec.lmc_epochs):
      key_prev, key_task = source.split(source.fold_in(key, e), 2)
      prev_order = shuffled_slots(source, key_prev, prev_eligible)
      task_order = shuffled_slots(source, key_task, task_eligible)
      for i in range(steps_per_epoch):
        prev_batch = cycled_batch(buffer, prev_order, num_prev, i, batch_size)
        task_batch = cycled_batch(buffer, task_order, num_task, i, batch_size)
        loss = connectivity_loss(w, w_prev, w_task, train_state, prev_batch, task_batch, taus)
        grads = torch.autograd.grad(
          loss, [w[k] for k in names], allow_unused=True, materialize_grads=True
        )
        optimizer.step([w[k] for k in names], grads)
  return {k: v.detach() for k, v in w.items()}, steps_per_epoch * spec.lmc_epochs


def make(
  spec: specs.MCSGDSpec | None = None, context: base.Context | None = None
) -> base.Algorithm:
  spec = spec or specs.MCSGDSpec()
  context = require_context(context, 'mcsgd')

  def init(train_state, rng=None):
    del rng
    memory = buffer_lib.init(
      spec.memory_per_task * context.num_tasks,
      tuple(context.input_shape),
      num_classes=context.num_classes,
      num_tasks=context.num_tasks,
      device=train_state.device,
    )
    return MCSGDState(memory, ts_lib.clone_tensors(train_state.params), 0)

  def end_task(train_state, state: MCSGDState, task_data: Batch):
    source = train_state.rng
    buffer = store_task(
      state.buffer, task_data, source, train_state.step_key(MEMORY_SALT), spec.memory_per_task
    )
    if train_state.task == 0:  # no w_prev yet: the continual solution is w̄_0
      return train_state, MCSGDState(
        buffer, ts_lib.clone_tensors(train_state.params), state.lmc_steps
      )
    w_bar, steps = connect(
      spec, train_state, buffer, state.anchor, train_state.step_key(SHUFFLE_SALT)
    )
    with torch.no_grad():
      for name, value in w_bar.items():
        train_state.params[name].copy_(value)
    return train_state, MCSGDState(buffer, w_bar, state.lmc_steps + steps)

  return base.make(spec, base.sgd_step(), init=init, end_task=end_task)
