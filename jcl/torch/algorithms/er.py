"""Experience Replay (Chaudhry et al. 2019), as `jcl.algorithms.er`.

Each step trains on the current batch concatenated with `replay_batch_size`
samples drawn from the buffer (before this batch enters it), then offers
the current batch to the buffer:

    loss = CE([x; x_mem], [y; y_mem])      (mean over the real samples)
"""

from __future__ import annotations

from typing import NamedTuple

from jcl import specs
from jcl.torch.algorithms import base
from jcl.torch.algorithms import buffer as buffer_lib

# The salts of the JAX backend: step s samples with key(s, 1) and inserts with key(s, 2).
SAMPLE_SALT, INSERT_SALT = 1, 2


class ReplayState(NamedTuple):
  buffer: buffer_lib.ReplayBuffer


def require_context(context: base.Context | None, name: str) -> base.Context:
  if context is None:
    raise ValueError(
      f'{name} needs a Context(input_shape, num_classes, num_tasks) to size its '
      'memory: build it with jcl.torch.algorithms.build(spec, context)'
    )
  return context


def init_buffer(spec, context: base.Context, train_state, *, logits_dim: int = 0):
  return buffer_lib.init(
    spec.memory_size,
    tuple(context.input_shape),
    num_classes=context.num_classes,
    num_tasks=context.num_tasks,
    logits_dim=logits_dim,
    device=train_state.device,
  )


def make(spec: specs.ERSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  spec = spec or specs.ERSpec()
  context = require_context(context, 'er')
  if spec.policy == 'per_task' and spec.memory_size % context.num_tasks:
    raise ValueError(
      f"er: invalid 'memory_size': with policy='per_task' it must be a multiple "
      f'of the number of tasks ({context.num_tasks}), got {spec.memory_size}'
    )
  per_task = spec.memory_size // context.num_tasks if spec.policy == 'per_task' else None
  plain_step = base.sgd_step()

  def init(train_state, rng=None):
    del rng
    return ReplayState(init_buffer(spec, context, train_state))

  def step(train_state, batch, state: ReplayState):
    source = train_state.rng
    memory, _ = buffer_lib.sample(
      state.buffer, source, train_state.step_key(SAMPLE_SALT), spec.replay_batch_size
    )
    insert_key = train_state.step_key(INSERT_SALT)
    train_state, state, metrics = plain_step(train_state, base.concat_batches(batch, memory), state)
    buffer = buffer_lib.add(
      state.buffer, batch, source, insert_key, policy=spec.policy, per_task=per_task
    )
    metrics['buffer_size'] = buffer_lib.size(buffer)
    return train_state, ReplayState(buffer), metrics

  return base.make(spec, step, init=init)
