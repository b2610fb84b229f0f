"""Benchmarks: splits, label conventions, transforms, masks, option errors."""

import numpy as np
import pytest

from jcl import data
from jcl.data import transforms


def _rows(x):
  """The set of image rows of a split, as bytes."""
  return {r.tobytes() for r in x.reshape(len(x), -1)}


@pytest.fixture(scope='module')
def raw_sample():
  return data.load_mnist_sample()


# -----------------------------------------------------------------------------
# Split MNIST.
# -----------------------------------------------------------------------------


def test_split_mnist_class_il(raw_sample):
  bench = data.split_mnist(dataset=raw_sample)
  assert bench.name == 'split_mnist' and bench.scenario == 'class'
  assert bench.num_tasks == 5 and bench.num_classes == 10
  assert bench.num_heads == 1 and bench.input_shape == (28, 28, 1)
  assert bench.task_classes == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
  seen = set()
  for k, task in enumerate(bench.tasks):
    assert task.id == k and task.classes == (2 * k, 2 * k + 1)
    assert not seen & set(task.classes)
    seen |= set(task.classes)
    assert task.val is None
    for split, n in ((task.train, 1200), (task.test, 200)):
      assert len(split) == n
      assert split.x.dtype == np.float32 and split.x.shape == (n, 28, 28, 1)
      assert split.y.dtype == np.int32 and split.t.dtype == np.int32
      assert set(np.unique(split.y)) == {2 * k, 2 * k + 1}
      assert (split.t == k).all()
  x = np.concatenate([t.train.x for t in bench.tasks])
  assert abs(x.mean()) < 0.1 and abs(x.std() - 1) < 0.1  # Normalized.


def test_split_labels_follow_class_order(raw_sample):
  order = (3, 7, 0, 9, 1, 2, 8, 4, 6, 5)
  for scenario, multi_head in (('class', False), ('task', False)):
    bench = data.split_mnist(
      dataset=raw_sample, class_order=order, scenario=scenario, multi_head=multi_head
    )
    assert bench.num_classes == 10 and bench.num_heads == 1
    assert bench.info['class_order'] == order
    assert bench.tasks[1].classes == (0, 9)
    assert bench.task_classes[1] == (2, 3)
    # Original 0 -> unit 2, original 9 -> unit 3.
    test = bench.tasks[1].test
    raw = raw_sample.y_test[np.isin(raw_sample.y_test, (0, 9))]
    np.testing.assert_array_equal(test.y, np.where(raw == 0, 2, 3))


@pytest.mark.parametrize('scenario, multi_head, heads', [('domain', False, 1), ('task', True, 5)])
def test_split_within_task_labels(raw_sample, scenario, multi_head, heads):
  order = (3, 7, 0, 9, 1, 2, 8, 4, 6, 5)
  bench = data.split_mnist(
    dataset=raw_sample, scenario=scenario, multi_head=multi_head, class_order=order
  )
  assert bench.num_classes == 2 and bench.num_heads == heads
  assert bench.task_classes == ((0, 1),) * 5
  for task in bench.tasks:
    assert set(np.unique(task.train.y)) == {0, 1}
  raw = raw_sample.y_test[np.isin(raw_sample.y_test, (0, 9))]
  np.testing.assert_array_equal(bench.tasks[1].test.y, (raw == 9).astype(int))


def test_class_order_random_deterministic(raw_sample):
  a = data.split_mnist(dataset=raw_sample, class_order='random', class_order_seed=1)
  b = data.split_mnist(dataset=raw_sample, class_order='random', class_order_seed=1)
  c = data.split_mnist(dataset=raw_sample, class_order='random', class_order_seed=2)
  assert a.info['class_order'] == b.info['class_order']
  assert a.info['class_order'] != c.info['class_order']
  assert sorted(a.info['class_order']) == list(range(10))
  assert a.info['class_order'] != tuple(range(10))
  for ta, tb in zip(a.tasks, b.tasks):
    np.testing.assert_array_equal(ta.train.x, tb.train.x)
    np.testing.assert_array_equal(ta.train.y, tb.train.y)
  # Default class_order_seed is seed.
  d = data.split_mnist(dataset=raw_sample, class_order='random', seed=1)
  assert d.info['class_order'] == a.info['class_order']


