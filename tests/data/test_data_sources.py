"""NPZ, TFDS, TinyImageNet-folder sources, the dispatcher and the sample."""

import os
import subprocess
import sys

import numpy as np
import pytest

from jcl import data
from jcl.data import sources


def test_npz_round_trip(tmp_path, make_tiny):
  ds = make_tiny()
  data.save_npz(ds, tmp_path / 'd.npz')
  out = data.load_npz(tmp_path / 'd.npz')
  assert out.name == 'tiny' and out.num_classes == 4
  for key in ('x_train', 'y_train', 'x_test', 'y_test'):
    np.testing.assert_array_equal(getattr(out, key), getattr(ds, key))


def test_npz_plain_keys_and_nhw_images(tmp_path):
  np.savez(
    tmp_path / 'mnist.npz',
    x_train=np.zeros((5, 3, 3), np.uint8),
    y_train=np.arange(5),
    x_test=np.zeros((2, 3, 3), np.uint8),
    y_test=np.arange(2),
    extra=np.zeros(1),
  )
  ds = data.load_npz(tmp_path / 'mnist.npz')
  assert ds.name == 'mnist' and ds.num_classes == 10  # Known dataset.
  assert ds.x_train.shape == (5, 3, 3, 1)


def test_npz_missing_key(tmp_path):
  np.savez(
    tmp_path / 'd.npz',
    x_train=np.zeros((5, 3, 3)),
    y_train=np.zeros(5, int),
    x_test=np.zeros((2, 3, 3)),
  )
  with pytest.raises(data.DataError, match='y_test') as err:
    data.load_npz(tmp_path / 'd.npz')
  assert 'd.npz' in str(err.value)


def test_npz_length_mismatch(tmp_path):
  np.savez(
    tmp_path / 'd.npz',
    x_train=np.zeros((5, 3, 3), np.uint8),
    y_train=np.zeros(4, int),
    x_test=np.zeros((2, 3, 3), np.uint8),
    y_test=np.zeros(2, int),
  )
  with pytest.raises(data.DataError, match='y_train') as err:
    data.load_npz(tmp_path / 'd.npz')
  assert 'd.npz' in str(err.value) and 'x_train' in str(err.value)


@pytest.mark.parametrize('content', [b'not a zip file', b''])
def test_npz_not_npz(tmp_path, content):
  (tmp_path / 'bad.npz').write_bytes(content)
  with pytest.raises(data.DataError, match='bad.npz: not an NPZ archive'):
    data.load_npz(tmp_path / 'bad.npz')


def test_npz_missing_file(tmp_path):
  with pytest.raises(data.DataError, match='no such file or folder: .*nope.npz'):
    data.load_npz(tmp_path / 'nope.npz')


def test_npz_without_suffix_is_found_by_content(tmp_path, make_tiny):
  data.save_npz(make_tiny(), tmp_path / 'd.npz')
  os.rename(tmp_path / 'd.npz', tmp_path / 'd.data')
  assert data.load_dataset('tiny', path=tmp_path / 'd.data').num_classes == 4
  (tmp_path / 'd.txt').write_text('1,2,3')
  with pytest.raises(data.DataError, match='cannot infer the source'):
    data.load_dataset('tiny', path=tmp_path / 'd.txt')


def test_pixel_max_round_trip(tmp_path, make_tiny):
  ds = make_tiny()
  assert ds.pixel_max == 255.0
  unit = data.make_dataset(
    'tiny', ds.x_train / 255.0, ds.y_train, ds.x_test / 255.0, ds.y_test, pixel_max=1.0
  )
  data.save_npz(unit, tmp_path / 'u.npz')
  assert data.load_npz(tmp_path / 'u.npz').pixel_max == 1.0  # Stored with the arrays.
  assert data.load_dataset('tiny', path=tmp_path / 'u.npz', pixel_max=255).pixel_max == 255.0


