"""Mode-Connectivity SGD (Mirzadeh et al. 2021, "Linear mode connectivity in
multitask and continual learning"), Sec. 4.

Task t trains continually, plain SGD as Naive, from the previous MC-SGD
solution `w_prev` (w̄_{t-1}) to `w_task` (ŵ_t). At the task's end (`end_task`)
a mode-connectivity phase looks for a w̄_t linearly connected by a low-loss
path to both (the MC-SGD objective of Sec. 4; equation numbers could not be
checked, the paper text is not in /work/shared/papers):

    w̄_t = argmin_w  mean_j  L_prev(w_prev + tau_j (w - w_prev))
                   + mean_j  L_task(w_task + tau_j (w - w_task)),

with `L_prev` the loss on the episodic memory of tasks 0..t-1 and `L_task` on
the current task's memory samples, `tau_j = j / n` for `j = 1..n`,
`n = lmc_line_samples`. Starting from `w_prev + lmc_init_position *
(w_task - w_prev)`, `lmc_epochs` passes of SGD(`lmc_lr`, `lmc_momentum`) on
batches of `lmc_batch_size` samples of each segment's data follow the exact
gradient of that objective. w̄_t then replaces the trained parameters and
becomes the next `w_prev`.

Choices (Sequel's JAX port and the authors' code `core/mode_connectivity.py`
and `core/train_methods.py` of imirzadeh/CL-LinearModeConnectivity differ):

* Line points. The authors evaluate `np.arange(0, 1.01, 1/n)`, n + 1 points
  including both ends. The `tau = 0` end is the fixed solution `w_prev` (or
  `w_task`) itself, whose loss does not depend on w: it adds a constant to
  the objective and nothing to its gradient, so it is left out. The n points
  `tau = 1/n .. 1` (the last is w itself) are evaluated at once with `vmap`,
  and each segment's loss is their mean (the integral over alpha in [0, 1]
  that the paper's sum approximates, so `lmc_lr` means the same for any n).
* Gradient. `jax.grad` differentiates through the interpolation, so each
  point's gradient carries the chain-rule factor `tau` of the objective. The authors
  (and Sequel) add the plain gradients at the points without it, and the
  authors' PyTorch loop also never zeroes them between points, so points
  near the fixed end weigh most; here the objective is the paper's.
* Batches. A step takes `lmc_batch_size` samples of each segment's data
  (memory of previous tasks / current task), both cycling through their
  shuffled sets; a pass is `ceil(max(n_prev, n_task) / lmc_batch_size)`
  steps, so both segments weigh the same in every step (the authors stop
  drawing from the smaller set once it is exhausted).
* Dropout is off in the line phase (evaluation mode, as the authors'
  `get_clf_loss` and Sequel's PyTorch version; Sequel's JAX version leaves it
  on by accident). BatchNorm statistics stay those of the trained model.
* Memory. At each task's end `memory_per_task` samples drawn uniformly
  without replacement from the task's training data (per-task reservoir of
  `buffer.add_per_task`) enter the memory; they are the current task's
  segment data at once and join the previous tasks' memory afterwards.
* Task 0 has no `w_prev`: its continual solution is kept as w̄_0, as in the
  authors' code (`t_1_lmc = t_1_seq`); the phase runs from the second task.
* Task t trains from w̄_{t-1} (the paper; the authors' script and Sequel
  resume from the continual solution ŵ_{t-1} and use w̄ only to evaluate).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jcl import specs
from jcl import train_state as ts_lib
from jcl.algorithms import base
from jcl.algorithms import buffer as buffer_lib
from jcl.algorithms.er import require_context
from jcl.train_state import TrainState
from jcl.types import Batch

PyTree = Any

MEMORY_SALT, SHUFFLE_SALT = 11, 12


class MCSGDState(NamedTuple):
  """`algo_state` of MC-SGD.

  Attributes:
    buffer: the episodic memory, `memory_per_task` slots per task.
    anchor: w̄ of the last finished task (`w_prev` of the next phase).
    lmc_steps: int32, SGD steps taken by all mode-connectivity phases.
  """

  buffer: buffer_lib.ReplayBuffer
  anchor: PyTree
  lmc_steps: jax.Array


def line_positions(num_points: int) -> jax.Array:
  """`tau_j = j / n`, `j = 1..n`: the `[n]` points of a segment, from the fixed
  end (excluded, `tau = 0`) to the optimised weights (`tau = 1`)."""
  return jnp.arange(1, num_points + 1, dtype=jnp.float32) / num_points


def interpolate(w_end: PyTree, w: PyTree, tau: jax.Array) -> PyTree:
  """`w_end + tau (w - w_end)` leaf by leaf."""
  return jax.tree.map(lambda e, p: e + tau * (p - e), w_end, w)


def eval_loss(params: PyTree, train_state: TrainState, batch: Batch) -> jax.Array:
  """Masked mean cross-entropy of the model in evaluation mode (no dropout)."""
  logits, _ = ts_lib.apply_model(train_state, params, batch.x, batch.t, train=False)
  return base.cross_entropy(base.masked_logits(logits, train_state.class_mask), batch.y, batch.mask)


def segment_loss(
  w: PyTree, w_end: PyTree, train_state: TrainState, batch: Batch, taus: jax.Array
) -> jax.Array:
  """`mean_j L(w_end + tau_j (w - w_end))` on `batch`, the points `taus [n]`
  evaluated together with `vmap`."""
  return jnp.mean(
    jax.vmap(lambda tau: eval_loss(interpolate(w_end, w, tau), train_state, batch))(taus)
  )


def connectivity_loss(
  w: PyTree,
  w_prev: PyTree,
  w_task: PyTree,
  train_state: TrainState,
  prev_batch: Batch,
  task_batch: Batch,
  taus: jax.Array,
) -> jax.Array:
  """The MC-SGD objective on one batch per segment: the segment from
  `w_prev` on `prev_batch` plus the segment from `w_task` on `task_batch`."""
  return segment_loss(w, w_prev, train_state, prev_batch, taus) + segment_loss(
    w, w_task, train_state, task_batch, taus
  )


def _shuffled_slots(rng: jax.Array, eligible: jax.Array) -> jax.Array:
  """The eligible slots first, in random order: `[N]` int32."""
  scores = jnp.where(eligible, jax.random.uniform(rng, eligible.shape), -1.0)
  return jnp.argsort(-scores).astype(jnp.int32)


def _cycled_batch(
  buffer: buffer_lib.ReplayBuffer,
  order: jax.Array,
  count: jax.Array,
  step: jax.Array,
  batch_size: int,
) -> Batch:
  """Batch `step` of the first `count` slots of `order`, wrapping around;
  all-masked when `count == 0`."""
  position = jnp.mod(step * batch_size + jnp.arange(batch_size), jnp.maximum(count, 1))
  idx = order[position]
  mask = jnp.full((batch_size,), count > 0, jnp.float32)
  return Batch(buffer.x[idx], buffer.y[idx], buffer.t[idx], mask)


def store_task(
  buffer: buffer_lib.ReplayBuffer, data: Batch, rng: jax.Array, per_task: int
) -> buffer_lib.ReplayBuffer:
  """Offers every real sample of `data [K, B, ...]` to its task's memory: each
  task keeps `per_task` of them, uniformly without replacement."""

  def add(carry, batch):
    buf, key = carry
    key, sub = jax.random.split(key)
    return buffer_lib.add_per_task(buf, batch, sub, per_task), key

  return base.scan_batches(add, (buffer, rng), data)[0]


def connect(
  spec: specs.MCSGDSpec,
  train_state: TrainState,
  buffer: buffer_lib.ReplayBuffer,
  w_prev: PyTree,
  rng: jax.Array,
) -> tuple[PyTree, jax.Array]:
  """The mode-connectivity phase of task `train_state.task` (> 0).

  Args:
    spec: the hyperparameters.
    train_state: holds `w_task` (its params), the task id and class mask.
    buffer: the memory, with the current task's samples stored.
    w_prev: w̄ of the previous task.
    rng: key of the shuffles.
  Returns:
    `(w_bar, steps)`: the connected solution and the SGD steps taken.
  """
  w_task, task = train_state.params, train_state.task
  taus = line_positions(spec.lmc_line_samples)
  prev_eligible = buffer.valid & (buffer.t < task)
  task_eligible = buffer.valid & (buffer.t == task)
  num_prev = jnp.sum(prev_eligible, dtype=jnp.int32)
  num_task = jnp.sum(task_eligible, dtype=jnp.int32)
  batch_size = spec.lmc_batch_size
  steps_per_epoch = (jnp.maximum(num_prev, num_task) + batch_size - 1) // batch_size

  optimizer = optax.sgd(spec.lmc_lr, momentum=spec.lmc_momentum or None)
  grad_fn = jax.grad(connectivity_loss)
  w0 = interpolate(w_prev, w_task, spec.lmc_init_position)

  def epoch(e, carry):
    key_prev, key_task = jax.random.split(jax.random.fold_in(rng, e))
    prev_order = _shuffled_slots(key_prev, prev_eligible)
    task_order = _shuffled_slots(key_task, task_eligible)

    def step(i, carry):
      w, opt_state = carry
      prev_batch = _cycled_batch(buffer, prev_order, num_prev, i, batch_size)
      task_batch = _cycled_batch(buffer, task_order, num_task, i, batch_size)
      grads = grad_fn(w, w_prev, w_task, train_state, prev_batch, task_batch, taus)
      updates, opt_state = optimizer.update(grads, opt_state, w)
      return optax.apply_updates(w, updates), opt_state

    return jax.lax.fori_loop(0, steps_per_epoch, step, carry)

  w_bar, _ = jax.lax.fori_loop(0, spec.lmc_epochs, epoch, (w0, optimizer.init(w0)))
  return w_bar, steps_per_epoch * spec.lmc_epochs


def make(
  spec: specs.MCSGDSpec | None = None, context: base.Context | None = None
) -> base.Algorithm:
  spec = spec or specs.MCSGDSpec()
  context = require_context(context, 'mcsgd')

  def init(train_state, rng):
    del rng
    memory = buffer_lib.init(
      spec.memory_per_task * context.num_tasks,
      tuple(context.input_shape),
      num_classes=context.num_classes,
      num_tasks=context.num_tasks,
    )
    return MCSGDState(memory, jax.tree.map(jnp.copy, train_state.params), jnp.zeros((), jnp.int32))

  def end_task(train_state, state: MCSGDState, task_data: Batch):
    rng = train_state.step_rng(MEMORY_SALT)
    buffer = store_task(state.buffer, task_data, rng, spec.memory_per_task)

    def connect_to_previous(_):
      return connect(spec, train_state, buffer, state.anchor, train_state.step_rng(SHUFFLE_SALT))

    def keep_first_solution(_):  # task 0: no w_prev yet
      return train_state.params, jnp.zeros((), jnp.int32)

    w_bar, steps = jax.lax.cond(
      train_state.task > 0, connect_to_previous, keep_first_solution, None
    )
    return (
      train_state.replace(params=w_bar),
      MCSGDState(buffer, w_bar, state.lmc_steps + steps.astype(jnp.int32)),
    )

  return base.make(spec, base.sgd_step(), init=init, end_task=end_task)