def test_val_held_out_from_train(raw_sample):
  bench = data.split_mnist(dataset=raw_sample, val_fraction=0.1, seed=3)
  full = data.split_mnist(dataset=raw_sample)
  for task, whole in zip(bench.tasks, full.tasks):
    assert len(task.val) == 120 and len(task.train) == 1080
    train, val = _rows(task.train.x), _rows(task.val.x)
    assert not train & val  # Disjoint.
    assert train | val == _rows(whole.train.x)  # From train only.
    assert not val & _rows(whole.test.x)
    assert (task.val.t == task.id).all()
    assert set(np.unique(task.val.y)) <= set(bench.task_classes[task.id])
  again = data.split_mnist(dataset=raw_sample, val_fraction=0.1, seed=3)
  other = data.split_mnist(dataset=raw_sample, val_fraction=0.1, seed=4)
  np.testing.assert_array_equal(again.tasks[2].val.x, bench.tasks[2].val.x)
  assert _rows(other.tasks[2].val.x) != _rows(bench.tasks[2].val.x)


def test_samples_per_task(raw_sample):
  bench = data.split_mnist(dataset=raw_sample, samples_per_task=100, val_fraction=0.2)
  for task in bench.tasks:
    assert len(task.train) == 80 and len(task.val) == 20
    assert len(task.test) == 200  # Test never subsampled.
  with pytest.raises(ValueError, match='samples_per_task'):
    data.split_mnist(dataset=raw_sample, samples_per_task=5000)


def test_split_cifar100_sizes(make_tiny):
  ds = make_tiny(num_classes=100, per_class=2, test_per_class=1, shape=(4, 4, 3), name='cifar100')
  bench = data.split_cifar100(dataset=ds)
  assert bench.num_tasks == 10 and bench.num_classes == 100
  assert bench.task_classes[9] == tuple(range(90, 100))
  bench = data.split_cifar100(20, dataset=ds, multi_head=True, scenario='task')
  assert bench.num_heads == 20 and bench.num_classes == 5


