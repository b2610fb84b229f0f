"""Every algorithm gives the same parameters on both backends.

From the same initial weights, the same batches (one of them partly padding)
and the same random numbers (the JAX keys drawn through `helpers.JaxRandom`,
so replay buffers store and sample the same slots), the JAX and PyTorch
algorithms are run side by side over class-incremental tasks (task k brings
classes 2k, 2k+1; the loss masks classes not seen yet). After every step the
metrics agree, after each task's steps and after its `end_task` the weights
and the algorithm's state (importances, anchors, buffers, La-MAML's learning
rates) agree to float32
rounding: rtol 1e-5, atol 1e-6. Dropout is off.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jcl import algorithms
from jcl import specs
from jcl.torch import algorithms as torch_algorithms
from jcl.torch import convert

from tests.small import small_spec
from tests.torch import helpers

INPUT_SHAPE, NUM_CLASSES, BATCH = (6,), 6, 6
# XLA's cheap compilation: these tiny programs run once, compiling them dominates.
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}

# Case -> (algorithm, overrides of its small hyperparameters in `tests.small`).
CASES = {
  'naive': ('naive', {}),
  'joint': ('joint', {}),
  'ewc': ('ewc', dict(ewc_lambda=40.0)),
  'online_ewc_true_fisher': ('ewc', dict(ewc_lambda=40.0, online=True, gamma=0.8, fisher='true')),
  'si': ('si', dict(si_lambda=2.0)),
  'mas': ('mas', dict(mas_lambda=2.0)),
  'lfl': ('lfl', dict(lfl_lambda=0.5)),
  'er_reservoir': ('er', dict(replay_batch_size=5)),
  'er_class_balanced': ('er', dict(replay_batch_size=5, policy='class_balanced')),
  'er_per_task': ('er', dict(replay_batch_size=5, policy='per_task')),
  'der': ('der', dict(replay_batch_size=5, alpha=0.5)),
  'derpp': ('derpp', dict(replay_batch_size=5, alpha=0.5, beta=0.7)),
  'agem': ('agem', dict(memory_per_task=5)),
  'gem': ('gem', dict(memory_per_task=5, margin=0.5)),
  'lamaml': ('lamaml', {}),
  'sync_lamaml_second_order': (
    'lamaml',
    dict(sync_update=True, second_order=True, inner_grad_clip=0.5),
  ),
}
TASKS = {'agem': 3, 'gem': 3}  # more previous tasks: several constraints


def task_batches(task, steps=3):
  """Batches of task `task`'s two classes; the first one only 4/6 real samples."""
  batches = []
  for k in range(steps):
    jax_batch, torch_batch = helpers.random_batch(
      100 * task + k, BATCH, INPUT_SHAPE, 2, task=task, real=4 if k == 0 else BATCH
    )
    jax_batch = jax_batch._replace(y=jax_batch.y + 2 * task)
    torch_batch = torch_batch._replace(y=torch_batch.y + 2 * task)
    batches.append((jax_batch, torch_batch))
  return batches


def seen_classes(task):
  return np.arange(NUM_CLASSES) < 2 * (task + 1)


def assert_buffers_close(jax_buffer, torch_buffer, what):
  for field in (
    'x',
    'y',
    't',
    'logits',
    'valid',
    'seen',
    'class_counts',
    'task_seen',
    'class_seen',
    'class_full',
  ):
    np.testing.assert_allclose(
      helpers.as_numpy(getattr(torch_buffer, field)),
      np.asarray(getattr(jax_buffer, field)),
      rtol=helpers.RTOL,
      atol=helpers.ATOL,
      err_msg=f'{what} buffer.{field}',
    )


def assert_algo_states_close(jax_state, torch_state, what):
  """Algorithm states field by field: parameter-shaped entries through the
  converter, replay buffers slot by slot."""
  for field, value in torch_state._asdict().items():
    jax_value = getattr(jax_state, field)
    if field == 'buffer':
      assert_buffers_close(jax_value, value, what)
    elif isinstance(value, dict):
      helpers.assert_trees_close(
        jax_value, convert.torch_to_flax(value)['params'], what=f'{what} {field}'
      )
    elif isinstance(value, tuple):
      assert_algo_states_close(jax_value, value, f'{what} {field}')
    else:
      np.testing.assert_allclose(
        helpers.as_numpy(value), np.asarray(jax_value), err_msg=f'{what} {field}'
      )


