"""The experiment binary and config plumbing: results, errors, determinism."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jcl import experiment
from jcl import specs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(algo='ewc', **algo_kwargs):
  from configs import quickstart

  config = quickstart.get_config()
  config.benchmark.num_tasks = 3
  config.benchmark.samples_per_task = 600
  config.train.epochs = 1
  config.algo = dict(name=algo, **algo_kwargs)
  config.log.progress = False
  config.log.loggers = ('jsonl',)
  return config


def test_run_writes_results_and_is_deterministic(tmp_path):
  config = small_config('ewc', ewc_lambda=10.0)
  first = experiment.run(config, str(tmp_path / 'a'))
  second = experiment.run(config, str(tmp_path / 'b'))
  np.testing.assert_array_equal(first.accuracy_matrix, second.accuracy_matrix)
  for a, b in zip(jax_leaves(first.train_state.params), jax_leaves(second.train_state.params)):
    np.testing.assert_array_equal(a, b)
  results = json.loads((tmp_path / 'a' / 'results.json').read_text())
  assert np.array(results['accuracy_matrix']).shape == (3, 3)
  assert set(results['summary']) >= {'acc', 'bwt', 'fwt', 'forgetting'}
  assert results['config']['algo']['name'] == 'ewc'
  assert results['timings']['samples_seen'] == 3 * 600
  assert (tmp_path / 'a' / 'accuracy_matrix.png').stat().st_size > 1000
  assert (tmp_path / 'a' / 'task_accuracy.png').stat().st_size > 1000
  lines = (tmp_path / 'a' / 'metrics.jsonl').read_text().splitlines()
  assert any('eval/acc' in json.loads(line) for line in lines)
  other_seed = small_config('ewc', ewc_lambda=10.0)
  other_seed.seed = 1
  third = experiment.run(other_seed)
  assert not np.array_equal(first.accuracy_matrix, third.accuracy_matrix)


def jax_leaves(tree):
  import jax

  return jax.tree.leaves(tree)


def test_binary_runs_with_overrides(tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.train',
      '--config=configs/quickstart.py',
      f'--workdir={tmp_path}',
      '--config.benchmark.num_tasks=2',
      '--config.benchmark.samples_per_task=300',
      '--config.train.epochs=1',
      '--config.algo.ewc_lambda=5',
      '--config.log.progress=False',
      '--config.log.loggers=console,jsonl,csv',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'accuracy matrix' in out.stdout and 'acc ' in out.stdout
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['algorithm']['ewc_lambda'] == 5.0
  assert results['config']['benchmark']['samples_per_task'] == 300
  assert (tmp_path / 'metrics.csv').exists() and (tmp_path / 'metrics.jsonl').exists()


@pytest.mark.parametrize(
  'override, message',
  [
    ('--config.algo.name=nope', "unknown algorithm 'nope'"),
    ('--config.algo.ewc_lambda=-1', "invalid 'ewc_lambda'"),
    ('--config.optimizer.learning_rate=0', "invalid 'learning_rate'"),
    ('--config.benchmark.name=split_nothing', 'split_nothing'),
  ],
)
def test_binary_reports_bad_input_clearly(tmp_path, override, message):
  out = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.train',
      '--config=configs/quickstart.py',
      f'--workdir={tmp_path}',
      override,
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode != 0
  assert message in out.stderr


def test_unknown_hyperparameter_is_named():
  with pytest.raises(ValueError, match=r"ewc: unknown hyperparameter\(s\) \['lamda'\]"):
    specs.make_spec('ewc', lamda=1.0)


@pytest.mark.parametrize(
  'name, kwargs, field',
  [
    ('ewc', dict(ewc_lambda=-1.0), 'ewc_lambda'),
    ('ewc', dict(gamma=1.5), 'gamma'),
    ('ewc', dict(fisher='approx'), 'fisher'),
    ('si', dict(xi=0.0), 'xi'),
    ('si', dict(si_lambda=float('nan')), 'si_lambda'),
    ('mas', dict(mas_lambda=-0.1), 'mas_lambda'),
    ('lfl', dict(lfl_lambda=float('inf')), 'lfl_lambda'),
  ],
)
def test_spec_validation_names_the_field(name, kwargs, field):
  with pytest.raises(ValueError, match=f"invalid '{field}'"):
    specs.make_spec(name, **kwargs)


def test_nan_loss_is_reported_and_partial_results_kept(tmp_path):
  config = small_config('naive')
  config.optimizer.learning_rate = 1e6  # diverges
  with pytest.raises(FloatingPointError, match='non-finite training metrics'):
    experiment.run(config, str(tmp_path))
  results = json.loads((tmp_path / 'results.json').read_text())
  assert 'non-finite' in results['error']
