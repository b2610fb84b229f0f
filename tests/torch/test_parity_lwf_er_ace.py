"""LwF and ER-ACE give the same parameters on both backends.

As tests/torch/test_parity.py: from the same initial weights, the same batches
(the first of each task partly padding) and the same replay draws (the JAX
keys through `helpers.JaxRandom`), both backends run three class-incremental
tasks (task k brings classes 2k, 2k+1). After every step the metrics agree,
after each task's steps and after its `end_task` the weights and the
algorithm states (the previous model and its classes; the replay buffer) agree
to float32 rounding (rtol 1e-5, atol 1e-6). LwF runs a schedule of alphas
under momentum, weight decay and clipping; ER-ACE runs with the loss masking
the classes not seen yet and with every unit open (Mammoth's protocol, where
the units from the largest seen class on stay in the incoming batch's loss).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jcl import algorithms
from jcl import specs
from jcl.torch import algorithms as torch_algorithms

from tests.torch import helpers
from tests.torch.test_parity import FAST_COMPILE
from tests.torch.test_parity import INPUT_SHAPE
from tests.torch.test_parity import NUM_CLASSES
from tests.torch.test_parity import assert_algo_states_close
from tests.torch.test_parity import seen_classes
from tests.torch.test_parity import task_batches

NUM_TASKS = 3
MOMENTUM = specs.OptimizerSpec(
  learning_rate=0.1, momentum=0.9, weight_decay=0.01, grad_clip_norm=1.0, reinit_per_task=False
)

# Case -> (spec, optimizer, mask the classes not seen yet).
CASES = {
  'lwf': (specs.LwFSpec(alpha=(0.5, 3.0), temperature=2.0), MOMENTUM, True),
  'er_ace_masked': (specs.ERACESpec(memory_size=8, replay_batch_size=5), None, True),
  'er_ace_all_units': (specs.ERACESpec(memory_size=8, replay_batch_size=5), None, False),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_same_weights_after_steps_and_end_task(case):
  spec, optimizer, mask_unseen = CASES[case]
  context = algorithms.Context(INPUT_SHAPE, NUM_CLASSES, NUM_TASKS)
  jax_algo, torch_algo = algorithms.build(spec, context), torch_algorithms.build(spec, context)
  jax_ts, torch_ts = helpers.make_states('mlp', INPUT_SHAPE, NUM_CLASSES, optimizer, widths=(16,))
  jax_state, torch_state = jax_algo.init(jax_ts, jax.random.PRNGKey(1)), torch_algo.init(torch_ts)
  step = jax.jit(jax_algo.step, compiler_options=FAST_COMPILE)
  end_task = jax.jit(jax_algo.end_task, compiler_options=FAST_COMPILE)
  exercised = 0.0  # the penalty (LwF) or the replayed loss (ER-ACE) was not 0
  for task in range(NUM_TASKS):
    class_mask = seen_classes(task) if mask_unseen else np.ones(NUM_CLASSES, bool)
    jax_ts = jax_ts.replace(class_mask=jnp.asarray(class_mask))
    torch_ts.class_mask = torch.from_numpy(class_mask)
    jax_ts, jax_state = jax_algo.begin_task(jax_ts, jax_state, task)
    torch_ts, torch_state = torch_algo.begin_task(torch_ts, torch_state, task)
    batches = task_batches(task)
    for k, (jax_batch, torch_batch) in enumerate(batches):
      jax_ts, jax_state, jax_metrics = step(jax_ts, jax_batch, jax_state)
      torch_ts, torch_state, torch_metrics = torch_algo.step(torch_ts, torch_batch, torch_state)
      helpers.assert_metrics_close(jax_metrics, torch_metrics, f'{case} task {task} step {k}')
      exercised += float(jax_metrics.get('penalty', jax_metrics.get('replay_loss')))
    helpers.assert_states_close(jax_ts, torch_ts, what=f'{case} task {task} steps')
    jax_chunk, torch_chunk = helpers.stack(batches)
    jax_ts, jax_state = end_task(jax_ts, jax_state, jax_chunk)
    torch_ts, torch_state = torch_algo.end_task(torch_ts, torch_state, torch_chunk)
    helpers.assert_states_close(jax_ts, torch_ts, what=f'{case} task {task} end_task')
    assert_algo_states_close(jax_state, torch_state, f'{case} task {task}')
  assert exercised > 0