@pytest.mark.parametrize('case', sorted(CASES))
def test_same_weights_after_steps_and_end_task(case):
  name, hyperparameters = CASES[case]
  spec = small_spec(name, **hyperparameters)
  num_tasks = TASKS.get(case, 2)
  context = (INPUT_SHAPE, NUM_CLASSES, num_tasks)
  jax_algo = algorithms.build(spec, algorithms.Context(*context))
  torch_algo = torch_algorithms.build(spec, torch_algorithms.Context(*context))
  jax_ts, torch_ts = helpers.make_states('mlp', INPUT_SHAPE, NUM_CLASSES, widths=(16,))
  jax_state, torch_state = jax_algo.init(jax_ts, jax.random.PRNGKey(1)), torch_algo.init(torch_ts)
  step = jax.jit(jax_algo.step, compiler_options=FAST_COMPILE)
  end_task = jax.jit(jax_algo.end_task, compiler_options=FAST_COMPILE)
  projected = 0.0
  for task in range(num_tasks):
    jax_ts = jax_ts.replace(class_mask=jnp.asarray(seen_classes(task)))
    torch_ts.class_mask = torch.from_numpy(seen_classes(task))
    jax_ts, jax_state = jax_algo.begin_task(jax_ts, jax_state, task)
    torch_ts, torch_state = torch_algo.begin_task(torch_ts, torch_state, task)
    batches = task_batches(task)
    for k, (jax_batch, torch_batch) in enumerate(batches):
      jax_ts, jax_state, jax_metrics = step(jax_ts, jax_batch, jax_state)
      torch_ts, torch_state, torch_metrics = torch_algo.step(torch_ts, torch_batch, torch_state)
      helpers.assert_metrics_close(jax_metrics, torch_metrics, f'task {task} step {k}')
      projected += float(jax_metrics.get('projected', 0.0))
    helpers.assert_states_close(jax_ts, torch_ts, what=f'{case} task {task} steps')
    jax_chunk, torch_chunk = helpers.stack(batches)
    jax_ts, jax_state = end_task(jax_ts, jax_state, jax_chunk)
    torch_ts, torch_state = torch_algo.end_task(torch_ts, torch_state, torch_chunk)
    helpers.assert_states_close(jax_ts, torch_ts, what=f'{case} task {task} end_task')
    assert_algo_states_close(jax_state, torch_state, f'{case} task {task}')
  if name in ('agem', 'gem'):
    assert projected > 0  # the projection was exercised


REGIMES = {
  'sgd_momentum_decay_clip': specs.OptimizerSpec(
    learning_rate=0.2,
    momentum=0.9,
    weight_decay=1e-2,
    lr_decay=0.5,
    min_lr=0.06,
    reinit_per_task=False,
    grad_clip_norm=0.5,
  ),
  'adam_reinit': specs.OptimizerSpec(
    name='adam', learning_rate=0.01, weight_decay=1e-3, grad_clip_norm=1.0
  ),
}


@pytest.mark.parametrize('regime', sorted(REGIMES))
def test_optimizer_regimes_agree_over_tasks(regime):
  """Momentum, weight decay, clipping, the per-task decay with its floor and
  the optimizer reset (or not) at task starts, on Naive over three tasks."""
  optimizer = REGIMES[regime]
  spec = specs.NaiveSpec()
  jax_algo, torch_algo = algorithms.build(spec), torch_algorithms.build(spec)
  jax_ts, torch_ts = helpers.make_states('mlp', INPUT_SHAPE, NUM_CLASSES, optimizer, widths=(16,))
  step = jax.jit(jax_algo.step, compiler_options=FAST_COMPILE)
  jax_state, torch_state = jax_algo.init(jax_ts, None), torch_algo.init(torch_ts)
  for task in range(3):
    jax_ts, jax_state = jax_algo.begin_task(jax_ts, jax_state, task)
    torch_ts, torch_state = torch_algo.begin_task(torch_ts, torch_state, task)
    assert torch_ts.learning_rate == float(jax_ts.learning_rate)
    for jax_batch, torch_batch in task_batches(task, steps=4):
      jax_ts, jax_state, _ = step(jax_ts, jax_batch, jax_state)
      torch_ts, torch_state, _ = torch_algo.step(torch_ts, torch_batch, torch_state)
    helpers.assert_states_close(jax_ts, torch_ts, what=f'{regime} task {task}')
  assert torch_ts.learning_rate == pytest.approx(
    max(optimizer.learning_rate * optimizer.lr_decay**2, optimizer.min_lr), rel=1e-6
  )


