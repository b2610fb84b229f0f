"""Model-update sessions: tasks 0..2 in one process and task 3 in a second,
from the saved state, equal tasks 0..3 in one process."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import session as session_config
from jcl import checkpoint
from jcl import session
from jcl.data import sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
  """The bundled real-digits sample as an NPZ (400 train images a class)."""
  sample = sources.load_mnist_sample()
  keep = np.concatenate([np.flatnonzero(sample.y_train == c)[:400] for c in range(10)])
  path = tmp_path_factory.mktemp('data') / 'digits.npz'
  np.savez(
    path,
    x_train=sample.x_train[keep],
    y_train=sample.y_train[keep],
    x_test=sample.x_test,
    y_test=sample.y_test,
    name='mnist',
  )
  return str(path)


def tasks(path, ids):
  return [f'npz:{path}?classes={2 * k},{2 * k + 1}' for k in ids]


def small_config():
  config = session_config.get_config()
  config.model.widths = (64,)
  config.algo = dict(name='er', memory_size=50, replay_batch_size=10)
  config.train.chunk_steps = 20
  config.log.loggers = ()
  config.log.plots = False
  return config


def final_params(state_dir):
  ckpt = checkpoint.Checkpointer(os.path.join(state_dir, 'checkpoints'))
  restored = ckpt._manager.restore(ckpt.all_steps()[-1])
  ckpt.close()
  return restored['state']


def test_two_sessions_equal_one(tmp_path, digits):
  one = tmp_path / 'one'
  full = session.update(str(one), tasks(digits, range(4)), small_config())

  two = tmp_path / 'two'
  # Session 1 (tasks 0..2) and session 2 (task 3) in separate processes.
  first = [
    sys.executable,
    '-m',
    'experiments.update',
    f'--state_dir={two}',
    '--config=configs/session.py',
    '--config.model.widths=(64,)',
    '--config.algo.memory_size=50',
    '--config.train.chunk_steps=20',
    '--config.log.loggers=()',
    '--config.log.plots=False',
    *[f'--data={d}' for d in tasks(digits, range(3))],
  ]
  for command in (
    first,
    [
      sys.executable,
      '-m',
      'experiments.update',
      f'--state_dir={two}',
      f'--data={tasks(digits, [3])[0]}',
    ],
  ):
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]

  with open(two / 'results.json') as f:
    resumed = json.load(f)
  matrix = np.array(
    [[np.nan if v is None else v for v in row] for row in resumed['accuracy_matrix']]
  )
  # R[i, j] for i <= j + 1: tasks trained by then, and the next one (for FWT).
  known = np.triu(np.ones((4, 4), bool), k=-1)
  np.testing.assert_array_equal(matrix[known], full.accuracy_matrix[known])
  np.testing.assert_allclose(resumed['summary']['fwt'], full.summary['fwt'])
  # Session 1 never saw task 3: its accuracy before task 2 is unknown.
  assert np.isnan(matrix[3, :2]).all()
  assert resumed['tasks'] == tasks(digits, range(4))
  np.testing.assert_array_equal(resumed['initial_accuracy'], full.initial_accuracy)
  # Parameters, optimizer state, replay buffer and keys: bit-identical.
  a, b = final_params(one), final_params(two)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  # It learned, and replay kept every earlier task far above chance (1/8).
  assert np.all(np.diag(full.accuracy_matrix) > 0.9), full.accuracy_matrix
  assert np.all(full.accuracy_matrix[:, 3] > 0.35), full.accuracy_matrix


def test_session_errors_are_clear(tmp_path, digits):
  state = tmp_path / 'state'
  with pytest.raises(session.SessionError, match='first session needs a config'):
    session.update(str(state), tasks(digits, [0]))
  with pytest.raises(sources.DataError, match='no such file or folder: .*missing.npz'):
    session.update(str(state), [f'npz:{tmp_path}/missing.npz'], small_config())
  with pytest.raises(session.SessionError, match='expected npz:PATH or tfds:NAME'):
    session.update(str(state), ['digits.csv'], small_config())
  config = small_config()
  config.session.num_classes = 4
  with pytest.raises(session.SessionError, match='do not fit the model'):
    session.update(str(state), tasks(digits, [2]), config)
  config = small_config()
  config.session.max_tasks = 1
  with pytest.raises(session.SessionError, match='exceed max_tasks=1'):
    session.update(str(state), tasks(digits, [0, 1]), config)
  # Nothing was trained, so nothing was saved.
  assert not os.path.exists(state / 'checkpoints')


def test_interrupted_session_must_be_finished_first(tmp_path, digits):
  state = tmp_path / 'state'
  session.update(str(state), tasks(digits, [0]), small_config())
  with open(state / 'session.json') as f:
    document = json.load(f)
  document['pending'] = tasks(digits, [1])  # as if killed during task 1
  with open(state / 'session.json', 'w') as f:
    json.dump(document, f)
  with pytest.raises(session.SessionError, match='interrupted update'):
    session.update(str(state), tasks(digits, [2]))
  with pytest.raises(session.SessionError, match='different config'):
    other = small_config()
    other.seed = 1
    session.update(str(state), tasks(digits, [1]), other)
  result = session.update(str(state), tasks(digits, [1]))
  assert result.accuracy_matrix.shape == (2, 2)


def test_a_new_task_from_tfds(tmp_path, digits):
  """Task 0 from an NPZ file, task 1 from a TFDS dataset (mocked: no download)."""
  tfds = pytest.importorskip('tensorflow_datasets')
  state = tmp_path / 'state'
  session.update(str(state), tasks(digits, [0]), small_config())
  with tfds.testing.mock_data(num_examples=200):
    result = session.update(str(state), ['tfds:mnist'])
  assert result.accuracy_matrix.shape == (2, 2)
  with open(state / 'session.json') as f:
    assert json.load(f)['tasks'] == [*tasks(digits, [0]), 'tfds:mnist']
