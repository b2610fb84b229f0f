"""One short run per scenario on real digits (the MNIST sample bundled with
jcl): `jcl.torch.fit.fit` and `jcl.train.fit` from the same initial weights,
on the same stream and with the same replay choices, give the same accuracy
matrix (to one test sample per task: a float32 tie may flip one argmax), and
the runs learn.

Streams: class-incremental Split MNIST with ER, task-incremental Split MNIST
(one head masked to the task's classes) with EWC, domain-incremental Permuted
MNIST with SI; MLP 32, batch 10, chunks of 8 batches (the last batch and the
last chunk padded).
"""

import dataclasses

import numpy as np
import pytest

from jcl import algorithms
from jcl import specs
from jcl import train as jax_train
from jcl.data import benchmarks
from jcl.torch import algorithms as torch_algorithms
from jcl.torch import fit as torch_fit

from tests.torch import helpers

SCENARIOS = {
  'class': ('split_mnist', dict(num_tasks=5), 'er', dict(memory_size=40, replay_batch_size=10)),
  'task': ('split_mnist', dict(num_tasks=5), 'ewc', dict(ewc_lambda=5.0, importance_samples=100)),
  'domain': ('permuted_mnist', dict(num_tasks=3), 'si', dict(si_lambda=0.5)),
}


@pytest.mark.parametrize('scenario', sorted(SCENARIOS))
def test_same_accuracy_matrix_on_both_backends(scenario):
  bench_name, bench_kwargs, algo_name, hyperparameters = SCENARIOS[scenario]
  bench = benchmarks.make_benchmark(
    bench_name, scenario=scenario, source='sample', samples_per_task=195, seed=0, **bench_kwargs
  )
  task_classes = tuple(map(tuple, bench.task_classes)) if scenario == 'task' else None
  jax_ts, torch_ts = helpers.make_states(
    'mlp',
    bench.input_shape,
    bench.num_classes,
    specs.OptimizerSpec(learning_rate=0.05),
    widths=(32,),
    task_classes=task_classes,
  )
  spec = specs.make_spec(algo_name, **hyperparameters)
  context = (tuple(bench.input_shape), bench.num_classes, bench.num_tasks)
  config = jax_train.TrainConfig(
    batch_size=10, chunk_steps=8, end_task_batch_size=64, eval_batch_size=500, seed=0
  )
  jax_result = jax_train.fit(
    algorithms.build(spec, algorithms.Context(*context)), jax_ts, bench, config
  )
  torch_result = torch_fit.fit(
    torch_algorithms.build(spec, torch_algorithms.Context(*context)),
    torch_ts,
    bench,
    torch_fit.TrainConfig(**dataclasses.asdict(config)),
  )

  one_sample = 1.0 / min(len(task.test) for task in bench.tasks)
  np.testing.assert_allclose(
    torch_result.accuracy_matrix, jax_result.accuracy_matrix, atol=one_sample + 1e-9
  )
  np.testing.assert_allclose(
    torch_result.initial_accuracy, jax_result.initial_accuracy, atol=one_sample + 1e-9
  )
  helpers.assert_states_close(
    jax_result.train_state, torch_result.train_state, rtol=1e-4, atol=1e-5
  )
  for key in ('acc', 'bwt', 'fwt', 'forgetting'):
    assert torch_result.summary[key] == pytest.approx(
      jax_result.summary[key], abs=one_sample, nan_ok=True
    )
  # FWT is undefined in class-incremental learning (`jcl.metrics.UNDEFINED`), on both backends.
  for result in (jax_result, torch_result):
    assert np.isnan(result.summary['fwt']) == (scenario == 'class')
  assert sorted(torch_result.to_json()) == sorted(jax_result.to_json())
  assert [h['step'] for h in torch_result.history] == [h['step'] for h in jax_result.history]
  for jax_row, torch_row in zip(jax_result.history, torch_result.history):
    assert sorted(torch_row) == sorted(jax_row)
    np.testing.assert_allclose(torch_row['loss'], jax_row['loss'], rtol=1e-4)
  # It learns: each task right after training it, far above chance.
  chance = 1 / (2 if bench_name == 'split_mnist' else 10)
  assert np.diag(torch_result.accuracy_matrix).min() > chance + 0.3


def test_both_loops_share_one_contract():
  """One `TrainConfig`, `FitResult` and error class (`jcl.loop`) for both backends."""
  assert torch_fit.TrainConfig is jax_train.TrainConfig
  assert torch_fit.FitResult is jax_train.FitResult
  assert torch_fit.NonFiniteLossError is jax_train.NonFiniteLossError


def test_every_jax_algorithm_has_a_torch_port():
  assert torch_algorithms.names() == algorithms.names()


@pytest.mark.parametrize(
  'config_arg',
  [
    'pnn.py:split_mnist',
    'kcl.py:split_mnist',
    'mcsgd.py:rotated_mnist',
    'stable_sgd.py:rotated_mnist',
  ],
)
def test_shipped_configs_run_on_the_torch_backend(config_arg, tmp_path):
  """The configs of the algorithms with a model or regime hook, shrunk to the
  bundled sample, run through `jcl.torch.experiment.run` (adapt_model /
  the spec's regime applied) and learn: the final accuracy is far above chance."""
  import importlib
  import json
  from jcl.torch import experiment as torch_experiment

  module, _, arg = config_arg.partition(':')
  config = importlib.import_module(f'configs.{module[:-3]}').get_config(arg)
  config.benchmark.source = 'sample'
  config.benchmark.num_tasks = 2
  config.benchmark.samples_per_task = 300
  config.log.loggers = ()
  config.log.progress = False
  config.log.plots = False
  if 'algo' in config and config.algo.name == 'kcl':
    config.algo.num_random_features = 64
  result = torch_experiment.run(config, str(tmp_path))
  written = json.loads((tmp_path / 'results.json').read_text())
  assert written['environment']['backend'] == 'torch' and written['algorithm']['name'] in module
  chance = 1 / (2 if 'split' in arg else 10)
  assert result.summary['acc'] > chance + 0.2, result.accuracy_matrix
