"""Exact resumption: a corrupt latest checkpoint is reported and the one
before it is used; a different config is refused; a finished run says so.

Runs SIGKILLed at random moments and resumed: tests/test_reliability.py."""

import os

import jax
import numpy as np
import pytest

from jcl import callbacks as jcl_callbacks
from jcl import experiment


def small_config():
  from configs import quickstart

  config = quickstart.get_config()
  config.benchmark.num_tasks = 3
  config.benchmark.samples_per_task = 300
  config.train.epochs = 1
  config.algo = dict(name='er', memory_size=50, replay_batch_size=10)
  config.log.progress = False
  config.log.loggers = ()
  config.log.plots = False
  return config


def test_corrupt_latest_checkpoint_is_reported_and_previous_used(tmp_path, capsys):
  config = small_config()
  full = experiment.run(config, str(tmp_path / 'full'))
  workdir = tmp_path / 'run'
  experiment.run(config, str(workdir))
  ckpt_dir = workdir / 'checkpoints'
  steps = sorted(int(p) for p in os.listdir(ckpt_dir) if p.isdigit())
  assert len(steps) == 3  # one per task
  # Flip one bit of the newest checkpoint's largest array file (Orbax alone
  # would load it silently), then rerun: it must name the checkpoint and the
  # file, resume from the one before (after task 1), and end with the same
  # numbers.
  newest = ckpt_dir / str(steps[-1])
  data = newest / 'state' / 'ocdbt.process_0' / 'd'
  path = max(data.iterdir(), key=lambda p: p.stat().st_size)
  flipped = bytearray(path.read_bytes())
  flipped[len(flipped) // 2] ^= 0x10
  path.write_bytes(bytes(flipped))
  capsys.readouterr()
  resumed = experiment.run(config, str(workdir))
  message = capsys.readouterr().out
  assert f'checkpoint {newest} is corrupt ({path.relative_to(newest)} changed after it' in message
  np.testing.assert_array_equal(resumed.accuracy_matrix, full.accuracy_matrix)
  for x, y in zip(
    jax.tree.leaves(resumed.train_state.params), jax.tree.leaves(full.train_state.params)
  ):
    np.testing.assert_array_equal(x, y)


def test_resume_with_a_different_config_is_refused_naming_the_fields(tmp_path):
  config = small_config()
  config.checkpoint.every_chunks = 1

  class Crash(Exception):
    pass

  class CrashInTask1(jcl_callbacks.Callback):
    def on_chunk_end(self, ctx):
      if ctx.task == 1:
        raise Crash()

  with pytest.raises(Crash):
    experiment.run(config, str(tmp_path), extra_callbacks=[CrashInTask1()])
  other = small_config()
  other.checkpoint.every_chunks = 1
  other.optimizer.learning_rate = 0.5
  other.algo = dict(name='er', memory_size=60, replay_batch_size=10)
  with pytest.raises(ValueError, match='different run configuration') as error:
    experiment.run(other, str(tmp_path))
  message = str(error.value)
  assert 'optimizer.learning_rate: 0.05 in the checkpoint, 0.5 now' in message
  assert 'algo.memory_size: 50 in the checkpoint, 60 now' in message
  assert 'seed' not in message.replace('(seed', '')  # only the fields that differ
  # Presentation (writers, progress bar, plots) and the checkpoint cadence do
  # not decide the numbers: changing them resumes the run.
  same = small_config()
  same.log.loggers = ('jsonl', 'csv')
  same.log.plots = True
  same.checkpoint.every_chunks = 2
  resumed = experiment.run(same, str(tmp_path))
  np.testing.assert_array_equal(
    resumed.accuracy_matrix, experiment.run(small_config()).accuracy_matrix
  )


def test_rerunning_a_finished_run_says_so_and_keeps_its_results(tmp_path, capsys):
  config = small_config()
  first = experiment.run(config, str(tmp_path))
  written = (tmp_path / 'results.json').read_bytes()
  capsys.readouterr()
  again = experiment.run(config, str(tmp_path))
  assert 'this run has already finished' in capsys.readouterr().out
  assert again.already_finished and not first.already_finished
  assert (tmp_path / 'results.json').read_bytes() == written
  np.testing.assert_array_equal(again.accuracy_matrix, first.accuracy_matrix)
  assert again.timings['samples_seen'] == first.timings['samples_seen']
  assert again.timings['train_seconds'] == pytest.approx(first.timings['train_seconds'])
  for x, y in zip(
    jax.tree.leaves(again.train_state.params), jax.tree.leaves(first.train_state.params)
  ):
    np.testing.assert_array_equal(x, y)


def test_vmapped_seeds_resumed_with_no_chunk_left_finish(tmp_path):
  # A process that resumes after the last chunk (killed during the last
  # evaluation or before results.json) runs no chunk: its first_chunk_seconds
  # is None, and the replicas' timings are still reported.
  config = small_config()
  config.benchmark.num_tasks = 2
  config.num_seeds = 2
  config.replicas.mode = 'vmap'
  first = experiment.run(config, str(tmp_path))
  os.remove(tmp_path / 'results.json')
  again = experiment.run(config, str(tmp_path))
  np.testing.assert_array_equal(again.accuracy_matrices, first.accuracy_matrices)
  assert (tmp_path / 'results.json').exists()
