"""Property tests of LFL as the paper defines it (Jung et al., AAAI 2018):
a frozen last layer after the first task, the Euclidean loss
`1/2 ||h - h_old||^2` on evaluation-mode features."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcl import models
from jcl import specs
from jcl import train_state as ts_lib
from jcl.algorithms import lfl
from jcl.algorithms import naive

from tests.algorithms.conftest import INPUT_DIM, NUM_CLASSES, random_batch, tiny_state

# XLA's cheap compilation: these tiny programs run a few times, compiling them dominates.
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}

# Momentum, weight decay and clipping: a frozen unit must stay put through all of them.
REGIME = specs.OptimizerSpec(
  learning_rate=0.1, momentum=0.9, weight_decay=0.01, grad_clip_norm=1.0, reinit_per_task=False
)


def jit(fn):
  return jax.jit(fn, compiler_options=FAST_COMPILE)


def make_state(model=None, regime=REGIME, num_classes=NUM_CLASSES):
  model = model or models.MLP(widths=(8,), num_classes=num_classes)
  return ts_lib.create_train_state(model, regime, jax.random.PRNGKey(0), (INPUT_DIM,), num_classes)


def labelled(seed, labels, task=0, size=8):
  """A random batch whose labels cycle through `labels`."""
  batch = random_batch(seed, size, task)
  return batch._replace(y=jnp.asarray(np.resize(labels, size), jnp.int32))


def run_task(algo, state, algo_state, task, batches, class_mask=None):
  """`begin_task`, the steps, `end_task`; returns the states before `end_task` too."""
  if class_mask is not None:
    state = state.replace(class_mask=jnp.asarray(class_mask))
  state, algo_state = algo.begin_task(state, algo_state, task)
  step = jit(algo.step)
  for batch in batches:
    state, algo_state, _ = step(state, batch, algo_state)
  return (state, algo_state), algo.end_task(state, algo_state, None)


def head(state):
  return {k: np.asarray(v) for k, v in state.params['head'].items()}


def test_head_is_bit_identical_after_the_second_task():
  """Domain-incremental: the first task has every class, so the whole last
  layer is frozen, as in the paper; the layers below it still learn."""
  algo = lfl.make(specs.LFLSpec(lfl_lambda=1.0))
  state = make_state()
  algo_state, initial = algo.init(state, None), head(state)
  first = [labelled(k, range(NUM_CLASSES)) for k in range(3)]
  (_, _), (state, algo_state) = run_task(algo, state, algo_state, 0, first)
  assert not np.array_equal(head(state)['kernel'], initial['kernel'])  # task 0 trains it
  after_first = state
  second = [labelled(10 + k, range(NUM_CLASSES), task=1) for k in range(4)]
  (state, _), _ = run_task(algo, state, algo_state, 1, second)
  for name, value in head(state).items():
    np.testing.assert_array_equal(value, head(after_first)[name], err_msg=name)
  moved = np.asarray(state.params['Dense_0']['kernel']) - after_first.params['Dense_0']['kernel']
  assert np.abs(moved).max() > 1e-3


@pytest.mark.parametrize('multi_head', [False, True])
def test_head_stays_frozen_in_class_and_task_incremental_streams(multi_head):
  """Class-incremental (one head, classes {0, 1} then {2}) and multi-head
  task-incremental (head 0, then head 1): the whole last layer is frozen
  after the first task, as in the paper and Avalanche; the units of the new
  classes keep their initial weights and the layers below learn to use them."""
  algo = lfl.make(specs.LFLSpec(lfl_lambda=1.0))
  if multi_head:
    state = make_state(models.MLP(widths=(8,), num_classes=2, num_heads=2), num_classes=2)
    tasks = [([0, 1], None), ([0, 1], None)]
  else:
    state = make_state()
    tasks = [([0, 1], [True, True, False]), ([2], [True, True, True])]
  algo_state = algo.init(state, None)
  (_, _), (state, algo_state) = run_task(
    algo, state, algo_state, 0, [labelled(k, tasks[0][0]) for k in range(3)], tasks[0][1]
  )
  before, hidden = head(state), np.asarray(state.params['Dense_0']['kernel'])
  second = [labelled(10 + k, tasks[1][0], task=1) for k in range(3)]
  (state, _), _ = run_task(algo, state, algo_state, 1, second, tasks[1][1])
  for name, value in head(state).items():
    np.testing.assert_array_equal(value, before[name], err_msg=name)
  assert np.abs(np.asarray(state.params['Dense_0']['kernel']) - hidden).max() > 1e-3


def features(state, params, batch):
  (_, h), _ = ts_lib.apply_model(state, params, batch.x, batch.t, train=False, return_features=True)
  return np.asarray(h, np.float64)


def test_penalty_is_the_papers_euclidean_loss():
  """`lfl_lambda * 1/B sum_b 1/2 ||h_b - h_old_b||^2`; 0 in the first task and
  while the features equal the previous model's."""
  algo = lfl.make(specs.LFLSpec(lfl_lambda=2.0))
  state = tiny_state()
  algo_state = algo.init(state, None)
  batch = random_batch(seed=9)
  step = jit(algo.step)
  assert float(step(state, batch, algo_state)[2]['penalty']) == 0.0  # first task: inactive
  _, algo_state = algo.end_task(state, algo_state, None)
  assert float(step(state, batch, algo_state)[2]['penalty']) == 0.0  # the model has not moved
  moved = state.replace(params=jax.tree.map(lambda p: p + 0.1, state.params))
  difference = features(moved, moved.params, batch) - features(state, state.params, batch)
  want = 2.0 * np.mean(0.5 * np.sum(difference**2, -1))
  np.testing.assert_allclose(float(step(moved, batch, algo_state)[2]['penalty']), want, rtol=1e-5)


def test_features_are_taken_in_evaluation_mode():
  """With dropout, training-mode features differ from the old model's even
  where the network has not moved; the paper's penalty is then 0, and its
  gradient too: LFL's step is the plain step on everything but the head."""
  model = models.MLP(widths=(16,), num_classes=NUM_CLASSES, dropout=0.5)
  state = make_state(model, specs.OptimizerSpec(learning_rate=0.1))
  algo, plain = lfl.make(specs.LFLSpec(lfl_lambda=5.0)), naive.make()
  _, algo_state = algo.end_task(state, algo.init(state, None), None)
  batch = random_batch(seed=3)
  lfl_state, _, metrics = jit(algo.step)(state, batch, algo_state)
  plain_state, _, _ = jit(plain.step)(state, batch, plain.init(state, None))
  assert float(metrics['penalty']) == 0.0
  np.testing.assert_allclose(
    lfl_state.params['Dense_0']['kernel'], plain_state.params['Dense_0']['kernel'], rtol=1e-6
  )


def test_a_model_without_a_head_is_refused_clearly():
  with pytest.raises(ValueError, match=r"needs it as params\['head'\]"):
    lfl.check_head({'Dense_0': {'kernel': jnp.zeros((2, 2))}, 'out': {'bias': jnp.zeros(2)}})