def test_bundled_sample(sample):
  assert sample.name == 'mnist' and sample.num_classes == 10
  assert sample.x_train.shape == (6000, 28, 28, 1)
  assert sample.x_test.shape == (1000, 28, 28, 1)
  assert sample.x_train.dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(sample.y_train), [600] * 10)
  np.testing.assert_array_equal(np.bincount(sample.y_test), [100] * 10)
  # Real digits: MNIST's mean intensity (0.1307), saturated strokes, and
  # every image has a stroke of ink and a black border row.
  assert 0.11 < sample.x_train.mean() / 255 < 0.15
  assert sample.x_train.max() == 255
  assert (sample.x_train.reshape(6000, -1).max(1) > 128).all()
  assert ((sample.x_train.reshape(6000, -1) > 0).sum(1) >= 30).all()
  assert sample.x_train[:, 0, :].max() == 0
  assert os.path.getsize(sources.MNIST_SAMPLE_PATH) < 3_000_000


def test_sample_matches_real_mnist(sample, real_mnist_dir):
  real = data.load_idx_dir(real_mnist_dir)
  with np.load(sources.MNIST_SAMPLE_PATH) as npz:
    train_idx, test_idx = npz['train_indices'], npz['test_indices']
  np.testing.assert_array_equal(real.x_train[train_idx], sample.x_train)
  np.testing.assert_array_equal(real.y_test[test_idx], sample.y_test)


def test_make_mnist_sample_script(tmp_path, real_mnist_dir):
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  out = tmp_path / 's.npz'
  subprocess.run(
    [
      sys.executable,
      os.path.join(root, 'scripts', 'make_mnist_sample.py'),
      '--mnist_dir',
      str(real_mnist_dir),
      '--out',
      str(out),
      '--train_per_class',
      '5',
      '--test_per_class',
      '2',
    ],
    check=True,
    capture_output=True,
  )
  ds = data.load_npz(out)
  np.testing.assert_array_equal(np.bincount(ds.y_train), [5] * 10)
  assert len(ds.y_test) == 20


def test_load_dataset_dispatch(tmp_path, make_tiny):
  assert data.load_dataset('mnist').x_train.shape == (6000, 28, 28, 1)
  assert data.load_dataset('MNIST', source='sample').name == 'mnist'
  data.save_npz(make_tiny(), tmp_path / 't.npz')
  assert data.load_dataset('tiny', path=tmp_path / 't.npz').num_classes == 4
  assert data.load_dataset('tiny', 'npz', tmp_path / 't.npz').name == 'tiny'
  for name, array in zip(
    (
      'train-images-idx3-ubyte',
      'train-labels-idx1-ubyte',
      't10k-images-idx3-ubyte',
      't10k-labels-idx1-ubyte',
    ),
    (
      np.zeros((3, 4, 4), np.uint8),
      np.arange(3, dtype=np.uint8),
      np.zeros((2, 4, 4), np.uint8),
      np.arange(2, dtype=np.uint8),
    ),
  ):
    data.write_idx(tmp_path / name, array)
  ds = data.load_dataset('fashion-mnist', path=tmp_path)  # auto -> idx.
  assert ds.name == 'fashion_mnist' and ds.x_train.shape == (3, 4, 4, 1)


@pytest.mark.parametrize(
  'kwargs, match',
  [
    (dict(name='mnist', source='hdf5'), 'source='),
    (dict(name='cifar10', source='sample'), 'no bundled sample'),
    (dict(name='mnist', source='idx'), 'needs path'),
    (dict(name='mnist', source='npz'), 'needs path'),
    (dict(name='tinyimagenet'), 'tinyimagenet'),
    (dict(name='mnist', source='folder', path='.'), 'folder'),
  ],
)
def test_load_dataset_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    data.load_dataset(**kwargs)


# -----------------------------------------------------------------------------
# TFDS through tfds.testing.mock_data (no download, no TensorFlow).
# -----------------------------------------------------------------------------


@pytest.fixture(scope='module')
def tfds():
  return pytest.importorskip('tensorflow_datasets')


@pytest.mark.parametrize(
  'name, shape, num_classes',
  [
    ('mnist', (28, 28, 1), 10),
    ('fashion_mnist', (28, 28, 1), 10),
    ('cifar10', (32, 32, 3), 10),
  ],
)
def test_load_tfds_mock(tfds, name, shape, num_classes):
  with tfds.testing.mock_data(num_examples=30):
    ds = data.load_tfds(name)
  assert ds.name == name and ds.num_classes == num_classes
  assert ds.x_train.shape == (30,) + shape and ds.x_train.dtype == np.uint8
  assert ds.x_test.shape == (30,) + shape
  assert ds.y_train.dtype == np.int64
  assert 0 <= ds.y_train.min() and ds.y_train.max() < num_classes
  assert ds.class_names is not None and len(ds.class_names) == num_classes


