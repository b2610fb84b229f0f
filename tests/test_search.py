"""A small Optuna search with two local worker processes on a shared journal file (jcl.search)."""

import json

import pytest

optuna = pytest.importorskip('optuna')

from jcl import search  # noqa: E402
from tests.test_replicas import small_config  # noqa: E402


def test_search_space_syntax(tmp_path):
  space = search.parse_space(
    'optimizer.learning_rate=loguniform(0.001, 0.3); '
    'algo.memory_size=int(100,500);algo.fisher=choice(empirical,true)'
  )
  lr = space['optimizer.learning_rate']
  assert isinstance(lr, optuna.distributions.FloatDistribution) and lr.log
  assert (lr.low, lr.high) == (0.001, 0.3)
  assert space['algo.memory_size'] == optuna.distributions.IntDistribution(100, 500)
  assert space['algo.fisher'].choices == ('empirical', 'true')
  with pytest.raises(ValueError, match='cannot read'):
    search.parse_space('optimizer.learning_rate=gaussian(0,1)')
  with pytest.raises(KeyError, match="no field 'optimizer.learnin_rate'"):  # before any worker
    search.search(small_config(), 'optimizer.learnin_rate=uniform(0,1)', str(tmp_path), trials=1)
  assert search.direction_of('acc') == 'maximize'
  assert search.direction_of('forgetting') == 'minimize'


def test_two_workers_share_a_study_and_the_best_setting_lands_in_the_workdir(tmp_path):
  config = small_config()
  config.algo = dict(name='naive')
  workdir = tmp_path / 'search'
  best = search.search(
    config,
    'optimizer.learning_rate=loguniform(0.003,0.3)',
    str(workdir),
    trials=4,
    workers=2,
    seed=0,
  )
  trials = json.loads((workdir / 'trials.json').read_text())
  assert len(trials) == 4 and all(t['state'] == 'COMPLETE' for t in trials)
  # Both worker processes took trials from the shared journal.
  assert len({t['worker_pid'] for t in trials}) == 2
  written = json.loads((workdir / 'best.json').read_text())
  assert written == best
  assert best['value'] == max(t['value'] for t in trials)
  lr = best['params']['optimizer.learning_rate']
  assert 0.003 <= lr <= 0.3
  # The score is the best trial's own run, written in its directory.
  run = json.loads((workdir / 'trials' / f'{best["trial"]:04d}' / 'results.json').read_text())
  assert run['summary']['acc'] == best['value']
  assert run['config']['optimizer']['learning_rate'] == lr
  assert best['value'] > 0.3  # it learned (2 tasks of 10 digits: chance is 0.1)
