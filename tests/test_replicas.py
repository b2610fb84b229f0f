"""Seeds and grid settings trained as one program equal the separate runs (jcl.replicas)."""

import json

import jax
import numpy as np
import pytest

from jcl import experiment
from jcl import replicas

# Vmapped replicas differ from the single runs by float rounding only (XLA
# batches the matmuls differently); measured: 6e-8 on the parameters, the
# same accuracy matrices.
PARAM_ATOL = 1e-5
ACCURACY_ATOL = 1e-3  # one test sample of the 1000 of a task
BASE_LR, BASE_LAMBDA = 0.05, 3.0


def small_config(num_seeds=1, grid=''):
  """EWC on 2-task Permuted MNIST (the bundled sample, 200 samples a task), MLP 32, batch 10."""
  from configs import quickstart

  config = quickstart.get_config()
  config.benchmark.num_tasks = 2
  config.benchmark.samples_per_task = 200
  config.model.widths = (32,)
  config.optimizer.learning_rate = BASE_LR
  config.algo = dict(name='ewc', ewc_lambda=BASE_LAMBDA)
  config.train.epochs = 1
  config.train.batch_size = 10
  config.train.chunk_steps = 10
  config.log.progress = False
  config.log.loggers = ()
  config.log.plots = False
  config.checkpoint.enabled = False
  with config.unlocked():
    config.num_seeds = num_seeds
    config.grid = grid
  return config


_single_runs = {}


def single_run(config, replica):
  """`experiment.run` of the replica's own config (cached across tests)."""
  key = (replica.seed, tuple(replica.hparams.items()))
  if key not in _single_runs:
    _single_runs[key] = experiment.run(replicas.config_for(config, replica))
  return _single_runs[key]


def assert_matches(result, index, single, exact):
  params = zip(
    jax.tree.leaves(result.train_state.params), jax.tree.leaves(single.train_state.params)
  )
  states = zip(jax.tree.leaves(result.algo_state), jax.tree.leaves(single.algo_state))
  if exact:
    np.testing.assert_array_equal(result.accuracy_matrices[index], single.accuracy_matrix)
    for stacked, alone in [*params, *states]:
      np.testing.assert_array_equal(np.asarray(stacked)[index], np.asarray(alone))
  else:
    np.testing.assert_allclose(
      result.accuracy_matrices[index], single.accuracy_matrix, atol=ACCURACY_ATOL, rtol=0
    )
    for stacked, alone in [*params, *states]:
      np.testing.assert_allclose(
        np.asarray(stacked)[index], np.asarray(alone), atol=PARAM_ATOL, rtol=0
      )
  np.testing.assert_allclose(result.initial_accuracy[index], single.initial_accuracy, atol=1e-12)


@pytest.mark.parametrize('mode', ['vmap', 'sequential'])
def test_three_seeds_equal_three_single_runs(mode, tmp_path):
  config = small_config(num_seeds=3)
  result = replicas.run(config, str(tmp_path), mode=mode, mesh=None)
  assert result.mode == mode and [r.seed for r in result.replicas] == [0, 1, 2]
  singles = [single_run(config, r) for r in result.replicas]
  for index, single in enumerate(singles):
    assert_matches(result, index, single, exact=mode == 'sequential')
  # The seeds are different runs (init, data order, permutations)...
  assert not np.array_equal(singles[0].accuracy_matrix, singles[1].accuracy_matrix)
  # ... summarised as mean and sample std of every metric.
  (row,) = result.table
  for metric in ('acc', 'bwt', 'fwt', 'forgetting'):
    values = [s.summary[metric] for s in singles]
    assert row['mean'][metric] == pytest.approx(np.mean(values), abs=ACCURACY_ATOL)
    assert row['std'][metric] == pytest.approx(np.std(values, ddof=1), abs=ACCURACY_ATOL)
  written = json.loads((tmp_path / 'results.json').read_text())
  assert [r['seed'] for r in written['replicas']] == [0, 1, 2]
  np.testing.assert_allclose(
    np.array(written['replicas'][2]['accuracy_matrix']), result.accuracy_matrices[2]
  )
  assert written['best']['mean']['acc'] == pytest.approx(row['mean']['acc'])


