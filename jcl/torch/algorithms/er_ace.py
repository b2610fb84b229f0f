"""ER-ACE (Caccia et al. 2022), as `jcl.algorithms.er_ace` (Mammoth's `er_ace`).

    L_ACE = CE(mask_in(z(x_in)), y_in) + CE(z(x_mem), y_mem)

From the second task on, `mask_in` keeps the units of the batch's classes and
every unit from the largest class seen so far on, and masks the others; the
replayed batch (drawn before the current batch enters the buffer) is masked
by the loop's `class_mask` only. In the first task nothing is masked and
nothing is replayed. Both batches go through the model in one forward pass.
"""

from __future__ import annotations

import torch

from jcl import specs
from jcl.torch.algorithms import base
from jcl.torch.algorithms import buffer as buffer_lib
from jcl.torch.algorithms.er import (
  INSERT_SALT,
  SAMPLE_SALT,
  ReplayState,
  init_buffer,
  require_context,
)


def ace_units(batch, class_seen: torch.Tensor) -> torch.Tensor:
  """bool `[C]`: the classes of the batch's real samples and every unit from the
  largest class seen so far (`class_seen [C]` before the batch, and the batch) on."""
  classes = torch.arange(class_seen.shape[-1], device=class_seen.device)
  present = torch.any((batch.y[:, None] == classes) & (batch.mask[:, None] > 0), dim=0)
  seen = (class_seen > 0) | present
  largest = torch.max(torch.where(seen, classes, -1))
  return present | (classes >= largest)


def make(
  spec: specs.ERACESpec | None = None, context: base.Context | None = None
) -> base.Algorithm:
  spec = spec or specs.ERACESpec()
  context = require_context(context, 'er_ace')
  if spec.policy == 'per_task' and spec.memory_size % context.num_tasks:
    raise ValueError(
      f"er_ace: invalid 'memory_size': with policy='per_task' it must be a multiple "
      f'of the number of tasks ({context.num_tasks}), got {spec.memory_size}'
    )
  per_task = spec.memory_size // context.num_tasks if spec.policy == 'per_task' else None

  def init(train_state, rng=None):
    del rng
    return ReplayState(init_buffer(spec, context, train_state))

  def step(train_state, batch, state: ReplayState):
    source = train_state.rng
    later_task = train_state.task > 0
    units = train_state.class_mask
    if later_task:
      units = units & ace_units(batch, state.buffer.class_seen)
    memory, _ = buffer_lib.sample(
      state.buffer, source, train_state.step_key(SAMPLE_SALT), spec.replay_batch_size
    )
    if not later_task:
      memory = memory._replace(mask=torch.zeros_like(memory.mask))
    insert_key = train_state.step_key(INSERT_SALT)
    n = batch.mask.shape[0]
    aux = base.forward(train_state, base.concat_batches(batch, memory))
    loss = base.cross_entropy(base.masked_logits(aux['raw_logits'][:n], units), batch.y, batch.mask)
    replay = base.cross_entropy(aux['logits'][n:], memory.y, memory.mask)
    grads = base.grad(loss + replay, train_state)
    metrics = {
      'loss': loss.detach(),
      'replay_loss': replay.detach(),
      'accuracy': base.accuracy(aux['logits'][:n].detach(), batch.y, batch.mask),
    }
    train_state = base.apply_update(train_state, grads, aux['model_state'])
    buffer = buffer_lib.add(
      state.buffer, batch, source, insert_key, policy=spec.policy, per_task=per_task
    )
    metrics['buffer_size'] = buffer_lib.size(buffer)
    return train_state, ReplayState(buffer), metrics

  return base.make(spec, step, init=init)