def test_batchnorm_model_agrees():
  """The reduced ResNet-18 (BatchNorm) under LFL: the statistics of the training
  forward are kept, the frozen model runs in evaluation mode on its own."""
  spec = specs.LFLSpec(lfl_lambda=0.5)
  shape = (16, 16, 3)
  jax_algo, torch_algo = algorithms.build(spec), torch_algorithms.build(spec)
  jax_ts, torch_ts = helpers.make_states(
    'resnet18_reduced', shape, NUM_CLASSES, specs.OptimizerSpec(learning_rate=0.05), nf=4
  )
  step = jax.jit(jax_algo.step, compiler_options=FAST_COMPILE)
  jax_state, torch_state = jax_algo.init(jax_ts, None), torch_algo.init(torch_ts)
  for task in range(2):
    jax_ts, jax_state = jax_algo.begin_task(jax_ts, jax_state, task)
    torch_ts, torch_state = torch_algo.begin_task(torch_ts, torch_state, task)
    for k in range(2):
      jax_batch, torch_batch = helpers.random_batch(10 * task + k, 8, shape, NUM_CLASSES, task)
      jax_ts, jax_state, jax_metrics = step(jax_ts, jax_batch, jax_state)
      torch_ts, torch_state, torch_metrics = torch_algo.step(torch_ts, torch_batch, torch_state)
      np.testing.assert_allclose(
        float(torch_metrics['penalty']), float(jax_metrics['penalty']), rtol=1e-4, atol=1e-6
      )
    helpers.assert_states_close(jax_ts, torch_ts, rtol=1e-4, atol=1e-5, what=f'lfl task {task}')
    jax_ts, jax_state = jax_algo.end_task(jax_ts, jax_state, None)
    torch_ts, torch_state = torch_algo.end_task(torch_ts, torch_state, None)
  assert float(jax_metrics['penalty']) > 0


def test_lfl_frozen_head_agrees_under_momentum_and_weight_decay():
  """LFL over two class-incremental tasks with momentum, weight decay and
  clipping: both backends keep the last layer of task 0 bit for bit in task 1
  (the momentum and the decay would move it) and agree on the rest."""
  spec = specs.LFLSpec(lfl_lambda=0.5)
  optimizer = specs.OptimizerSpec(
    learning_rate=0.1, momentum=0.9, weight_decay=0.01, grad_clip_norm=1.0, reinit_per_task=False
  )
  jax_algo, torch_algo = algorithms.build(spec), torch_algorithms.build(spec)
  jax_ts, torch_ts = helpers.make_states('mlp', INPUT_SHAPE, NUM_CLASSES, optimizer, widths=(16,))
  step = jax.jit(jax_algo.step, compiler_options=FAST_COMPILE)
  jax_state, torch_state = jax_algo.init(jax_ts, None), torch_algo.init(torch_ts)
  heads = []
  for task in range(2):
    jax_ts = jax_ts.replace(class_mask=jnp.asarray(seen_classes(task)))
    torch_ts.class_mask = torch.from_numpy(seen_classes(task))
    jax_ts, jax_state = jax_algo.begin_task(jax_ts, jax_state, task)
    torch_ts, torch_state = torch_algo.begin_task(torch_ts, torch_state, task)
    for jax_batch, torch_batch in task_batches(task):
      jax_ts, jax_state, _ = step(jax_ts, jax_batch, jax_state)
      torch_ts, torch_state, _ = torch_algo.step(torch_ts, torch_batch, torch_state)
    helpers.assert_states_close(jax_ts, torch_ts, what=f'lfl task {task}')
    heads.append(
      (
        {k: np.array(v) for k, v in jax_ts.params['head'].items()},
        {k: helpers.as_numpy(v).copy() for k, v in torch_ts.model.head.state_dict().items()},
      )
    )
    jax_ts, jax_state = jax_algo.end_task(jax_ts, jax_state, None)
    torch_ts, torch_state = torch_algo.end_task(torch_ts, torch_state, None)
    assert_algo_states_close(jax_state, torch_state, f'lfl task {task}')
  (jax_first, torch_first), (jax_second, torch_second) = heads
  for name in ('kernel', 'bias'):
    np.testing.assert_array_equal(jax_second[name], jax_first[name], err_msg=name)
  for name in ('weight', 'bias'):
    np.testing.assert_array_equal(torch_second[name], torch_first[name], err_msg=name)


def test_lfl_penalty_is_zero_with_dropout_where_the_model_has_not_moved():
  """The current features are taken in evaluation mode, as the old ones: with
  dropout on, the penalty is still 0 at the previous task's parameters."""
  spec = specs.LFLSpec(lfl_lambda=5.0)
  _, torch_ts = helpers.make_states('mlp', INPUT_SHAPE, NUM_CLASSES, widths=(16,), dropout=0.5)
  algo = torch_algorithms.build(spec)
  _, state = algo.end_task(torch_ts, algo.init(torch_ts), None)
  _, batch = helpers.random_batch(0, BATCH, INPUT_SHAPE, NUM_CLASSES)
  _, _, metrics = algo.step(torch_ts, batch, state)
  assert float(metrics['penalty']) == 0.0 and float(metrics['loss']) > 0
