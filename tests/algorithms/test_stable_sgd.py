"""Stable SGD: the training regime reaches the model, the optimizer and the loop."""

import functools

import jax
import numpy as np
import pytest

from jcl import algorithms
from jcl import experiment
from jcl import specs
from jcl import train_state as ts_lib
from jcl.algorithms import base
from jcl.types import Batch

from configs import stable_sgd as stable_sgd_config

REGIME = dict(dropout=0.3, lr_decay=0.5, min_lr=0.01, batch_size=7)


def small_config(**algo):
  """configs/stable_sgd.py on 3 tasks of the bundled sample, with the model,
  optimizer and loop sections set to values the regime must override."""
  config = stable_sgd_config.get_config('rotated_mnist')
  config.benchmark.source = 'sample'
  config.benchmark.path = None
  config.benchmark.num_tasks = 3
  config.benchmark.samples_per_task = 64
  config.model.widths = (32,)
  config.model.dropout = 0.0
  config.optimizer.learning_rate = 0.1
  config.optimizer.lr_decay = 1.0
  config.optimizer.min_lr = 0.0
  config.train.batch_size = 64
  config.algo = dict(name='stable_sgd', **algo)
  return config


@functools.lru_cache(maxsize=None)
def built():
  return experiment.build(small_config(**REGIME))


def test_regime_reaches_the_model_the_optimizer_and_the_loop():
  parts = built()
  assert parts.model.dropout == 0.3
  assert parts.model.widths == (32,)  # the rest is kept
  assert parts.train_config.batch_size == 7
  assert parts.train_config.epochs == 1
  regime = parts.train_state.regime
  assert (regime.lr_decay, regime.min_lr) == (0.5, 0.01)
  assert (regime.learning_rate, regime.momentum) == (0.1, 0.8)
  algo, state = parts.algorithm, parts.train_state
  for task, want in ((0, 0.1), (1, 0.05), (2, 0.025), (4, 0.01)):  # floored at min_lr
    task_state, _ = algo.begin_task(state, None, task)
    np.testing.assert_allclose(
      float(task_state.opt_state.hyperparams['learning_rate']), want, rtol=1e-6
    )


def test_step_is_the_naive_step():
  parts = built()
  state, benchmark = parts.train_state, parts.benchmark
  split = benchmark.tasks[0].train
  batch = Batch(split.x[:7], split.y[:7], split.t[:7], np.ones(7, np.float32))
  stable, _, m1 = jax.jit(parts.algorithm.step)(state, batch, None)
  naive, _, m2 = jax.jit(algorithms.naive.make().step)(state, batch, None)
  np.testing.assert_allclose(m1['loss'], m2['loss'])
  for a, b in zip(jax.tree.leaves(stable.params), jax.tree.leaves(naive.params)):
    np.testing.assert_array_equal(a, b)


def test_dropout_is_on_in_training_steps_and_off_in_evaluation():
  parts = built()
  state = parts.train_state
  split = parts.benchmark.tasks[1].test
  x, t = split.x[:256], split.t[:256]
  train_mode = jax.jit(
    lambda s, rng: ts_lib.apply_model(s, s.params, x, t, train=True, rng=rng, return_features=True)[
      0
    ]
  )
  logits_a, features_a = train_mode(state, state.step_rng())
  later = state.replace(step=state.step + 1)
  logits_b, _ = train_mode(later, later.step_rng())
  assert not np.allclose(logits_a, logits_b)  # a fresh mask every step
  # About `dropout` of the hidden units are dropped (relu zeros come on top).
  evaluation, features = ts_lib.apply_model(
    state, state.params, x, t, train=False, return_features=True
  )[0]
  active = np.asarray(features) > 0
  dropped = np.mean(np.asarray(features_a)[active] == 0)
  assert 0.25 < dropped < 0.35
  # Evaluation: deterministic, the same as the model without dropout.
  again = ts_lib.apply_model(state, state.params, x, t, train=False)[0]
  np.testing.assert_array_equal(evaluation, again)
  plain = experiment.build(small_config(**{**REGIME, 'dropout': 0.0})).train_state
  no_dropout = ts_lib.apply_model(plain, state.params, x, t, train=False)[0]
  np.testing.assert_allclose(evaluation, no_dropout, rtol=1e-6)
  # The training loss of a step uses the dropped-out network.
  batch = Batch(x, split.y[:256], t, np.ones(256, np.float32))
  train_loss = float(base.task_loss(state.params, state, batch, state.step_rng())[0])
  eval_loss = float(base.cross_entropy(evaluation, batch.y, batch.mask))
  assert abs(train_loss - eval_loss) > 1e-3


def test_a_model_without_dropout_is_refused():
  config = small_config(**REGIME)
  config.model = dict(name='resnet18_reduced')
  with pytest.raises(ValueError, match='dropout'):
    experiment.build(config)


def test_spec_rejects_meaningless_values():
  for field, value in (('dropout', 1.0), ('lr_decay', 0.0), ('batch_size', 0), ('min_lr', -1.0)):
    with pytest.raises(ValueError, match=field):
      specs.make_spec('stable_sgd', **{field: value})
  with pytest.raises(ValueError, match='min_lr'):  # a floor above the learning rate
    experiment.build(small_config(**{**REGIME, 'min_lr': 0.5}))
