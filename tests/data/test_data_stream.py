"""Fixed-shape chunk streams."""

import numpy as np
import pytest

from jcl import data
from jcl.types import Batch


def make_split(n, shape=(3, 2, 1), task=1):
  x = (np.arange(n, dtype=np.float32)[:, None, None, None] + 1) * np.ones((1,) + shape, np.float32)
  return data.TaskSplit.of_arrays(x, np.arange(n, dtype=np.int32) % 7, np.full(n, task, np.int32))


def ids(chunk):
  """Sample ids (x value - 1) of the mask-1 entries of a chunk."""
  m = chunk.mask.reshape(-1) == 1
  return chunk.x.reshape(len(m), -1)[m, 0].astype(int) - 1


@pytest.mark.parametrize(
  'n, b, k', [(100, 8, 3), (96, 8, 3), (24, 8, 3), (5, 8, 4), (1, 1, 1), (97, 10, 1)]
)
@pytest.mark.parametrize('shuffle', [False, True])
def test_each_sample_once(n, b, k, shuffle):
  split = make_split(n)
  rng = np.random.default_rng(0) if shuffle else None
  chunks = list(data.epoch_chunks(split, batch_size=b, chunk_steps=k, rng=rng))
  assert len(chunks) == data.num_chunks(n, b, k)
  seen = np.concatenate([ids(c) for c in chunks])
  np.testing.assert_array_equal(np.sort(seen), np.arange(n))
  if not shuffle:
    np.testing.assert_array_equal(seen, np.arange(n))
  for c in chunks:
    assert isinstance(c, Batch)
    assert c.x.shape == (k, b, 3, 2, 1) and c.x.dtype == np.float32
    assert c.y.shape == (k, b) and c.y.dtype == np.int32
    assert c.t.shape == (k, b) and c.t.dtype == np.int32
    assert c.mask.shape == (k, b) and c.mask.dtype == np.float32
    pad = c.mask == 0
    assert (c.x[pad] == 0).all() and (c.y[pad] == 0).all()
    assert (c.t[~pad] == 1).all()
    # Labels travel with their images.
    np.testing.assert_array_equal(c.y[~pad], (c.x[~pad][:, 0, 0, 0] - 1) % 7)
  mask = np.concatenate([c.mask.reshape(-1) for c in chunks])
  np.testing.assert_array_equal(mask[:n], 1)  # Padding only at the end.
  np.testing.assert_array_equal(mask[n:], 0)
  total_batches = sum(int((c.mask.sum(1) > 0).sum()) for c in chunks)
  assert total_batches == data.num_batches(n, b)


def test_padding_batches_are_all_mask_zero():
  chunks = list(data.epoch_chunks(make_split(10), batch_size=4, chunk_steps=5, rng=None))
  assert len(chunks) == 1
  np.testing.assert_array_equal(chunks[0].mask.sum(1), [4, 4, 2, 0, 0])


def test_drop_last():
  split = make_split(10)
  chunks = list(
    data.epoch_chunks(
      split, batch_size=4, chunk_steps=5, rng=np.random.default_rng(1), drop_last=True
    )
  )
  np.testing.assert_array_equal(chunks[0].mask.sum(1), [4, 4, 0, 0, 0])
  assert len(np.unique(ids(chunks[0]))) == 8
  assert data.num_batches(10, 4, drop_last=True) == 2
  assert (
    list(data.epoch_chunks(make_split(3), batch_size=4, chunk_steps=2, rng=None, drop_last=True))
    == []
  )


def test_same_seed_same_order():
  split = make_split(50)

  def order(seed):
    return np.concatenate(
      [
        ids(c)
        for c in data.epoch_chunks(
          split, batch_size=8, chunk_steps=2, rng=np.random.default_rng(seed)
        )
      ]
    )

  np.testing.assert_array_equal(order(3), order(3))
  assert not (order(3) == order(4)).all()
  assert not (order(3) == np.arange(50)).all()


def test_eval_chunks_in_order():
  split = make_split(23)
  chunks = list(data.eval_chunks(split, batch_size=5, chunk_steps=2))
  assert len(chunks) == 3
  np.testing.assert_array_equal(np.concatenate([ids(c) for c in chunks]), np.arange(23))


def test_counts():
  assert data.num_batches(0, 4) == 0
  assert data.num_batches(9, 4) == 3 and data.num_batches(8, 4) == 2
  assert data.num_batches(9, 4, drop_last=True) == 2
  assert data.num_chunks(9, 4, 2) == 2 and data.num_chunks(9, 4, 3) == 1
  assert data.num_chunks(100, 10, 3, drop_last=True) == 4
  for bad in (0, -1, 2.5):
    with pytest.raises(ValueError, match='batch_size'):
      data.num_batches(10, bad)
    with pytest.raises(ValueError, match='chunk_steps'):
      data.epoch_chunks(make_split(3), batch_size=2, chunk_steps=bad, rng=None)


def test_benchmark_task_stream():
  bench = data.split_mnist(samples_per_task=100)
  chunks = list(
    data.epoch_chunks(
      bench.tasks[3].train, batch_size=32, chunk_steps=2, rng=np.random.default_rng(0)
    )
  )
  assert len(chunks) == 2
  assert chunks[0].x.shape == (2, 32, 28, 28, 1)
  assert sum(c.mask.sum() for c in chunks) == 100
  assert set(np.unique(chunks[0].t)) == {3}
