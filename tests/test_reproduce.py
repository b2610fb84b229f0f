"""experiments/reproduce.py: seeds, summary, and a --check that can fail."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import reproduce

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Naive on 2-task class-incremental Split MNIST from the bundled sample:
# seconds to run; its accuracy lies in [0, 100], so 50 +- 50 always passes.
TINY_CONFIG = """
from jcl.config import default_config


def get_config():
  config = default_config('split_mnist_class')
  config.benchmark.num_tasks = 2
  config.benchmark.samples_per_task = 100
  config.benchmark.source = 'sample'
  config.model.widths = (16,)
  config.train.chunk_steps = 5
  config.train.eval_batch_size = 500
  config.log.loggers = ()
  config.log.progress = False
  config.checkpoint.enabled = False
  config.expected = dict(metric='acc', value=50.0, tolerance=50.0, source='test')
  return config
"""


@pytest.fixture(scope='module')
def tiny_config_path(tmp_path_factory):
  path = tmp_path_factory.mktemp('configs') / 'tiny.py'
  path.write_text(TINY_CONFIG)
  return str(path)


def load(path):
  spec = importlib.util.spec_from_file_location('tiny_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_check_fails_on_either_side_of_the_tolerance():
  assert reproduce.check(75.5, 77.42, 2.0)
  assert reproduce.check(79.0, 77.42, 2.0)
  assert not reproduce.check(75.0, 77.42, 2.0)  # too low
  assert not reproduce.check(79.5, 77.42, 2.0)  # too high
  mean, std = reproduce.mean_std([1.0, 2.0, 3.0])
  assert mean == 2.0 and std == 1.0  # sample std (ddof=1)
  assert reproduce.mean_std([4.0]) == (4.0, 0.0)


def test_paper_bti_averages_over_all_tasks():
  r = np.array([[0.9, 0.8, 0.7], [0.1, 0.9, 0.6], [0.1, 0.1, 1.0]])
  np.testing.assert_allclose(reproduce.paper_bti(r), ((0.7 - 0.9) + (0.6 - 0.9) + 0) / 3)


def records(*values):
  return [
    {
      'seed': i,
      'acc': v,
      'bti': -5.0,
      'bwt': -5.0,
      'learning_accuracy': 90.0,
      'train_seconds': 1.0,
      'eval_seconds': 1.0,
      'wall_seconds': 3.0,
      'cpu_seconds': 3.0,
    }
    for i, v in enumerate(values)
  ]


def test_summary_passes_and_fails_against_the_expected_value(tiny_config_path):
  config = load(tiny_config_path)
  expected = reproduce.expected_entry(config)  # 50 +- 50
  assert expected['metric'] == 'acc' and expected['value'] == 50.0
  summary = reproduce.summarize(records(60.0, 70.0), expected)
  assert summary['acc']['mean'] == 65.0 and summary['check']['passed']
  assert 'PASS' in reproduce.format_report(summary, expected, 2)
  too_low = reproduce.expected_entry(config, value=90.0, tolerance=20.0)
  assert not reproduce.summarize(records(60.0, 70.0), too_low)['check']['passed']
  too_high = reproduce.expected_entry(config, value=40.0, tolerance=20.0)
  failed = reproduce.summarize(records(60.0, 70.0), too_high)
  assert not failed['check']['passed']
  assert 'FAIL' in reproduce.format_report(failed, too_high, 2)
  with pytest.raises(ValueError, match='expected value'):
    del config.expected
    reproduce.expected_entry(config)


def test_replica_seeds_equal_separate_runs(tiny_config_path):
  """The default path (the seeds as replicas of one program, sequential on
  a CPU) gives each seed the numbers of its own separate run."""
  separate = reproduce.run_seeds(load(tiny_config_path), [3, 4], log=lambda _: None)
  replicas = reproduce.run_replicas(
    load(tiny_config_path), [3, 4], mode='sequential', log=lambda _: None
  )
  assert [r['seed'] for r in replicas] == [3, 4]
  for one, many in zip(separate, replicas):
    assert one['accuracy_matrix'] == many['accuracy_matrix'] and one['acc'] == many['acc']
    assert many['wall_seconds'] >= many['train_seconds'] > 0
  with pytest.raises(ValueError, match='consecutive'):
    reproduce.run_replicas(load(tiny_config_path), [0, 2])


def test_cli_runs_the_seeds_and_exits_non_zero_when_the_check_fails(tiny_config_path, tmp_path):
  """Two vmapped seeds of the tiny config, checked against an expected -60 +- 50
  that no accuracy can meet."""
  run = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.reproduce',
      f'--config={tiny_config_path}',
      '--seeds=2',
      '--mode=vmap',
      '--check',
      '--expected=-60',
      f'--workdir={tmp_path}',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert run.returncode == 1, run.stdout + run.stderr
  assert 'FAIL' in run.stdout and 'seed 1:' in run.stdout
  report = json.loads((tmp_path / 'reproduce.json').read_text())
  seeds = report['seeds']
  assert [s['seed'] for s in seeds] == [0, 1] and seeds[0]['acc'] != seeds[1]['acc']
  for s in seeds:
    assert 0 <= s['acc'] <= 100 and s['wall_seconds'] >= s['train_seconds'] > 0
    np.testing.assert_allclose(s['acc'], 100 * np.mean(np.array(s['accuracy_matrix'])[:, -1]))
  check = report['summary']['check']
  assert check['passed'] is False and check['expected'] == -60.0 and check['tolerance'] == 50.0
  np.testing.assert_allclose(report['summary']['acc']['mean'], np.mean([s['acc'] for s in seeds]))
  runs = json.loads((tmp_path / 'results.json').read_text())
  assert runs['mode'] == 'vmap' and [r['seed'] for r in runs['replicas']] == [0, 1]
