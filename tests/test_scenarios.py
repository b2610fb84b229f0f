"""Every algorithm runs in task-, domain- and class-incremental learning; a
method that does not apply to a scenario is refused with a clear error."""

import dataclasses
from typing import ClassVar

import numpy as np
import pytest

from jcl import algorithms
from jcl import experiment
from jcl import specs
from jcl.config import default_config

from tests.small import small_hparams

SCENARIOS = {
  'class': dict(name='split_mnist', scenario='class'),
  'task_masked': dict(name='split_mnist', scenario='task'),
  'task_multi_head': dict(name='split_mnist', scenario='task', multi_head=True),
  'domain': dict(name='split_mnist', scenario='domain'),
}


def tiny_config(algo: str, scenario: str):
  config = default_config('split_mnist')
  config.benchmark = dict(SCENARIOS[scenario], num_tasks=2, samples_per_task=100, source='sample')
  config.model.widths = (16,)
  config.algo = dict(name=algo, **small_hparams(algo))
  config.train.batch_size = 10
  config.train.chunk_steps = 5
  config.train.eval_batch_size = 500
  config.log.loggers = ()
  config.log.progress = False
  return config


@pytest.mark.parametrize('scenario', sorted(SCENARIOS))
@pytest.mark.parametrize('algo', algorithms.names())
def test_algorithm_runs_in_scenario(algo, scenario):
  config = tiny_config(algo, scenario)
  if scenario.split('_')[0] not in specs.SPECS[algo].scenarios:
    with pytest.raises(ValueError, match=f'{algo} does not apply to'):
      experiment.build(config)
    return
  result = experiment.run(config)
  assert result.accuracy_matrix.shape == (2, 2)
  assert np.all(np.isfinite(result.accuracy_matrix))
  assert (result.task_il_accuracy_matrix is not None) == (scenario == 'class')


@specs.register_spec
@dataclasses.dataclass(frozen=True)
class _TaskOnlySpec(specs.AlgorithmSpec):
  name: ClassVar[str] = 'test_task_only'
  scenarios: ClassVar[tuple[str, ...]] = ('task',)


def test_inapplicable_scenario_is_refused_clearly():
  config = tiny_config('naive', 'class')
  config.algo = dict(name='test_task_only')
  with pytest.raises(ValueError, match='test_task_only does not apply to class-incremental'):
    experiment.build(config)
