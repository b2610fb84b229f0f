"""Splits staged on the JAX device (`jcl.inputs`) equal the NumPy definition."""

import jax
import numpy as np
import pytest

from jcl import data, inputs


@pytest.fixture(scope='module')
def raw():
  return data.load_mnist_sample()


@pytest.mark.parametrize(
  'make, exact',
  [
    (lambda raw: data.permuted_mnist(3, dataset=raw, samples_per_task=200), True),
    (lambda raw: data.rotated_mnist(3, dataset=raw, degrees_per_task=33.0), True),
    (lambda raw: data.split_mnist(dataset=raw, scenario='task'), True),
    (lambda raw: data.permuted_mnist(2, dataset=raw, normalize=False), True),
    (
      lambda raw: data.rotated_mnist(
        3, dataset=raw, degrees_per_task=33.0, interpolation='bilinear'
      ),
      False,
    ),
  ],
  ids=['permuted', 'rotated', 'split', 'unnormalized', 'bilinear'],
)
def test_staged_split_equals_host_inputs(raw, make, exact):
  bench = make(raw)
  for task in (0, bench.num_tasks - 1):
    split = bench.tasks[task].test
    source = jax.device_put(inputs.stored_images(split.images, split.view))
    staged = inputs.stage_split(split, source, len(split) + 7)
    x = np.asarray(staged.x)
    assert x.shape == (len(split) + 7,) + split.images.shape[1:]
    assert not x[len(split) :].any() and not np.asarray(staged.y)[len(split) :].any()
    if exact:
      np.testing.assert_array_equal(x[: len(split)], split.x)
    else:
      np.testing.assert_allclose(x[: len(split)], split.x, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(staged.y)[: len(split)], split.y)
    np.testing.assert_array_equal(np.asarray(staged.t)[: len(split)], split.t)


def test_take_rows_pads_with_zeros(raw):
  split = data.permuted_mnist(1, dataset=raw, samples_per_task=20).tasks[0].train
  staged = inputs.stage_split(split, jax.device_put(inputs.stored_images(split.images, split.view)))
  rows = np.array([[0, 19], [20, 5]], np.int32)
  batch = inputs.take_rows(staged, rows, np.ones((2, 2), np.float32))
  np.testing.assert_array_equal(np.asarray(batch.x)[0, 1], split.x[19])
  assert not np.asarray(batch.x)[1, 0].any() and np.asarray(batch.y)[1, 0] == 0


@pytest.mark.parametrize(
  'n, at_least, expected', [(5, 10, 10), (10, 10, 10), (12665, 0, 13312), (60000, 60000, 60000)]
)
def test_padded_length(n, at_least, expected):
  got = inputs.padded_length(n, at_least)
  assert got == expected and n <= got <= max(at_least, n * 9 // 8 + 1)


def test_color_images_through_maps_and_table():
  """Three channels: each pixel's map moves all channels, each channel its own
  normalization (CIFAR-like constants computed from the images)."""
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, size=(40, 8, 8, 3), dtype=np.uint8)
  y = np.arange(40) % 4
  ds = data.make_dataset('rgb', x, y, x[:12], y[:12])
  from jcl.data import transforms

  for maps in (
    transforms.rotation_maps(8, 8, [0.0, 30.0], 'nearest'),
    transforms.permutation_maps(np.stack([rng.permutation(64) for _ in range(2)])),
  ):
    bench = data.transformed_benchmark(ds, maps, name='rgb_maps')
    for task in bench.tasks:
      split = task.test
      staged = inputs.stage_split(
        split, jax.device_put(inputs.stored_images(split.images, split.view))
      )
      np.testing.assert_array_equal(np.asarray(staged.x), split.x)
