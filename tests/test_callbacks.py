"""Evaluation and checkpointing are callbacks; user callbacks see the task's
accuracy column, can stop a task early, and run before the checkpoint."""

import numpy as np

from jcl import callbacks as callbacks_lib
from jcl import experiment
from jcl import train as train_lib
from tests.test_scenarios import tiny_config


class Recorder(callbacks_lib.Callback):
  def __init__(self):
    self.events, self.columns = [], []

  def on_fit_begin(self, ctx):
    self.events.append(('fit_begin', ctx.initial_accuracy is not None))

  def on_task_begin(self, ctx):
    self.events.append(('task_begin', ctx.task))

  def on_task_end(self, ctx):
    self.events.append(('task_end', ctx.task))
    self.columns.append(ctx.accuracy_matrix[:, ctx.task].copy())

  def on_fit_end(self, ctx):
    self.events.append(('fit_end',))


class StopAfterChunks(callbacks_lib.Callback):
  """Early stopping: ends each task's training after `n` chunks."""

  def __init__(self, n):
    self.n, self.chunks = n, 0

  def on_task_begin(self, ctx):
    self.chunks = 0

  def on_chunk_end(self, ctx):
    self.chunks += 1
    ctx.stop_task = self.chunks >= self.n


def test_user_callback_sees_evaluation_and_hooks_in_order():
  recorder = Recorder()
  result = experiment.run(tiny_config('naive', 'task_masked'), extra_callbacks=[recorder])
  assert recorder.events == [
    ('fit_begin', True),
    ('task_begin', 0),
    ('task_end', 0),
    ('task_begin', 1),
    ('task_end', 1),
    ('fit_end',),
  ]
  np.testing.assert_array_equal(np.stack(recorder.columns, 1), result.accuracy_matrix)


def test_stop_task_ends_training_early_but_still_evaluates():
  config = tiny_config('naive', 'task_masked')
  config.train.epochs = 3
  parts = experiment.build(config)
  full = train_lib.fit(
    parts.algorithm, parts.train_state, parts.benchmark, parts.train_config, rng=parts.algo_rng
  )
  stopped = train_lib.fit(
    parts.algorithm,
    parts.train_state,
    parts.benchmark,
    parts.train_config,
    rng=parts.algo_rng,
    callbacks=[StopAfterChunks(1)],
  )
  per_epoch = len([h for h in full.history if h['task'] == 0 and h['epoch'] == 0])
  assert len(full.history) == 2 * 3 * per_epoch
  assert len(stopped.history) == 2  # one chunk a task
  assert np.all(np.isfinite(stopped.accuracy_matrix))


def test_stop_fit_and_no_evaluation():
  parts = experiment.build(tiny_config('naive', 'task_masked'))

  class StopFit(callbacks_lib.Callback):
    def on_task_end(self, ctx):
      ctx.stop_fit = True

  result = train_lib.fit(
    parts.algorithm,
    parts.train_state,
    parts.benchmark,
    parts.train_config,
    rng=parts.algo_rng,
    callbacks=[StopFit()],
    evaluate=False,
  )
  assert {h['task'] for h in result.history} == {0}
  assert np.isnan(result.accuracy_matrix).all() and result.summary == {}