def test_masks(raw_sample):
  bench = data.split_mnist(dataset=raw_sample)
  np.testing.assert_array_equal(bench.task_classes_mask(1), [0, 0, 1, 1, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(bench.seen_classes_mask(1), [1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
  assert bench.seen_classes_mask(4).all()
  table = bench.class_mask_table()
  assert table.shape == (5, 10) and table.dtype == bool
  for k in range(5):
    np.testing.assert_array_equal(table[k], bench.task_classes_mask(k))
  np.testing.assert_array_equal(table.sum(0), np.ones(10))
  with pytest.raises(ValueError, match='task_id'):
    bench.task_classes_mask(5)
  domain = data.split_mnist(dataset=raw_sample, scenario='domain')
  assert domain.class_mask_table().shape == (5, 2)
  assert domain.class_mask_table().all()


def test_joint_task(raw_sample):
  bench = data.split_mnist(dataset=raw_sample, samples_per_task=50)
  joint = data.joint_task(bench, 2)
  assert len(joint) == 150
  np.testing.assert_array_equal(joint.t, np.repeat([0, 1, 2], 50))
  np.testing.assert_array_equal(joint.x[50:100], bench.tasks[1].train.x)
  assert set(np.unique(joint.y)) == set(range(6))
  assert len(data.joint_task(bench, 4, split='test')) == 1000
  with pytest.raises(ValueError, match='upto_task'):
    data.joint_task(bench, 5)


def test_normalize_false(raw_sample):
  bench = data.split_mnist(dataset=raw_sample, normalize=False)
  x = bench.tasks[0].test.x
  assert x.min() == 0 and x.max() == 1


# -----------------------------------------------------------------------------
# Permuted MNIST.
# -----------------------------------------------------------------------------


def test_permutations():
  perms = data.task_permutations(5, 784, seed=0)
  for p in perms:
    np.testing.assert_array_equal(np.sort(p), np.arange(784))
  assert len({p.tobytes() for p in perms}) == 5
  assert not (perms[0] == np.arange(784)).all()
  ident = data.task_permutations(3, 784, seed=0, first_task_identity=True)
  np.testing.assert_array_equal(ident[0], np.arange(784))
  np.testing.assert_array_equal(ident[1:], perms[1:3])  # Per-task streams.
  np.testing.assert_array_equal(perms, data.task_permutations(5, 784, seed=0))
  assert not (perms == data.task_permutations(5, 784, seed=1)).all()


def test_permuted_mnist(raw_sample):
  bench = data.permuted_mnist(3, dataset=raw_sample, samples_per_task=200)
  assert bench.scenario == 'domain' and bench.num_classes == 10
  assert bench.num_heads == 1 and bench.task_classes == (tuple(range(10)),) * 3
  perms = bench.info['permutations']
  assert perms.shape == (3, 784)
  mean, std = transforms.normalization_constants('mnist')
  for k, task in enumerate(bench.tasks):
    assert task.classes == tuple(range(10))
    assert len(task.train) == 200 and len(task.test) == 1000
    expected = transforms.to_float(data.permute_pixels(raw_sample.x_test, perms[k]), mean, std)
    np.testing.assert_allclose(task.test.x, expected)
    np.testing.assert_array_equal(task.test.y, raw_sample.y_test)
  # Each task draws its own training subset.
  assert _rows(bench.tasks[0].train.x) != _rows(bench.tasks[1].train.x)
  # Pixel statistics are preserved (same image, permuted).
  a, b = bench.tasks[0].test.x[0], bench.tasks[1].test.x[0]
  np.testing.assert_allclose(np.sort(a.ravel()), np.sort(b.ravel()))


def test_permuted_mnist_scenarios(raw_sample):
  cls = data.permuted_mnist(3, scenario='class', dataset=raw_sample, samples_per_task=30)
  assert cls.num_classes == 30 and cls.task_classes[2] == tuple(range(20, 30))
  np.testing.assert_array_equal(cls.tasks[2].test.y, raw_sample.y_test + 20)
  assert cls.seen_classes_mask(1).sum() == 20
  task = data.permuted_mnist(
    3, scenario='task', multi_head=True, dataset=raw_sample, samples_per_task=30
  )
  assert task.num_heads == 3 and task.num_classes == 10
  first = data.permuted_mnist(
    2, first_task_identity=True, dataset=raw_sample, samples_per_task=30, normalize=False
  )
  np.testing.assert_allclose(first.tasks[0].test.x, raw_sample.x_test.astype(np.float32) / 255)


# -----------------------------------------------------------------------------
# Rotated MNIST.
# -----------------------------------------------------------------------------


def test_rotate_90_is_rot90(raw_sample):
  x = raw_sample.x_test[:20]
  for k, angle in ((1, 90), (2, 180), (3, 270), (3, -90), (0, 360)):
    np.testing.assert_array_equal(data.rotate_images(x, angle), np.rot90(x, k, axes=(1, 2)))
    np.testing.assert_allclose(
      data.rotate_images(x, angle, 'bilinear'), np.rot90(x, k, axes=(1, 2)), atol=1e-3
    )


def test_rotate_counter_clockwise():
  x = np.zeros((1, 5, 5, 1), np.uint8)
  x[0, 2, 4] = 1  # Right of center.
  out = data.rotate_images(x, 90)
  assert out[0, 0, 2, 0] == 1  # Counter-clockwise: now above center.


def test_rotate_small_angle_keeps_mass(raw_sample):
  x = raw_sample.x_test[:50]
  out = data.rotate_images(x, 20.0)
  assert out.dtype == np.uint8 and out.shape == x.shape
  ratio = out.astype(float).sum() / x.astype(float).sum()
  assert 0.95 < ratio < 1.05  # Digits are centered: nothing cut off.
  assert not (out == x).all()


def test_rotate_matches_pil(raw_sample):
  image = pytest.importorskip('PIL.Image')
  x = raw_sample.x_test[:10]
  for angle in (9.0, 33.3, 45.0, 123.4, -17.0):
    ours = data.rotate_images(x, angle)
    pil = np.stack([np.asarray(image.fromarray(im[..., 0]).rotate(angle)) for im in x])[..., None]
    np.testing.assert_array_equal(ours, pil)
    ours = data.rotate_images(x, angle, 'bilinear')
    pil = np.stack(
      [np.asarray(image.fromarray(im[..., 0]).rotate(angle, resample=image.BILINEAR)) for im in x]
    )[..., None]
    np.testing.assert_allclose(ours, pil, atol=1.0)


def test_task_angles():
  np.testing.assert_allclose(data.task_angles(20, 'fixed_step', 9.0), 9.0 * np.arange(20))
  angles = data.task_angles(10, 'random', seed=0)
  bins = np.arange(10) * 18.0
  assert ((angles >= bins) & (angles < bins + 18.0)).all()
  np.testing.assert_array_equal(angles, data.task_angles(10, 'random', seed=0))
  assert not (angles == data.task_angles(10, 'random', seed=1)).any()


def test_rotated_mnist(raw_sample):
  bench = data.rotated_mnist(
    4, dataset=raw_sample, degrees_per_task=30.0, samples_per_task=100, normalize=False
  )
  assert bench.info['angles'] == (0.0, 30.0, 60.0, 90.0)
  assert bench.scenario == 'domain' and bench.num_classes == 10
  np.testing.assert_allclose(bench.tasks[0].test.x, raw_sample.x_test.astype(np.float32) / 255)
  np.testing.assert_allclose(
    bench.tasks[3].test.x, np.rot90(raw_sample.x_test, 1, axes=(1, 2)).astype(np.float32) / 255
  )
  rnd = data.make_benchmark(
    'rotated_mnist', num_tasks=3, angles='random', seed=5, dataset=raw_sample, samples_per_task=10
  )
  angles = np.asarray(rnd.info['angles'])
  assert ((angles >= [0, 60, 120]) & (angles < [60, 120, 180])).all()


# -----------------------------------------------------------------------------
# Registry and option errors.
# -----------------------------------------------------------------------------


def test_registry_names():
  assert set(data.BENCHMARKS) == {
    'split_mnist',
    'permuted_mnist',
    'rotated_mnist',
    'split_fashion_mnist',
    'split_cifar10',
    'split_cifar100',
    'split_tinyimagenet',
  }
  bench = data.make_benchmark('split_mnist', samples_per_task=20)
  assert bench.num_tasks == 5  # Bundled sample by default.


@pytest.mark.parametrize(
  'name, kwargs, field',
  [
    ('split_mnist', dict(num_tasks=3), 'num_tasks'),
    ('split_mnist', dict(num_tasks=0), 'num_tasks'),
    ('split_mnist', dict(scenario='online'), 'scenario'),
    ('split_mnist', dict(val_fraction=1.0), 'val_fraction'),
    ('split_mnist', dict(val_fraction=-0.1), 'val_fraction'),
    ('split_mnist', dict(samples_per_task=0), 'samples_per_task'),
    ('split_mnist', dict(samples_per_task=-3), 'samples_per_task'),
    ('split_mnist', dict(multi_head=True), 'multi_head'),
    ('split_mnist', dict(class_order='sorted'), 'class_order'),
    ('split_mnist', dict(class_order=(0, 1, 2)), 'class_order'),
    ('split_mnist', dict(source='hdf5'), 'source'),
    ('split_mnist', dict(normalize='yes'), 'normalize'),
    ('split_mnist', dict(num_classes=10), 'num_classes'),
    ('permuted_mnist', dict(scenario='domain', multi_head=True), 'multi_head'),
    ('permuted_mnist', dict(first_task_identity=1), 'first_task_identity'),
    ('rotated_mnist', dict(angles='uniform'), 'angles'),
    ('rotated_mnist', dict(interpolation='cubic'), 'interpolation'),
    ('rotated_mnist', dict(class_order='random'), 'class_order'),
    ('split_imagenet', dict(), 'split_mnist'),
  ],
)
def test_bad_options_raise(name, kwargs, field):
  with pytest.raises(ValueError, match=field) as err:
    data.make_benchmark(name, **kwargs)
  if field == 'num_tasks' and kwargs['num_tasks'] == 3:
    assert '[1, 2, 5, 10]' in str(err.value)  # The allowed values.
  if field == 'scenario':
    assert "'task', 'domain', 'class'" in str(err.value)
