"""Checkpoints of the PyTorch backend (`jcl.torch.checkpoint`): a run stopped
mid-task and started again in the same workdir ends bit-identical to an
uninterrupted one (parameters, optimizer buffers, replay buffer, dropout
draws, accuracy matrix, history); a corrupt newest checkpoint is reported by
name and the previous one used; a different config is refused; a failed
write is one clear error that removes nothing older.

The stream: class-incremental Split MNIST, 5 tasks of 100 bundled samples,
2 epochs of 2 chunks of 5 batches, a checkpoint after every chunk; ER with a
reservoir buffer, an MLP with dropout 0.5 (so the generator state matters)
and Adam kept across tasks with a decaying learning rate (so the optimizer
buffers and the per-task learning rate matter).
"""

import errno
import os
import shutil

import numpy as np
import pytest
import torch

from jcl import callbacks as callbacks_lib
from jcl.config import default_config
from jcl.torch import checkpoint
from jcl.torch import experiment

CHUNKS_PER_TASK = 4  # 2 epochs x 2 chunks


def small_config(learning_rate=0.01):
  config = default_config('split_mnist_class')
  config.benchmark.source = 'sample'
  config.benchmark.num_tasks = 5
  config.benchmark.samples_per_task = 100
  config.model.widths = (32,)
  config.model.dropout = 0.5
  config.algo = dict(name='er', memory_size=40, replay_batch_size=10, policy='reservoir')
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = learning_rate
  config.optimizer.lr_decay = 0.8
  config.optimizer.reinit_per_task = False
  config.train.epochs = 2
  config.train.batch_size = 10
  config.train.chunk_steps = 5
  config.checkpoint.every_chunks = 1
  config.log.loggers = ()
  config.log.progress = False
  config.log.plots = False
  return config


class Interrupted(Exception):
  pass


class InterruptAfter(callbacks_lib.Callback):
  """Raises after `chunks` chunks (before that chunk's checkpoint: the
  checkpoint callback runs last), like a crash."""

  def __init__(self, chunks):
    self.chunks, self.seen = chunks, 0

  def on_chunk_end(self, ctx):
    self.seen += 1
    if self.seen == self.chunks:
      raise Interrupted


