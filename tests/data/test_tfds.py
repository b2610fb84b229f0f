"""TFDS `data_source` on a real prepared dataset, offline: the bundled MNIST sample written
by TFDS itself in ArrayRecord format (no TensorFlow, no network), read back by jcl and
trained from through the binary; and the error for a dataset that is not prepared."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jcl import data
from jcl import session

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN, TEST = 300, 100  # examples of the sample written to the TFDS dataset


@pytest.fixture(scope='module')
def tfds():
  return pytest.importorskip('tensorflow_datasets')


def _png(image: np.ndarray) -> bytes:
  """PNG bytes of a `[28, 28, 1]` image (TFDS encodes arrays with TensorFlow; PIL does not
  need it)."""
  from PIL import Image

  out = io.BytesIO()
  Image.fromarray(image[..., 0]).save(out, format='PNG')
  return out.getvalue()


@pytest.fixture(scope='module')
def mnist_dir(tfds, tmp_path_factory):
  """A TFDS data_dir holding 'mnist' prepared in ArrayRecord format from the bundled sample:
  TFDS's own MNIST builder with the download replaced by the sample's first images."""
  sample = data.load_mnist_sample()

  class SampleMnist(tfds.builder_cls('mnist'), skip_registration=True):
    name = 'mnist'

    def _split_generators(self, dl_manager):
      del dl_manager
      return {
        'train': self._generate_examples(sample.x_train[:TRAIN], sample.y_train[:TRAIN]),
        'test': self._generate_examples(sample.x_test[:TEST], sample.y_test[:TEST]),
      }

    def _generate_examples(self, x, y):
      for i in range(len(y)):
        yield i, {'image': _png(x[i]), 'label': int(y[i])}

  data_dir = tmp_path_factory.mktemp('tfds')
  SampleMnist(data_dir=str(data_dir), file_format='array_record').download_and_prepare()
  return data_dir


def _sorted(x, y):
  """Images and labels in a canonical order (TFDS shuffles examples when writing)."""
  flat = x.reshape(len(x), -1)
  order = np.lexsort(np.concatenate([flat, y[:, None]], 1).T[::-1])
  return x[order], y[order]


def test_reads_the_prepared_dataset(mnist_dir):
  sample = data.load_mnist_sample()
  ds = data.load_dataset('mnist', source='tfds', path=mnist_dir)
  assert ds.name == 'mnist' and ds.num_classes == 10 and ds.class_names[3] == '3'
  assert ds.x_train.shape == (TRAIN, 28, 28, 1) and ds.x_train.dtype == np.uint8
  for got, want in (
    ((ds.x_train, ds.y_train), (sample.x_train[:TRAIN], sample.y_train[:TRAIN])),
    ((ds.x_test, ds.y_test), (sample.x_test[:TEST], sample.y_test[:TEST])),
  ):
    for a, b in zip(_sorted(*got), _sorted(*want)):
      np.testing.assert_array_equal(a, b)


def test_update_session_task_from_tfds(mnist_dir):
  """`experiments/update.py --data=tfds:mnist?data_dir=...` reads it the same way."""
  task, num_classes = session.load_task(f'tfds:mnist?data_dir={mnist_dir}&classes=4,5', 0)
  assert num_classes == 10 and set(np.unique(task.train.y)) <= {4, 5}
  assert len(task.train) == int(np.isin(data.load_mnist_sample().y_train[:TRAIN], [4, 5]).sum())


def test_train_binary_from_tfds(mnist_dir, tmp_path):
  workdir = tmp_path / 'work'
  command = [
    sys.executable,
    '-m',
    'experiments.train',
    '--config=configs/naive.py:split_mnist',
    '--config.benchmark.source=tfds',
    f'--config.benchmark.path={mnist_dir}',
    '--config.log.progress=False',
    '--config.log.plots=False',
    '--config.checkpoint.enabled=False',
    f'--workdir={workdir}',
  ]
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(workdir / 'results.json') as f:
    results = json.load(f)
  matrix = np.asarray(results['accuracy_matrix'])
  assert matrix.shape == (5, 5) and np.all(np.diag(matrix) > 0.5)


def test_not_prepared_says_how_to_prepare(tfds, tmp_path):
  data_dir = tmp_path / 'empty'
  with pytest.raises(data.DataError) as e:
    data.make_benchmark('split_cifar10', source='tfds', path=data_dir)
  message = str(e.value)
  assert message.startswith("tfds:cifar10: dataset 'cifar10' is not prepared in data_dir ")
  assert str(data_dir) in message
  assert 'tfds build cifar10 --data_dir=DIR --file_format=array_record' in message
  assert 'download=False' in message and 'cifar-10-batches-py' in message
  assert not data_dir.exists()  # nothing downloaded, nothing written


def test_unknown_dataset(tfds, tmp_path):
  with pytest.raises(data.DataError, match="TFDS knows no dataset 'no_such_dataset'"):
    data.load_tfds('no_such_dataset', tmp_path)
