"""Experience Replay (Chaudhry et al. 2019, "On tiny episodic memories in CL").

Each step trains on the current batch concatenated with a batch drawn from a
replay buffer (reservoir sampling by default), then offers the current
batch to the buffer. The buffer lives in `algo_state`, so sampling and
insertion run inside the compiled, scanned step:

    loss = CE([x; x_mem], [y; y_mem])      (mean over the real samples)
"""

from __future__ import annotations

from typing import NamedTuple


from jcl import specs
from jcl.algorithms import base
from jcl.algorithms import buffer as buffer_lib

SAMPLE_SALT, INSERT_SALT = 1, 2


class ReplayState(NamedTuple):
  buffer: buffer_lib.ReplayBuffer


def require_context(context: base.Context | None, name: str) -> base.Context:
  if context is None:
    raise ValueError(
      f'{name} needs a base.Context(input_shape, num_classes, num_tasks) to size '
      f'its memory: build it with jcl.algorithms.build(spec, context)'
    )
  return context


def init_buffer(spec, context: base.Context, *, logits_dim: int = 0) -> buffer_lib.ReplayBuffer:
  return buffer_lib.init(
    spec.memory_size,
    tuple(context.input_shape),
    num_classes=context.num_classes,
    num_tasks=context.num_tasks,
    logits_dim=logits_dim,
  )


def make(spec: specs.ERSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  spec = spec or specs.ERSpec()
  context = require_context(context, 'er')
  per_task = spec.memory_size // context.num_tasks if spec.policy == 'per_task' else None

  def init(train_state, rng):
    del train_state, rng
    return ReplayState(init_buffer(spec, context))

  def step(train_state, batch, state: ReplayState):
    memory, _ = buffer_lib.sample(
      state.buffer, train_state.step_rng(SAMPLE_SALT), spec.replay_batch_size
    )
    new_state, algo_state, metrics = base.sgd_step()(
      train_state, base.concat_batches(batch, memory), state
    )
    buffer = buffer_lib.add(
      state.buffer, batch, train_state.step_rng(INSERT_SALT), policy=spec.policy, per_task=per_task
    )
    metrics['buffer_size'] = buffer_lib.size(buffer)
    return new_state, algo_state._replace(buffer=buffer), metrics

  if spec.policy == 'per_task' and spec.memory_size % context.num_tasks:
    raise ValueError(
      f"er: invalid 'memory_size': with policy='per_task' it must be a multiple "
      f'of the number of tasks ({context.num_tasks}), got {spec.memory_size}'
    )
  return base.make(spec, step, init=init)
