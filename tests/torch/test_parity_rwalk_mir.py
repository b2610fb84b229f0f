"""RWalk and MIR give the same parameters on both backends.

As tests/torch/test_parity.py: the same initial weights, batches (one partly
padding) and random numbers (`helpers.JaxRandom`, so MIR's buffer stores and
draws the same slots) over two class-incremental tasks; after every step the
metrics agree, after each task's steps and its `end_task` the weights and the
algorithm's state agree to float32 rounding (RWalk's scores, quotients by
`1/2 F dtheta^2 + eps`, to 1e-4). RWalk's scores are taken every 2 steps on
a counter that runs over tasks; MIR replays 2 of 4 candidates.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jcl import algorithms
from jcl.torch import algorithms as torch_algorithms
from jcl.torch import convert

from tests.small import small_spec
from tests.torch import helpers
from tests.torch.test_parity import (
  FAST_COMPILE,
  INPUT_SHAPE,
  NUM_CLASSES,
  assert_buffers_close,
  seen_classes,
  task_batches,
)

CASES = {
  'rwalk': dict(ewc_lambda=2.0, ewc_alpha=0.9, delta_t=2),
  'mir': dict(memory_size=8, replay_batch_size=2, mir_candidates=4),
}
SCORE_FIELDS = ('scores', 'checkpoint_scores', 'penalty')  # quotients by small numbers


def assert_algo_states_close(jax_state, torch_state, what):
  for field, value in torch_state._asdict().items():
    jax_value = getattr(jax_state, field)
    rtol = 1e-4 if field in SCORE_FIELDS else helpers.RTOL
    if field == 'buffer':
      assert_buffers_close(jax_value, value, what)
    elif isinstance(value, tuple):  # the penalty: importance and anchor
      for name, part in value._asdict().items():
        helpers.assert_trees_close(
          getattr(jax_value, name),
          convert.torch_to_flax(part)['params'],
          rtol=rtol,
          what=f'{what} {field}.{name}',
        )
    elif isinstance(value, dict):
      helpers.assert_trees_close(
        jax_value, convert.torch_to_flax(value)['params'], rtol=rtol, what=f'{what} {field}'
      )
    else:
      np.testing.assert_array_equal(
        helpers.as_numpy(value), np.asarray(jax_value), f'{what} {field}'
      )


@pytest.mark.parametrize('name', sorted(CASES))
def test_same_weights_after_steps_and_end_task(name):
  spec = small_spec(name, **CASES[name])
  context = algorithms.Context(INPUT_SHAPE, NUM_CLASSES, 2)
  jax_algo, torch_algo = algorithms.build(spec, context), torch_algorithms.build(spec, context)
  jax_ts, torch_ts = helpers.make_states('mlp', INPUT_SHAPE, NUM_CLASSES, widths=(16,))
  jax_state, torch_state = jax_algo.init(jax_ts, jax.random.PRNGKey(1)), torch_algo.init(torch_ts)
  step = jax.jit(jax_algo.step, compiler_options=FAST_COMPILE)
  end_task = jax.jit(jax_algo.end_task, compiler_options=FAST_COMPILE)
  for task in range(2):
    jax_ts = jax_ts.replace(class_mask=jnp.asarray(seen_classes(task)))
    torch_ts.class_mask = torch.from_numpy(seen_classes(task))
    jax_ts, jax_state = jax_algo.begin_task(jax_ts, jax_state, task)
    torch_ts, torch_state = torch_algo.begin_task(torch_ts, torch_state, task)
    batches = task_batches(task, steps=4)
    for k, (jax_batch, torch_batch) in enumerate(batches):
      jax_ts, jax_state, jax_metrics = step(jax_ts, jax_batch, jax_state)
      torch_ts, torch_state, torch_metrics = torch_algo.step(torch_ts, torch_batch, torch_state)
      helpers.assert_metrics_close(jax_metrics, torch_metrics, f'task {task} step {k}')
    helpers.assert_states_close(jax_ts, torch_ts, what=f'{name} task {task} steps')
    jax_chunk, torch_chunk = helpers.stack(batches)
    jax_ts, jax_state = end_task(jax_ts, jax_state, jax_chunk)
    torch_ts, torch_state = torch_algo.end_task(torch_ts, torch_state, torch_chunk)
    helpers.assert_states_close(jax_ts, torch_ts, what=f'{name} task {task} end_task')
    assert_algo_states_close(jax_state, torch_state, f'{name} task {task}')
  if name == 'rwalk':
    assert float(jax_metrics['penalty']) > 0  # the penalty of task 0 acted in task 1
    assert any(np.any(np.asarray(s) != 0) for s in jax.tree.leaves(jax_state.scores))
  else:
    assert int(jax_metrics['buffer_size']) == 8 and float(jax_metrics['interference']) != 0
