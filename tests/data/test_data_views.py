"""Task splits as views of the stored images (`jcl.data.views`): the same inputs
as materializing every task, memory that does not grow with the tasks."""

import numpy as np
import pytest

from jcl import data
from jcl.data import transforms, views


@pytest.fixture(scope='module')
def raw(sample):
  return sample


def _reference_inputs(raw, bench, task, split='test'):
  """The inputs as the data layer materialized them before views: transform
  the stored images, then `to_float`."""
  mean, std = transforms.normalization_constants('mnist')
  s = getattr(bench.tasks[task], split)
  images = (raw.x_test if split == 'test' else raw.x_train)[s.rows]
  if bench.name == 'permuted_mnist':
    images = data.permute_pixels(images, bench.info['permutations'][task])
  elif bench.name == 'rotated_mnist':
    images = data.rotate_images(images, bench.info['angles'][task], bench.info['interpolation'])
  return transforms.to_float(images, mean, std)


@pytest.mark.parametrize(
  'make',
  [
    lambda raw: data.permuted_mnist(3, dataset=raw, samples_per_task=300),
    lambda raw: data.rotated_mnist(3, dataset=raw, degrees_per_task=33.0, samples_per_task=300),
    lambda raw: data.split_mnist(dataset=raw, samples_per_task=300),
  ],
  ids=['permuted', 'rotated', 'split'],
)
def test_split_inputs_equal_the_materialized_ones_bit_for_bit(raw, make):
  bench = make(raw)
  for task in range(bench.num_tasks):
    for split in ('train', 'test'):
      np.testing.assert_array_equal(
        getattr(bench.tasks[task], split).x, _reference_inputs(raw, bench, task, split)
      )


def test_lookup_table_is_the_arithmetic():
  view = views.InputView.make(255.0, np.float32([0.4914, 0.48]), np.float32([0.247, 0.24]), 2)
  table = view.lookup_table()
  assert table.shape == (256, 2) and table.dtype == np.float32
  pixels = np.arange(256, dtype=np.uint8)
  expected = (pixels.astype(np.float32)[:, None] * np.float32(1 / 255) - view.mean) / view.std
  np.testing.assert_array_equal(table, expected)


def test_inputs_of_some_rows_and_padding(raw):
  bench = data.permuted_mnist(2, dataset=raw, samples_per_task=50)
  split = bench.tasks[1].train
  idx = np.array([3, 0, 49, 50, 77])  # 50 and 77 are padding (>= N)
  got = split.inputs(idx)
  np.testing.assert_array_equal(got[:3], split.x[[3, 0, 49]])
  assert not got[3:].any()


def test_joint_task_keeps_each_sample_in_its_task_view(raw):
  bench = data.permuted_mnist(3, dataset=raw, samples_per_task=40)
  joint = data.joint_task(bench, 2)
  assert joint.images is raw.x_train and len(joint) == 120
  np.testing.assert_array_equal(joint.x, np.concatenate([bench.tasks[k].train.x for k in range(3)]))


def test_benchmark_memory_does_not_grow_with_tasks(raw):
  """200 Permuted MNIST tasks hold the dataset once: the per-task cost is row
  numbers, labels and a pixel map, not 200 copies of the images."""
  small = data.permuted_mnist(2, dataset=raw)
  large = data.permuted_mnist(200, dataset=raw)

  def owned_bytes(bench):
    arrays = {}
    for task in bench.tasks:
      for s in (task.train, task.test):
        arrays[id(s.images)] = s.images
        for a in (s.rows, s.y, s.t):
          arrays[id(a)] = a
    maps = bench.tasks[0].train.view.maps
    return sum(a.nbytes for a in arrays.values()) + maps.index.nbytes

  image_bytes = raw.x_train.nbytes + raw.x_test.nbytes
  per_task = (owned_bytes(large) - owned_bytes(small)) / 198
  assert per_task < 0.4 * image_bytes / 1  # one copy of the images would be 1.0
  assert large.tasks[199].test.images is raw.x_test


def test_same_samples(raw):
  a = data.permuted_mnist(2, dataset=raw, samples_per_task=30, seed=1)
  b = data.permuted_mnist(2, dataset=raw, samples_per_task=30, seed=1)
  c = data.permuted_mnist(2, dataset=raw, samples_per_task=30, seed=2)
  assert a.tasks[1].test.same_samples(b.tasks[1].test)
  assert not a.tasks[1].test.same_samples(c.tasks[1].test)


def test_loaded_datasets_are_shared_between_benchmarks(real_mnist_dir):
  a = data.permuted_mnist(2, path=real_mnist_dir, seed=0)
  b = data.permuted_mnist(2, path=real_mnist_dir, seed=1)
  assert a.tasks[0].train.images is b.tasks[0].train.images


def test_bilinear_maps_match_the_nested_formula(raw):
  """The four weighted taps equal bilinear interpolation written the usual
  way (rows, then columns) to float rounding."""
  x = raw.x_test[:5].astype(np.float32)
  out = data.rotate_images(raw.x_test[:5], 33.0, 'bilinear')
  sx, sy = transforms._bilinear_source_coords(28, 28, 33.0)
  valid = (sx >= 0) & (sx < 28) & (sy >= 0) & (sy < 28)
  px, py = sx - 0.5, sy - 0.5
  x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
  fx, fy = (px - x0)[None, ..., None], (py - y0)[None, ..., None]
  at = lambda yy, xx: x[:, np.clip(yy, 0, 27), np.clip(xx, 0, 27)]
  top = at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx
  bottom = at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx
  expected = (top * (1 - fy) + bottom * fy) * valid[None, ..., None]
  np.testing.assert_allclose(out, expected, atol=1e-4)
  assert transforms.rotation_maps(28, 28, [33.0], 'bilinear').index.shape == (1, 4, 784)