@pytest.mark.parametrize('mode', ['vmap', 'sequential'])
def test_two_by_two_grid_in_one_program_equals_four_separate_runs(mode):
  # One program with the learning rate and lambda as traced values (vmapped,
  # or one compiled single-replica program taking them as arguments).
  config = small_config(
    grid=f'optimizer.learning_rate={BASE_LR},0.02;algo.ewc_lambda={BASE_LAMBDA},1'
  )
  result = replicas.run(config, mode=mode, mesh=None)
  assert [dict(r.hparams) for r in result.replicas] == [
    {'optimizer.learning_rate': lr, 'algo.ewc_lambda': lam}
    for lr in (BASE_LR, 0.02)
    for lam in (BASE_LAMBDA, 1.0)
  ]
  singles = [single_run(config, r) for r in result.replicas]
  for index, single in enumerate(singles):
    assert_matches(result, index, single, exact=mode == 'sequential')
  # The settings give different runs, and the table ranks them by ACC.
  accs = [s.summary['acc'] for s in singles]
  assert len(set(accs)) > 1
  assert [row['mean']['acc'] for row in result.table] == sorted(
    (row['mean']['acc'] for row in result.table), reverse=True
  )
  assert result.best()['mean']['acc'] == pytest.approx(max(accs), abs=ACCURACY_ATOL)


def test_grid_parsing_and_what_cannot_be_gridded():
  assert replicas.parse_grid('optimizer.learning_rate=0.1,0.01; algo.ewc_lambda=1') == {
    'optimizer.learning_rate': (0.1, 0.01),
    'algo.ewc_lambda': (1.0,),
  }
  assert replicas.parse_grid({'algo': {'alpha': [0.1, 0.2]}}) == {'algo.alpha': (0.1, 0.2)}
  config = small_config(grid='optimizer.learning_rate=0.1,0.01;algo.ewc_lambda=1,2,3')
  assert len(replicas.replicas_of(config)) == 6
  for grid, message in [
    ('train.batch_size=10,20', 'cannot grid'),
    ('algo.gamma=0.5,2', "invalid 'gamma'"),
    ('optimizer.learning_rate=0.1,-1', "invalid 'learning_rate'"),
  ]:
    with pytest.raises(ValueError, match=message):
      replicas.replicas_of(small_config(grid=grid))


def test_python_branch_on_a_gridded_value_is_named():
  # DER++ chooses its batch layout with `if beta:`, so beta cannot be traced.
  config = small_config(grid='algo.beta=0.5,1')
  config.algo = dict(name='derpp', memory_size=20, replay_batch_size=5)
  with pytest.raises(ValueError, match=r"branches in Python on one of \['algo.beta'\]"):
    replicas.run(config, mode='sequential')


@pytest.mark.parametrize('mode', ['vmap', 'sequential'])
def test_a_diverged_replica_is_named_and_the_others_are_kept(mode, tmp_path):
  # lr 1e6 diverges at once; the other setting trains as its single run does.
  config = small_config(grid=f'optimizer.learning_rate={BASE_LR},1e6')
  result = replicas.run(config, str(tmp_path), mode=mode, mesh=None)
  good, bad = result.errors
  assert good is None and 'replica seed=0 optimizer.learning_rate=1e+06' in bad
  assert 'non-finite training metrics' in bad
  single = single_run(config, result.replicas[0])
  np.testing.assert_allclose(
    result.accuracy_matrices[0], single.accuracy_matrix, atol=ACCURACY_ATOL
  )
  written = json.loads((tmp_path / 'results.json').read_text())
  assert 'error' not in written['replicas'][0] and 'non-finite' in written['replicas'][1]['error']
  assert written['best']['hparams'] == {
    'optimizer.learning_rate': BASE_LR
  }  # the failed one ranks last
  # Every replica diverged: an error naming each, after results.json is written.
  config = small_config(grid='optimizer.learning_rate=1e6,2e6')
  with pytest.raises(FloatingPointError, match='every replica diverged'):
    replicas.run(config, str(tmp_path / 'all'), mode=mode, mesh=None)
  assert len(json.loads((tmp_path / 'all' / 'results.json').read_text())['replicas']) == 2
