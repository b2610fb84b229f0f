"""CIFAR-10 / CIFAR-100 from their own folders (`jcl.data.cifar`), on small fake files
written in the four distribution layouts, and TinyImageNet found by its folder."""

import os
import pickle

import numpy as np
import pytest

from jcl import data
from jcl.data import cifar

# -----------------------------------------------------------------------------
# Fake CIFAR folders: a few images, written as the tarballs lay them out.
# -----------------------------------------------------------------------------


def fake_split(num_classes, per_class, seed):
  """uint8 `[N, 32, 32, 3]` images whose pixels encode (image, row, column, channel)
  distinctly, and labels cycling through the classes."""
  n = num_classes * per_class
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  x[:, 0, 0, 0] = np.arange(n) % 256
  return x, np.arange(n) % num_classes


def channel_major(x):
  """`[N, 32, 32, 3]` -> the files' `[N, 3072]` rows (1024 red, 1024 green, 1024 blue)."""
  return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(len(x), -1)


def _pickle(path, content):
  with open(path, 'wb') as f:
    pickle.dump(content, f, protocol=2)


def write_cifar(root, dataset='cifar10', binary=False, per_class=2, test_per_class=1):
  """Writes a fake distribution folder under `root`; returns `(folder, (x_train, y_train,
  x_test, y_test))` as `load_cifar` must read them back."""
  layout = next(lay for lay in cifar.LAYOUTS if lay.dataset == dataset and lay.binary == binary)
  folder = os.path.join(root, layout.folder)
  os.makedirs(folder)
  x_train, y_train = fake_split(layout.num_classes, per_class, 0)
  x_test, y_test = fake_split(layout.num_classes, test_per_class, 1)
  parts = np.array_split(np.arange(len(y_train)), len(layout.train))
  files = [(name, x_train[p], y_train[p]) for name, p in zip(layout.train, parts)]
  files.append((layout.test, x_test, y_test))
  names = [f'class_{c}' for c in range(layout.num_classes)]
  for name, x, y in files:
    path = os.path.join(folder, name)
    if binary:
      labels = y[:, None] if dataset == 'cifar10' else np.stack([y // 5, y], 1)  # coarse, fine
      np.concatenate([labels.astype(np.uint8), channel_major(x)], 1).tofile(path)
    else:
      key = 'labels' if dataset == 'cifar10' else 'fine_labels'
      _pickle(path, {'batch_label': name, key: [int(v) for v in y], 'data': channel_major(x)})
  meta = os.path.join(folder, layout.meta)
  if binary:
    with open(meta, 'w') as f:
      f.write('\n'.join(names) + '\n')
  else:
    _pickle(meta, {'label_names' if dataset == 'cifar10' else 'fine_label_names': names})
  return folder, (x_train, y_train, x_test, y_test)


LAYOUT_CASES = [('cifar10', False), ('cifar10', True), ('cifar100', False), ('cifar100', True)]


@pytest.mark.parametrize('dataset, binary', LAYOUT_CASES)
def test_each_layout_reads_back(tmp_path, dataset, binary):
  folder, (x_train, y_train, x_test, y_test) = write_cifar(tmp_path, dataset, binary)
  for path in (folder, tmp_path):  # the folder itself, or the one it was unpacked into
    ds = data.load_dataset(dataset, path=path)
    assert ds.name == dataset and ds.num_classes == (10 if dataset == 'cifar10' else 100)
    assert ds.x_train.dtype == np.uint8 and ds.x_train.shape == x_train.shape
    np.testing.assert_array_equal(ds.x_train, x_train)
    np.testing.assert_array_equal(ds.y_train, y_train)
    np.testing.assert_array_equal(ds.x_test, x_test)
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert ds.class_names[:2] == ('class_0', 'class_1')


def test_split_benchmark_from_cifar_files(tmp_path):
  folder, (_, y_train, _, y_test) = write_cifar(tmp_path, 'cifar10', per_class=3)
  bench = data.make_benchmark('split_cifar10', path=folder, scenario='class')
  assert bench.num_tasks == 5 and bench.input_shape == (32, 32, 3)
  assert [t.classes for t in bench.tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
  assert sum(len(t.train) for t in bench.tasks) == len(y_train)
  assert sum(len(t.test) for t in bench.tasks) == len(y_test)


def test_wrong_dataset_for_the_folder(tmp_path):
  folder, _ = write_cifar(tmp_path, 'cifar100')
  with pytest.raises(data.DataError, match='holds cifar100 .cifar-100-python., not cifar10'):
    data.load_dataset('cifar10', path=folder)


def test_missing_file_named(tmp_path):
  folder, _ = write_cifar(tmp_path, 'cifar10')
  os.remove(os.path.join(folder, 'data_batch_3'))
  with pytest.raises(data.DataError) as e:
    data.load_dataset('cifar10', path=folder)
  assert os.path.join(folder, 'data_batch_3') in str(e.value)
  assert 'file not found' in str(e.value) and 'cifar-10-batches-py layout' in str(e.value)


def test_truncated_binary_named(tmp_path):
  folder, _ = write_cifar(tmp_path, 'cifar10', binary=True)
  path = os.path.join(folder, 'test_batch.bin')
  with open(path, 'r+b') as f:
    f.truncate(3073 * 5 + 100)
  with pytest.raises(data.DataError, match=r'test_batch\.bin: 15465 bytes is not a whole number'):
    data.load_dataset('cifar10', path=folder)


def test_binary_label_out_of_range_named(tmp_path):
  folder, _ = write_cifar(tmp_path, 'cifar10', binary=True)
  path = os.path.join(folder, 'data_batch_2.bin')
  raw = np.fromfile(path, np.uint8)
  raw[3073] = 37  # the second record's label
  raw.tofile(path)
  with pytest.raises(data.DataError, match=r'data_batch_2\.bin: record 1 has label 37'):
    data.load_dataset('cifar10', path=folder)


@pytest.mark.parametrize(
  'content, match',
  [
    (b'\x80\x02}q\x00(X\x04\x00\x00\x00data', 'corrupt or truncated'),
    (b'not a pickle at all', 'corrupt or truncated'),
    (pickle.dumps({'labels': [0]}, protocol=2), r"missing key\(s\) \['data'\]"),
    (pickle.dumps({'labels': [0], 'data': np.zeros((1, 10), np.uint8)}), r'uint8 \[N, 3072\]'),
  ],
  ids=['truncated', 'garbage', 'no_data', 'wrong_shape'],
)
def test_corrupt_pickle_named(tmp_path, content, match):
  folder, _ = write_cifar(tmp_path, 'cifar10')
  path = os.path.join(folder, 'data_batch_4')
  with open(path, 'wb') as f:
    f.write(content)
  with pytest.raises(data.DataError, match=match) as e:
    data.load_dataset('cifar10', path=folder)
  assert str(e.value).startswith(path)


class _Payload:
  """Unpickles into a call of `os.mkdir(path)`: code a CIFAR file must not be able to run."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (os.mkdir, (self.path,))


def test_pickle_cannot_run_code(tmp_path):
  folder, _ = write_cifar(tmp_path, 'cifar10')
  payload = _Payload(str(tmp_path / 'ran'))
  _pickle(os.path.join(folder, 'test_batch'), {'data': payload, 'labels': [0]})
  with pytest.raises(data.DataError, match='mkdir, which jcl does not unpickle'):
    data.load_dataset('cifar10', path=folder)
  assert not (tmp_path / 'ran').exists()


def test_not_a_cifar_folder(tmp_path):
  with pytest.raises(data.DataError, match='not a CIFAR folder'):
    data.load_dataset('cifar10', source='cifar', path=tmp_path)


# -----------------------------------------------------------------------------
# TinyImageNet: found by its folder, or the folder holding it.
# -----------------------------------------------------------------------------


def test_tinyimagenet_folder_or_its_parent(tmp_path):
  from tests.data.test_data_sources import write_tiny_imagenet

  root = tmp_path / 'tiny-imagenet-200'
  write_tiny_imagenet(root, size=64)
  for path in (root, tmp_path):
    bench = data.make_benchmark('split_tinyimagenet', path=str(path), num_tasks=2)
    assert bench.input_shape == (64, 64, 3) and bench.num_tasks == 2
    assert [len(t.train) for t in bench.tasks] == [6, 6]