class CountChunks(callbacks_lib.Callback):
  def __init__(self):
    self.seen = 0

  def on_chunk_end(self, ctx):
    self.seen += 1


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted run, and its workdir (checkpoints included)."""
  workdir = tmp_path_factory.mktemp('reference')
  return experiment.run(small_config(), str(workdir)), workdir


def assert_same_run(got, want):
  np.testing.assert_array_equal(got.accuracy_matrix, want.accuracy_matrix)
  np.testing.assert_array_equal(got.initial_accuracy, want.initial_accuracy)
  assert got.history == want.history
  a, b = got.train_state, want.train_state
  assert (a.step, a.task) == (b.step, b.task)
  assert torch.equal(a.class_mask, b.class_mask)
  for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
    assert torch.equal(x, y), name
  oa, ob = a.optimizer, b.optimizer
  assert (oa.learning_rate, oa.count) == (ob.learning_rate, ob.count)
  for x, y in zip([*oa.mu, *oa.nu], [*ob.mu, *ob.nu]):
    assert torch.equal(x, y)
  leaves_a, leaves_b = checkpoint.flatten(got.algo_state), checkpoint.flatten(want.algo_state)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    assert torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y


def test_interrupted_mid_task_then_resumed_is_bit_identical(reference, tmp_path):
  want, _ = reference
  # Stopped in task 1, epoch 1, after its chunk 1: the newest checkpoint is
  # the one after chunk 0, so chunk 1 is trained again on resumption.
  stop_at = CHUNKS_PER_TASK + 2 + 2
  with pytest.raises(Interrupted):
    experiment.run(small_config(), str(tmp_path), extra_callbacks=[InterruptAfter(stop_at)])
  counter = CountChunks()
  got = experiment.run(small_config(), str(tmp_path), extra_callbacks=[counter])
  assert counter.seen == 5 * CHUNKS_PER_TASK - (stop_at - 1)  # it resumed, not restarted
  assert_same_run(got, want)
  assert got.summary['acc'] > 0.25, got.accuracy_matrix  # and it learned (chance 0.1)
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'checkpoints'))
  assert len(ckpt.all_steps()) == 3  # max_to_keep
  assert not [n for n in os.listdir(ckpt.directory) if n.endswith('.tmp')]


def test_corrupt_newest_checkpoint_is_reported_and_previous_used(reference, tmp_path, capsys):
  want, reference_dir = reference
  workdir = tmp_path / 'run'
  shutil.copytree(reference_dir, workdir)
  ckpt = checkpoint.Checkpointer(str(workdir / 'checkpoints'))
  steps = ckpt.all_steps()
  with open(ckpt.path(steps[-1]), 'r+b') as f:  # the final checkpoint, half overwritten
    f.seek(os.path.getsize(ckpt.path(steps[-1])) // 2)
    f.write(b'garbage' * 100)
  counter = CountChunks()
  got = experiment.run(small_config(), str(workdir), extra_callbacks=[counter])
  message = capsys.readouterr().out
  assert f'checkpoint {ckpt.path(steps[-1])} is corrupt' in message
  assert counter.seen == 0  # the previous checkpoint: task 2's last chunk, before end_task
  assert_same_run(got, want)

  for step in ckpt.all_steps():  # none readable: a clear error, no silent restart
    with open(ckpt.path(step), 'wb') as f:
      f.write(b'garbage')
  with pytest.raises(checkpoint.CheckpointError, match='no usable checkpoint'):
    experiment.run(small_config(), str(workdir))


def test_resume_with_a_different_config_is_refused(reference, tmp_path):
  _, reference_dir = reference
  shutil.copytree(reference_dir, tmp_path / 'run')
  with pytest.raises(ValueError, match='different run configuration'):
    experiment.run(small_config(learning_rate=0.5), str(tmp_path / 'run'))


def test_checkpointer_keeps_at_least_two(tmp_path):
  with pytest.raises(ValueError, match='max_to_keep'):
    checkpoint.Checkpointer(str(tmp_path), max_to_keep=1)


def like(config):
  """A freshly built `(train_state, algo_state)` of `config`."""
  parts = experiment.build(config)
  return parts.train_state, experiment.init_algo_state(parts, shared={})


def test_a_failed_write_is_one_clear_error_and_keeps_the_older_checkpoints(
  reference, tmp_path, monkeypatch
):
  _, reference_dir = reference
  shutil.copytree(reference_dir / 'checkpoints', tmp_path / 'checkpoints')
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'checkpoints'))
  steps = ckpt.all_steps()
  _, state, record = ckpt.restore_latest(like(small_config()))

  def refused(*args):  # a folder refused, as `chattr +i` does (root ignores modes)
    raise PermissionError(errno.EPERM, 'Operation not permitted')

  with monkeypatch.context() as patch:
    patch.setattr(os, 'replace', refused)
    with pytest.raises(checkpoint.CheckpointError) as error:
      ckpt.save(state, record)
  assert str(error.value) == (
    f'cannot write checkpoint {steps[-1] + 1} in {ckpt.directory}: '
    'PermissionError: [Errno 1] Operation not permitted'
  )
  names = sorted(os.path.basename(ckpt.path(s)) for s in steps)
  assert sorted(os.listdir(ckpt.directory)) == names  # the temporary file removed
  # The older ones go only once the new one reads back intact.
  with monkeypatch.context() as patch:
    patch.setattr(ckpt, '_read_verified', lambda path: 1 / 0)
    with pytest.raises(checkpoint.CheckpointError, match='ZeroDivisionError'):
      ckpt.save(state, record)
  assert ckpt.all_steps() == [*steps, steps[-1] + 1]
  assert ckpt.save(state, record) == steps[-1] + 2
  assert ckpt.all_steps() == [steps[-1], steps[-1] + 1, steps[-1] + 2]


def test_a_checkpoint_that_does_not_fit_or_gives_no_reason_is_explained(
  reference, tmp_path, monkeypatch
):
  _, reference_dir = reference
  ckpt = checkpoint.Checkpointer(str(reference_dir / 'checkpoints'))
  narrower = small_config()
  narrower.model.widths = (16,)
  with pytest.raises(checkpoint.CheckpointError) as error:
    ckpt.restore_latest(like(narrower))
  message = str(error.value)
  newest = ckpt.path(ckpt.all_steps()[-1])
  assert f'checkpoint {newest} does not fit this run (ValueError: model[' in message
  assert 'they hold the state of another model or algorithm' in message

  def fails(*args, **kwargs):
    raise AssertionError()

  monkeypatch.setattr(torch, 'load', fails)
  with pytest.raises(checkpoint.CheckpointError) as error:
    ckpt.restore_latest(like(small_config()))
  assert f'checkpoint {newest} is corrupt (AssertionError: no message, raised at ' in str(
    error.value
  )
  assert f'reading {newest})' in str(error.value)
