"""ER-ACE: Experience Replay with the asymmetric cross-entropy (Caccia,
Aljundi, Asadi, Tuytelaars, Pineau & Belilovsky, "New Insights on Reducing
Abrupt Representation Change in Online Continual Learning", ICLR 2022,
arXiv:2104.05025), as Mammoth's `er_ace` (aimagelab/mammoth
`models/er_ace.py`, commit e75a491c, default `task_free=False`; the authors'
`methods/er_ace.py` in pclucas14/AML is the same rule, always task-free).

The paper's asymmetric loss: the incoming batch is trained against the
classes it holds only, so new classes do not push the old ones' units down;
the replayed batch is trained against every class:

    L_ACE = CE(mask_in(z(x_in)), y_in) + CE(z(x_mem), y_mem)

From the second task on (`train_state.task > 0`), `mask_in` keeps the units
of the classes present among the batch's real samples and every unit from
the largest class seen so far on (Mammoth's `mask[:, present] = 1;
mask[:, seen_so_far.max():] = 1`, units of classes not seen yet included),
and sets the others, the earlier classes absent from the batch, to
`MASKED_LOGIT`; in the first task nothing is masked and nothing is replayed
(Mammoth's `current_task > 0`). "Seen so far" is the buffer's `class_seen`
(every sample ever offered) with the batch's labels. The replayed batch
(`replay_batch_size` samples drawn before the current batch enters the
buffer) is not masked beyond the loop's `class_mask` (Mammoth: no mask at
all; jcl's configs train class-IL Split MNIST with every unit open). Each
cross-entropy is a mean over its own real samples and the two are added;
an empty buffer contributes 0. As in jcl's ER and DER both batches go
through the model in one forward pass (Mammoth runs two; only BatchNorm
statistics can tell). The current batch then enters the buffer (reservoir
by default). Mammoth's optional cosine classifier (`use_custom_classifier`)
is a model change, not part of the method here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jcl import specs
from jcl.algorithms import base
from jcl.algorithms import buffer as buffer_lib
from jcl.algorithms.er import INSERT_SALT, SAMPLE_SALT, ReplayState, init_buffer, require_context


def ace_units(batch, class_seen: jax.Array) -> jax.Array:
  """bool `[C]`: the units the incoming batch's cross-entropy keeps (Mammoth's mask).

  Args:
    batch: the incoming batch, labels `y [B]`, `mask [B]`.
    class_seen: `[C]` int, samples of each class offered before this batch.
  Returns:
    the classes of the batch's real samples, and every unit `c >= m` with `m`
    the largest class seen so far (this batch included).
  """
  classes = jnp.arange(class_seen.shape[-1])
  present = jnp.any((batch.y[:, None] == classes) & (batch.mask[:, None] > 0), axis=0)
  seen = (class_seen > 0) | present
  largest = jnp.max(jnp.where(seen, classes, -1))
  return present | (classes >= largest)


def make(
  spec: specs.ERACESpec | None = None, context: base.Context | None = None
) -> base.Algorithm:
  spec = spec or specs.ERACESpec()
  context = require_context(context, 'er_ace')
  per_task = spec.memory_size // context.num_tasks if spec.policy == 'per_task' else None

  def init(train_state, rng):
    del train_state, rng
    return ReplayState(init_buffer(spec, context))

  def loss_fn(params, train_state, joint, units, n: int):
    """`(L_ACE, aux)` on `joint`: its first `n` rows the incoming batch, the rest replayed."""
    aux = base.forward(params, train_state, joint, train_state.step_rng())
    current = base.masked_logits(aux['raw_logits'][:n], units)
    loss = base.cross_entropy(current, joint.y[:n], joint.mask[:n])
    replay = base.cross_entropy(aux['logits'][n:], joint.y[n:], joint.mask[n:])
    return loss + replay, dict(aux, loss=loss, replay_loss=replay)

  def step(train_state, batch, state: ReplayState):
    later_task = train_state.task > 0
    units = train_state.class_mask & (ace_units(batch, state.buffer.class_seen) | ~later_task)
    memory, _ = buffer_lib.sample(
      state.buffer, train_state.step_rng(SAMPLE_SALT), spec.replay_batch_size
    )
    memory = memory._replace(mask=memory.mask * later_task)
    n = batch.mask.shape[0]
    joint = base.concat_batches(batch, memory)
    (_, aux), grads = jax.value_and_grad(
      lambda params: loss_fn(params, train_state, joint, units, n), has_aux=True
    )(train_state.params)
    new_state = base.apply_update(train_state, grads, aux['model_state'])
    buffer = buffer_lib.add(
      state.buffer, batch, train_state.step_rng(INSERT_SALT), policy=spec.policy, per_task=per_task
    )
    metrics = {
      'loss': aux['loss'],
      'replay_loss': aux['replay_loss'],
      'accuracy': base.accuracy(aux['logits'][:n], batch.y, batch.mask),
      'buffer_size': buffer_lib.size(buffer),
    }
    return new_state, ReplayState(buffer), metrics

  if spec.policy == 'per_task' and spec.memory_size % context.num_tasks:
    raise ValueError(
      f"er_ace: invalid 'memory_size': with policy='per_task' it must be a multiple "
      f'of the number of tasks ({context.num_tasks}), got {spec.memory_size}'
    )
  return base.make(spec, step, init=init)