def test_tfds_builder_mock(tfds):
  with tfds.testing.mock_data(num_examples=200):
    ds = data.load_dataset('cifar10', source='tfds')
    bench = data.split_cifar10(source='tfds', scenario='domain')
  assert ds.x_train.shape == (200, 32, 32, 3)
  assert bench.num_tasks == 5 and bench.input_shape == (32, 32, 3)
  assert sum(len(t.train) for t in bench.tasks) == 200
  assert {int(y) for t in bench.tasks for y in t.train.y} <= {0, 1}


# -----------------------------------------------------------------------------
# TinyImageNet folder.
# -----------------------------------------------------------------------------


def write_tiny_imagenet(root, wnids=('n02', 'n01', 'n03', 'n04'), n_train=3, n_val=2, size=8):
  image_lib = pytest.importorskip('PIL.Image')
  rng = np.random.default_rng(0)
  root.mkdir()
  (root / 'wnids.txt').write_text('\n'.join(wnids) + '\n')
  lines = []
  for wnid in wnids:
    folder = root / 'train' / wnid / 'images'
    folder.mkdir(parents=True)
    for i in range(n_train):
      im = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
      image_lib.fromarray(im).save(folder / f'{wnid}_{i}.JPEG')
  (root / 'val' / 'images').mkdir(parents=True)
  for j in range(n_val * len(wnids)):
    wnid = wnids[j % len(wnids)]
    im = rng.integers(0, 256, (size, size), dtype=np.uint8)  # Grayscale.
    image_lib.fromarray(im).save(root / 'val' / 'images' / f'val_{j}.JPEG')
    lines.append(f'val_{j}.JPEG\t{wnid}\t0\t0\t{size}\t{size}')
  (root / 'val' / 'val_annotations.txt').write_text('\n'.join(lines) + '\n')


def test_tinyimagenet_folder(tmp_path):
  root = tmp_path / 'tiny-imagenet-200'
  write_tiny_imagenet(root)
  ds = data.load_dataset('tinyimagenet', path=root)
  assert ds.class_names == ('n01', 'n02', 'n03', 'n04')
  assert ds.num_classes == 4
  assert ds.x_train.shape == (12, 8, 8, 3) and ds.x_test.shape == (8, 8, 8, 3)
  np.testing.assert_array_equal(np.bincount(ds.y_train), [3] * 4)
  assert ds.y_test[0] == 1  # val_0 is n02, class 1 in sorted order.
  bench = data.split_tinyimagenet(root, num_tasks=2, normalize=False)
  assert bench.task_classes == ((0, 1), (2, 3))
  data.save_npz(ds, tmp_path / 'tin.npz')
  again = data.split_tinyimagenet(tmp_path / 'tin.npz', num_tasks=2, normalize=False)
  np.testing.assert_array_equal(again.tasks[1].test.x, bench.tasks[1].test.x)


def test_tinyimagenet_bad_annotation(tmp_path):
  root = tmp_path / 'tiny-imagenet-200'
  write_tiny_imagenet(root)
  with open(root / 'val' / 'val_annotations.txt', 'a') as f:
    f.write('val_x.JPEG\tn99\t0\t0\t1\t1\n')
  with pytest.raises(data.DataError, match='val_annotations.txt'):
    data.load_tinyimagenet(root)


def test_tinyimagenet_missing(tmp_path):
  with pytest.raises(data.DataError, match='wnids.txt'):
    data.load_tinyimagenet(tmp_path)
  with pytest.raises(ValueError, match='path'):
    data.split_tinyimagenet()


def test_import_is_numpy_only():
  code = (
    'import sys, jcl.data; bad = [m for m in ("jax", "torch", '
    '"tensorflow", "tensorflow_datasets", "PIL", "scipy") if m in '
    'sys.modules]; assert not bad, bad'
  )
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  subprocess.run([sys.executable, '-c', code], check=True, cwd=root)
