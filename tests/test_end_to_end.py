"""End to end on real MNIST: the regularisation family against Naive and Joint.

Permuted MNIST, 10 tasks, 5000 training samples per task (full 10k test set
per task), MLP 2x100, SGD lr 0.01, batch 10, one epoch: the configs in
`configs/` exactly, with `benchmark.path` pointed at real MNIST. Figures seen
when the strengths were chosen (ACC / average forgetting):

  naive 77.1 / 13.9   joint 92.0 / -0.2   ewc(2) 80.1 / 10.1
  online ewc(20, 0.8) 83.6 / 4.9   si(0.5) 83.2 / 6.0   mas(0.05) 82.2 / 3.6
  lfl(0.02) 81.4 / 8.5 (head frozen after task 0; lambda 0: 80.3 / 10.0)
"""

import importlib

import pytest

from jcl import experiment

from tests.mnist import require_mnist

pytestmark = pytest.mark.slow

_RESULTS = {}


def permuted_result(config_name):
  if config_name not in _RESULTS:
    config = importlib.import_module(f'configs.{config_name}').get_config('permuted_mnist')
    config.benchmark.path = require_mnist()
    config.benchmark.samples_per_task = 5000
    config.log.loggers = ()
    config.log.progress = False
    _RESULTS[config_name] = experiment.run(config)
  return _RESULTS[config_name]


@pytest.mark.parametrize('name', ['ewc', 'online_ewc', 'si', 'mas', 'lfl'])
def test_regularisation_beats_naive_on_permuted_mnist(name):
  naive, method = permuted_result('naive').summary, permuted_result(name).summary
  print(
    f'{name}: acc {method["acc"]:.3f} forgetting {method["forgetting"]:.3f}; '
    f'naive: acc {naive["acc"]:.3f} forgetting {naive["forgetting"]:.3f}'
  )
  assert method['acc'] >= naive['acc'] + 0.02
  assert method['forgetting'] <= naive['forgetting'] - 0.03


def test_joint_is_the_upper_bound_on_permuted_mnist():
  joint = permuted_result('joint').summary
  for name in ('naive', 'ewc', 'online_ewc', 'si', 'mas', 'lfl'):
    assert joint['acc'] > permuted_result(name).summary['acc'] + 0.03, name
  assert joint['forgetting'] < 0.02


def test_naive_forgets_on_permuted_mnist():
  result = permuted_result('naive')
  assert result.summary['learning_accuracy'] > 0.88  # it learns each task...
  assert result.summary['forgetting'] > 0.08  # ...and forgets them


def test_lfl_learns_split_mnist():
  from configs import lfl

  config = lfl.get_config('split_mnist')
  config.benchmark.path = require_mnist()
  config.benchmark.samples_per_task = 2000
  config.log.loggers = ()
  config.log.progress = False
  result = experiment.run(config)
  # Task-incremental Split MNIST: 2-way tasks, chance is 50%.
  assert result.summary['learning_accuracy'] > 0.95
  assert result.summary['acc'] > 0.85
