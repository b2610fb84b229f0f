"""Tests for jcl.plots and the experiments.plot command."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip('matplotlib')

from jcl import plots  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'

# Three tasks, two trained: the last column is null (NaN).
MATRIX = [[0.95, 0.80, None], [0.10, 0.92, None], [0.12, 0.15, None]]
TASK_IL = [[0.99, 0.97, None], [0.50, 0.98, None], [0.48, 0.52, None]]


def _write_run(workdir, matrix=MATRIX, task_il=TASK_IL, algo='ewc'):
  os.makedirs(workdir, exist_ok=True)
  document = {
    'config': {'algo': {'name': algo}, 'benchmark': {'name': 'split_mnist'}},
    'algorithm': {'name': algo},
    'accuracy_matrix': matrix,
    'initial_accuracy': [0.1, 0.11, 0.09],
    'summary': {'acc': 0.86, 'bwt': -0.15, 'forgetting': 0.15},
    'history': [],
    'timings': {'train_seconds': 1.0},
  }
  if task_il is not None:
    document['task_il_accuracy_matrix'] = task_il
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(document, f)
  return str(workdir)


LR, LAMBDA = 'optimizer.learning_rate', 'algo.ewc_lambda'
# Two settings x three seeds; table ranks the second setting (lr=0.1) first.
SETTINGS = [{LR: 0.01, LAMBDA: 1.0}, {LR: 0.1, LAMBDA: 10.0}]


def _replica_matrix(setting, seed, tasks_trained=2):
  """A 3-task accuracy matrix, NaN/None after `tasks_trained` columns."""
  rng = np.random.default_rng(10 * setting + seed)
  M = np.clip(0.5 + 0.1 * setting + rng.uniform(-0.1, 0.3, (3, 3)), 0.0, 1.0)
  return [[float(v) if j < tasks_trained else None for j, v in enumerate(row)] for row in M]


def _replicated_document(
  settings=SETTINGS,
  seeds=(0, 1, 2),
  diverged=((0, 2),),
  task_il=False,
  table_order=(1, 0),
  algo='ewc',
):
  """A replicated results.json: `diverged` lists (setting, seed) with an error."""
  replicas = []
  for s, hparams in enumerate(settings):
    for seed in seeds:
      entry = {
        'seed': seed,
        'hparams': dict(hparams),
        'label': f'seed={seed} ' + ' '.join(f'{k}={v:g}' for k, v in hparams.items()),
        'accuracy_matrix': _replica_matrix(s, seed),
        'initial_accuracy': [0.1, 0.1 + 0.01 * seed, 0.09],
        'summary': {'acc': 0.8 + 0.01 * seed, 'bwt': -0.1, 'forgetting': 0.1},
      }
      if task_il:
        entry['task_il_accuracy_matrix'] = _replica_matrix(s, seed + 100)
      if (s, seed) in diverged:
        entry['error'] = 'loss became nan at task 1 step 7'
        entry['accuracy_matrix'] = [[None] * 3 for _ in range(3)]
        entry['summary'] = {'acc': None}
      replicas.append(entry)
  rows = [
    {
      'hparams': dict(settings[s]),
      'seeds': list(seeds),
      'mean': {'acc': 0.8},
      'std': {'acc': 0.01},
      'mean_accuracy_matrix': _replica_matrix(s, 0),
      'std_accuracy_matrix': _replica_matrix(s, 1),
    }
    for s in table_order
  ]
  return {
    'config': {'algo': {'name': algo}, 'benchmark': {'name': 'permuted_mnist'}},
    'environment': {},
    'benchmark': 'permuted_mnist',
    'scenario': 'domain',
    'algorithm': {'name': algo},
    'mode': 'sequential',
    'devices': ['cpu:0'],
    'replicas': replicas,
    'table': rows,
    'best': rows[0],
    'timings': {'wall_seconds': 1.0},
  }


def _write_document(workdir, document):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(document, f)
  return str(workdir)


def _assert_png(path):
  assert os.path.isfile(path), path
  with open(path, 'rb') as f:
    data = f.read()
  assert data[:8] == PNG_MAGIC, path
  assert len(data) > 5000, (path, len(data))


def test_import_does_not_need_matplotlib():
  code = (
    'import sys; sys.modules["matplotlib"] = None; import jcl.plots; '
    'assert "matplotlib.pyplot" not in sys.modules'
  )
  subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True)


def test_seen_task_accuracy_stops_at_nan_columns():
  acc = plots.seen_task_accuracy(MATRIX)
  np.testing.assert_allclose(acc, [0.95, (0.80 + 0.92) / 2])


def test_as_matrix_rejects_ragged():
  with pytest.raises(ValueError):
    plots.as_matrix([[0.1, 0.2], [0.3]])
  with pytest.raises(ValueError):
    plots.as_matrix([])


def test_plot_accuracy_matrix_and_curves(tmp_path):
  _assert_png(plots.plot_accuracy_matrix(MATRIX, str(tmp_path / 'sub' / 'm.png'), title='t'))
  _assert_png(plots.plot_task_curves(np.array(MATRIX, dtype=float), str(tmp_path / 'c.png')))
  _assert_png(
    plots.plot_task_curves(MATRIX, str(tmp_path / 'c0.png'), initial_accuracy=[0.1, 0.1, 0.1])
  )


def test_plot_results(tmp_path):
  workdir = _write_run(tmp_path / 'run')
  paths = plots.plot_results(workdir)
  assert [os.path.basename(p) for p in paths] == [
    'accuracy_matrix.png',
    'task_accuracy.png',
    'task_il_accuracy_matrix.png',
  ]
  for path in paths:
    assert os.path.dirname(path) == workdir
    _assert_png(path)


def test_plot_results_without_task_il(tmp_path):
  workdir = _write_run(tmp_path / 'run', task_il=None)
  paths = plots.plot_results(workdir)
  assert [os.path.basename(p) for p in paths] == ['accuracy_matrix.png', 'task_accuracy.png']
  assert not os.path.exists(os.path.join(workdir, 'task_il_accuracy_matrix.png'))


def test_plot_results_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='results.json'):
    plots.plot_results(str(tmp_path))


@pytest.mark.parametrize(
  'content', ['{not json', '[1, 2]', '{"summary": {}}', '{"accuracy_matrix": [[0.1, 0.2], [0.3]]}']
)
def test_plot_results_malformed_file(tmp_path, content):
  (tmp_path / 'results.json').write_text(content)
  with pytest.raises(ValueError, match='results.json'):
    plots.plot_results(str(tmp_path))


def test_compare_runs(tmp_path):
  a = _write_run(tmp_path / 'a', algo='ewc')
  b = _write_run(
    tmp_path / 'b', matrix=[[0.9, 0.88, 0.85], [0.2, 0.9, 0.87], [0.1, 0.2, 0.91]], algo='er'
  )
  _assert_png(plots.compare_runs([a, b], str(tmp_path / 'cmp.png')))
  _assert_png(plots.compare_runs([a, b], str(tmp_path / 'cmp2.png'), labels=['A', 'B']))
  with pytest.raises(ValueError):
    plots.compare_runs([a, b], str(tmp_path / 'x.png'), labels=['A'])
  with pytest.raises(FileNotFoundError):
    plots.compare_runs([a, str(tmp_path / 'nope')], str(tmp_path / 'x.png'))


def test_command(tmp_path):
  a = _write_run(tmp_path / 'a', algo='ewc')
  b = _write_run(tmp_path / 'b', algo='er', task_il=None)
  out = tmp_path / 'cmp.png'
  proc = subprocess.run(
    [sys.executable, '-m', 'experiments.plot', a, b, f'--compare={out}'],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert proc.returncode == 0, proc.stderr
  _assert_png(str(out))
  for name in ('accuracy_matrix.png', 'task_accuracy.png', 'task_il_accuracy_matrix.png'):
    _assert_png(os.path.join(a, name))
  _assert_png(os.path.join(b, 'task_accuracy.png'))
  assert str(out) in proc.stdout


def test_command_missing_results(tmp_path):
  proc = subprocess.run(
    [sys.executable, '-m', 'experiments.plot', str(tmp_path)],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert proc.returncode != 0
  assert 'results.json' in proc.stderr


def test_mean_std_matches_numpy():
  x = np.random.default_rng(0).uniform(size=(4, 3, 3))
  x[:, :, 2] = np.nan
  mean, std = plots.mean_std(x)
  np.testing.assert_allclose(mean, np.mean(x, axis=0))
  np.testing.assert_allclose(std, np.std(x, axis=0, ddof=1))
  mean, std = plots.mean_std(x[:1])
  np.testing.assert_allclose(mean, x[0])
  np.testing.assert_array_equal(std[:, :2], 0.0)
  assert np.isnan(std[:, 2]).all()
  with pytest.raises(ValueError):
    plots.mean_std(np.zeros((0, 3)))


def test_setting_statistics_leave_out_diverged_seed():
  document = _replicated_document()
  settings = plots.setting_statistics(document)
  assert [s['rank'] for s in settings] == [1, 2]
  assert [s['hparams'] for s in settings] == [SETTINGS[1], SETTINGS[0]]  # table order
  assert [s['name'] for s in settings] == ['lr=0.1 ewc_lambda=10', 'lr=0.01 ewc_lambda=1']
  best, second = settings
  assert best['seeds'] == [0, 1, 2] and best['diverged_seeds'] == []
  assert second['seeds'] == [0, 1] and second['diverged_seeds'] == [2]
  for setting, s, seeds in ((best, 1, (0, 1, 2)), (second, 0, (0, 1))):
    stack = np.array([plots.as_matrix(_replica_matrix(s, seed)) for seed in seeds])
    np.testing.assert_allclose(setting['mean_accuracy_matrix'], np.mean(stack, axis=0))
    np.testing.assert_allclose(setting['std_accuracy_matrix'], np.std(stack, axis=0, ddof=1))
    assert np.isnan(setting['mean_accuracy_matrix'][:, 2]).all()  # untrained column
    seen = np.array([plots.seen_task_accuracy(m) for m in stack])
    np.testing.assert_allclose(setting['seen_mean'], seen.mean(axis=0))
    np.testing.assert_allclose(setting['seen_std'], seen.std(axis=0, ddof=1))
    acc = [0.8 + 0.01 * seed for seed in seeds]
    np.testing.assert_allclose(setting['summary_mean']['acc'], np.mean(acc))
    np.testing.assert_allclose(setting['summary_std']['acc'], np.std(acc, ddof=1))
    np.testing.assert_allclose(setting['initial_mean'][1], np.mean([0.1 + 0.01 * x for x in seeds]))


def test_setting_statistics_without_table_ranks_by_final_accuracy():
  document = _replicated_document(diverged=())
  del document['table'], document['best']
  settings = plots.setting_statistics(document)
  finals = [s['seen_mean'][-1] for s in settings]
  assert finals == sorted(finals, reverse=True)
  assert [s['rank'] for s in settings] == [1, 2]


def test_setting_name():
  assert plots.setting_name({LR: 0.01, LAMBDA: 1.0}) == 'lr=0.01 ewc_lambda=1'
  assert plots.setting_name({}) == ''
  assert plots.setting_name({'a.lr': 0.1, 'b.lr': 0.2}) == 'a.lr=0.1 b.lr=0.2'


def test_plot_results_replicated_grid(tmp_path):
  workdir = _write_document(tmp_path / 'grid', _replicated_document())
  paths = plots.plot_results(workdir)
  assert [os.path.basename(p) for p in paths] == [
    'accuracy_matrix_1.png',
    'task_accuracy_1.png',
    'accuracy_matrix_2.png',
    'task_accuracy_2.png',
    'settings.png',
  ]
  for path in paths:
    assert os.path.dirname(path) == workdir
    _assert_png(path)
  assert not os.path.exists(os.path.join(workdir, 'accuracy_matrix.png'))


def test_plot_results_replicated_titles(tmp_path, monkeypatch):
  titles = {}
  plt = plots._pyplot()  # pylint: disable=protected-access
  save = plots._save  # pylint: disable=protected-access

  def spy(fig, path):
    titles[os.path.basename(path)] = fig.axes[0].get_title()
    return save(fig, path)

  monkeypatch.setattr(plots, '_save', spy)
  plots.plot_results(_write_document(tmp_path / 'grid', _replicated_document()))
  assert 'lr=0.1 ewc_lambda=10' in titles['accuracy_matrix_1.png']
  assert '3 seeds' in titles['accuracy_matrix_1.png']
  assert 'diverged' not in titles['accuracy_matrix_1.png']
  for name in ('accuracy_matrix_2.png', 'task_accuracy_2.png'):
    assert 'lr=0.01 ewc_lambda=1' in titles[name]
    assert '2 seeds (1 diverged seed left out)' in titles[name]
  assert 'ewc / permuted_mnist' in titles['settings.png']
  assert plt.get_fignums() == []  # every figure closed


def test_plot_results_replicated_all_seeds_diverged(tmp_path):
  document = _replicated_document(diverged=((0, 0), (0, 1), (0, 2)), task_il=True)
  paths = plots.plot_results(_write_document(tmp_path / 'grid', document))
  # The second-ranked setting (lr=0.01) diverged everywhere: no `_2` files.
  assert [os.path.basename(p) for p in paths] == [
    'accuracy_matrix_1.png',
    'task_accuracy_1.png',
    'task_il_accuracy_matrix_1.png',
    'settings.png',
  ]
  for path in paths:
    _assert_png(path)
  assert not any(name.endswith('_2.png') for name in os.listdir(tmp_path / 'grid'))


def test_plot_results_replicated_seeds_only(tmp_path):
  document = _replicated_document(settings=[{}], diverged=(), table_order=(0,))
  workdir = _write_document(tmp_path / 'seeds', document)
  paths = plots.plot_results(workdir)
  assert [os.path.basename(p) for p in paths] == ['accuracy_matrix.png', 'task_accuracy.png']
  for path in paths:
    _assert_png(path)
  assert not os.path.exists(os.path.join(workdir, 'settings.png'))
  # Every seed diverged: nothing is written.
  document = _replicated_document(
    settings=[{}], diverged=((0, 0), (0, 1), (0, 2)), table_order=(0,)
  )
  assert plots.plot_results(_write_document(tmp_path / 'dead', document)) == []


def test_load_results_replicated(tmp_path):
  document = _replicated_document()
  loaded = plots.load_results(_write_document(tmp_path / 'ok', document))
  assert plots.is_replicated(loaded) and len(loaded['replicas']) == 6


@pytest.mark.parametrize(
  'breakage', ['no_replicas', 'empty', 'no_matrix', 'ragged', 'shapes', 'table']
)
def test_load_results_malformed_replicated(tmp_path, breakage):
  document = _replicated_document()
  if breakage == 'no_replicas':
    del document['replicas']
  elif breakage == 'empty':
    document['replicas'] = []
  elif breakage == 'no_matrix':
    del document['replicas'][3]['accuracy_matrix']
  elif breakage == 'ragged':
    document['replicas'][1]['accuracy_matrix'] = [[0.1, 0.2], [0.3]]
  elif breakage == 'shapes':
    document['replicas'][1]['accuracy_matrix'] = [[0.1, 0.2], [0.3, 0.4]]
  else:
    document['table'] = {'hparams': {}}
  workdir = _write_document(tmp_path / breakage, document)
  with pytest.raises(ValueError, match='results.json'):
    plots.load_results(workdir)
  with pytest.raises(ValueError, match='results.json'):
    plots.plot_results(workdir)


def test_compare_runs_with_replicated(tmp_path):
  single = _write_run(tmp_path / 'er', algo='er')
  grid = _write_document(tmp_path / 'grid', _replicated_document())
  seeds = _write_document(
    tmp_path / 'seeds',
    _replicated_document(settings=[{}], diverged=(), table_order=(0,), algo='si'),
  )
  _assert_png(plots.compare_runs([single, grid, seeds], str(tmp_path / 'cmp.png')))
  _assert_png(plots.compare_runs([grid], str(tmp_path / 'cmp1.png'), labels=['grid']))
  # Every seed of the best setting diverged: the next ranked one is drawn.
  dead_best = _replicated_document(diverged=((1, 0), (1, 1), (1, 2)))
  dead = _write_document(tmp_path / 'dead', dead_best)
  _assert_png(plots.compare_runs([single, dead], str(tmp_path / 'cmp2.png')))
  bad = _replicated_document()
  bad['replicas'] = []
  with pytest.raises(ValueError, match='results.json'):
    plots.compare_runs([single, _write_document(tmp_path / 'bad', bad)], str(tmp_path / 'x.png'))


def test_compare_runs_replicated_legend(tmp_path, monkeypatch):
  legends = []
  save = plots._save  # pylint: disable=protected-access

  def spy(fig, path):
    legends.extend(t.get_text() for t in fig.axes[0].get_legend().get_texts())
    return save(fig, path)

  monkeypatch.setattr(plots, '_save', spy)
  single = _write_run(tmp_path / 'er', algo='er')
  grid = _write_document(tmp_path / 'grid', _replicated_document())
  plots.compare_runs([single, grid], str(tmp_path / 'cmp.png'))
  assert legends[0].startswith('er / split_mnist: ACC ')
  assert legends[1].startswith('ewc / permuted_mnist [lr=0.1 ewc_lambda=10]: ACC ')
  assert ' ± ' in legends[1] and '(3 seeds)' in legends[1]


def test_command_replicated(tmp_path):
  grid = _write_document(tmp_path / 'grid', _replicated_document())
  single = _write_run(tmp_path / 'er', algo='er')
  out = tmp_path / 'cmp.png'
  proc = subprocess.run(
    [sys.executable, '-m', 'experiments.plot', grid, single, f'--compare={out}'],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert proc.returncode == 0, proc.stderr
  _assert_png(str(out))
  for name in ('accuracy_matrix_1.png', 'task_accuracy_2.png', 'settings.png'):
    _assert_png(os.path.join(grid, name))
    assert os.path.join(grid, name) in proc.stdout
