"""The executor's data path (jcl.torch.fit): a task's split derived once
(`Staged`) gives the batches and the `end_task` data of `stream.gather`, bit
for bit; a cumulative split is not staged; denormals are flushed inside a
walk and the caller's mode is back after it."""

import numpy as np
import pytest
import torch

from jcl import specs
from jcl.data import benchmarks
from jcl.data import stream
from jcl.torch import algorithms
from jcl.torch import fit
from jcl.torch import models
from jcl.torch import train_state as ts_lib
from jcl.types import Batch


@pytest.fixture(scope='module')
def bench():
  return benchmarks.make_benchmark(
    'permuted_mnist', num_tasks=2, source='sample', samples_per_task=195, seed=0
  )


def assert_batches_equal(got: Batch, want: Batch):
  for name, a, b in zip(Batch._fields, got, want):
    assert a.dtype == b.dtype and a.shape == b.shape, name
    assert torch.equal(a, b), name


def test_staged_batches_are_the_gathered_ones(bench):
  """Shuffled chunks, the last one with a partly padded batch and all-padding ones."""
  split = bench.tasks[1].train
  staged = fit.Staged.of(split, 'cpu', padding=7)
  chunks = list(
    stream.epoch_index_chunks(
      len(split), batch_size=16, chunk_steps=5, rng=np.random.default_rng(3)
    )
  )
  assert chunks[-1].padding_steps and not chunks[-1].mask[-1].all()
  for chunk in chunks:
    want = list(fit.chunk_batches(fit.to_tensors(stream.gather(split, chunk), 'cpu')))
    got = list(staged.batches(chunk))
    assert len(got) == len(want) == int(chunk.mask.any(1).sum())
    for a, b in zip(got, want):
      assert_batches_equal(a, b)


@pytest.mark.parametrize('rows', [None, np.array([0, 5, 6, 100, 194])])
def test_staged_task_data_is_the_gathered_one(bench, rows):
  """All rows (a view of the staged inputs) or a subsample (gathered)."""
  split = bench.tasks[0].train
  batch_size = 32
  staged = fit.Staged.of(split, 'cpu', padding=-len(split) % batch_size or 1)
  chunk = stream.subset_index_chunk(len(split), batch_size, rows)
  got = staged.chunk(chunk)
  assert_batches_equal(got, fit.to_tensors(stream.gather(split, chunk), 'cpu'))
  assert (got.x.untyped_storage().data_ptr() == staged.x.untyped_storage().data_ptr()) == (
    rows is None
  )


def run(bench, cumulative):
  model = models.make_model('mlp', bench.input_shape, widths=(16,), seed=0)
  state = ts_lib.create_train_state(model, specs.OptimizerSpec(learning_rate=0.05), num_classes=10)
  config = fit.TrainConfig(batch_size=10, chunk_steps=4, seed=0)
  algorithm = algorithms.build(specs.make_spec('ewc', ewc_lambda=1.0))
  staged = []
  place_task = fit.TorchExecutor.place_task

  def spy(self, task_id, splits):
    place_task(self, task_id, splits)
    staged.append(self._staged is not None)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(fit.TorchExecutor, 'place_task', spy)
    result = fit.fit(algorithm, state, bench, config, cumulative_data=cumulative)
  return result, staged


def test_a_cumulative_split_is_derived_chunk_by_chunk(bench):
  """Joint's training split grows with the task: it is never staged whole."""
  result, staged = run(bench, cumulative=True)
  assert staged == [False, False]
  assert np.isfinite(result.accuracy_matrix).all()
  _, staged = run(bench, cumulative=False)
  assert staged == [True, True]


def flushing() -> bool:
  return float(torch.tensor(1e-38) * 0.5) == 0.0


@pytest.mark.parametrize('before', [False, True])
def test_denormals_are_flushed_in_a_walk_and_the_mode_restored(before):
  torch.set_flush_denormal(before)
  try:
    with fit.walk_environment(0, 'cpu'):
      assert flushing()
    assert flushing() == before
  finally:
    torch.set_flush_denormal(False)
