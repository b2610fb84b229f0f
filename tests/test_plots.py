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
MATRIX = [[0.95, 0.80, None],
          [0.10, 0.92, None],
          [0.12, 0.15, None]]
TASK_IL = [[0.99, 0.97, None],
           [0.50, 0.98, None],
           [0.48, 0.52, None]]


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


def _assert_png(path):
  assert os.path.isfile(path), path
  with open(path, 'rb') as f:
    data = f.read()
  assert data[:8] == PNG_MAGIC, path
  assert len(data) > 5000, (path, len(data))


def test_import_does_not_need_matplotlib():
  code = ('import sys; sys.modules["matplotlib"] = None; import jcl.plots; '
          'assert "matplotlib.pyplot" not in sys.modules')
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
  _assert_png(plots.plot_task_curves(MATRIX, str(tmp_path / 'c0.png'),
                                     initial_accuracy=[0.1, 0.1, 0.1]))


def test_plot_results(tmp_path):
  workdir = _write_run(tmp_path / 'run')
  paths = plots.plot_results(workdir)
  assert [os.path.basename(p) for p in paths] == [
      'accuracy_matrix.png', 'task_accuracy.png', 'task_il_accuracy_matrix.png']
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


@pytest.mark.parametrize('content', ['{not json', '[1, 2]', '{"summary": {}}',
                                     '{"accuracy_matrix": [[0.1, 0.2], [0.3]]}'])
def test_plot_results_malformed_file(tmp_path, content):
  (tmp_path / 'results.json').write_text(content)
  with pytest.raises(ValueError, match='results.json'):
    plots.plot_results(str(tmp_path))


def test_compare_runs(tmp_path):
  a = _write_run(tmp_path / 'a', algo='ewc')
  b = _write_run(tmp_path / 'b', matrix=[[0.9, 0.88, 0.85], [0.2, 0.9, 0.87], [0.1, 0.2, 0.91]],
                 algo='er')
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
  proc = subprocess.run([sys.executable, '-m', 'experiments.plot', a, b, f'--compare={out}'],
                        cwd=REPO, capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr
  _assert_png(str(out))
  for name in ('accuracy_matrix.png', 'task_accuracy.png', 'task_il_accuracy_matrix.png'):
    _assert_png(os.path.join(a, name))
  _assert_png(os.path.join(b, 'task_accuracy.png'))
  assert str(out) in proc.stdout


def test_command_missing_results(tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'experiments.plot', str(tmp_path)],
                        cwd=REPO, capture_output=True, text=True, timeout=60)
  assert proc.returncode != 0
  assert 'results.json' in proc.stderr
