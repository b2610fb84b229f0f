"""Hooks at the boundaries of `jcl.train.fit`: fit, task, epoch and chunk.

A callback sees a `FitContext` (states, position in the stream, metrics so
far). Evaluation, checkpointing, the console table, the JSON-lines log and
the progress bar are themselves callbacks, so a user adds their own (early
stopping, saving the model after each task...) without touching the loop:

  class SaveEachTask(jcl.callbacks.Callback):
    def on_task_end(self, ctx):
      np.save(f'params_{ctx.task}.npy', ...)

`fit` runs `EvaluationCallback` first and `CheckpointCallback` last at every
hook, so a user callback sees the task's accuracy column and the checkpoint
holds what every callback did. Setting `ctx.stop_task` ends the current
task's training (its `end_task` and evaluation still run); `ctx.stop_fit`
ends the run after the current task.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np

from jcl import metrics as metrics_lib


def nan_to_none(rows):
  """A matrix as JSON-able lists, NaN (not trained yet) as None."""
  return [[None if (isinstance(v, float) and math.isnan(v)) else v for v in r] for r in rows]


def none_to_nan(rows) -> np.ndarray:
  return np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64)


@dataclasses.dataclass
class FitContext:
  """What callbacks can read (and, with care, replace) during `fit`."""
  train_state: Any
  algo_state: Any
  num_tasks: int
  accuracy_matrix: np.ndarray          # [T, T] fractions, NaN in untrained columns
  initial_accuracy: np.ndarray | None  # [T], the untrained model (for FWT)
  task: int = 0
  epoch: int = 0
  chunk: int = 0
  chunks_per_epoch: int = 0
  epochs: int = 1
  chunk_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
  history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  samples_seen: int = 0
  start_time: float = dataclasses.field(default_factory=time.perf_counter)
  train_seconds: float = 0.0
  eval_seconds: float = 0.0
  # Class-incremental runs: accuracy with predictions among each sample's task
  # classes, [T, T] (else None).
  task_il_matrix: np.ndarray | None = None
  benchmark: Any = None                # the `jcl.data.Benchmark` being trained
  config: Any = None                   # the loop's `jcl.train.TrainConfig`
  # Where training starts: set by a callback's `restore` (a resumed run).
  resume_position: dict[str, Any] | None = None
  stop_task: bool = False              # set by a callback: end this task's training now
  stop_fit: bool = False               # set by a callback: stop after this task


class Callback:
  """Base class; override the hooks you need.

  A callback may also define `restore(ctx) -> bool`: `fit` calls it before
  any `on_fit_begin` so it can put a saved run back into `ctx` (states,
  matrices, `resume_position`); it returns whether it did.
  """

  def on_fit_begin(self, ctx: FitContext) -> None: ...
  def on_task_begin(self, ctx: FitContext) -> None: ...
  def on_epoch_begin(self, ctx: FitContext) -> None: ...
  def on_chunk_end(self, ctx: FitContext) -> None: ...
  def on_epoch_end(self, ctx: FitContext) -> None: ...
  def on_task_end(self, ctx: FitContext) -> None: ...
  def on_fit_end(self, ctx: FitContext) -> None: ...


class LoggingCallback(Callback):
  """Writes chunk metrics and, per task, the accuracy matrix and summary metrics."""

  def __init__(self, logger, every_chunks: int = 1):
    self.logger = logger
    self.every_chunks = every_chunks

  def on_chunk_end(self, ctx):
    if self.every_chunks and (ctx.chunk + 1) % self.every_chunks == 0:
      self.logger.write_scalars(int(ctx.train_state.step), {
          'task': ctx.task, 'epoch': ctx.epoch, **ctx.chunk_metrics})

  def on_task_end(self, ctx):
    trained = ctx.accuracy_matrix[:, :ctx.task + 1]
    summary = metrics_lib.summarize(trained, b=ctx.initial_accuracy)
    self.logger.write_table(f'accuracy matrix after task {ctx.task}', ctx.accuracy_matrix,
                            step=int(ctx.train_state.step))
    self.logger.write_scalars(int(ctx.train_state.step), {
        'task': ctx.task, **{f'eval/{k}': v for k, v in summary.items()}})
    self.logger.flush()

  def on_fit_end(self, ctx):
    self.logger.flush()


class ProgressCallback(Callback):
  """A tqdm bar over the chunks of each task (off when stdout is no terminal)."""

  def __init__(self, enabled: bool = True, force: bool = False):
    self.enabled, self.force, self.bar = enabled, force, None

  def on_task_begin(self, ctx):
    from jcl.loggers import ProgressBar
    self.bar = ProgressBar(total=ctx.chunks_per_epoch * ctx.epochs, desc=f'task {ctx.task}',
                           enabled=self.enabled, force=self.force)

  def on_chunk_end(self, ctx):
    if self.bar is not None:
      self.bar.update(1)
      if 'loss' in ctx.chunk_metrics:
        self.bar.set_postfix({'loss': f"{ctx.chunk_metrics['loss']:.4f}"})

  def on_task_end(self, ctx):
    if self.bar is not None:
      self.bar.close()
      self.bar = None


class EvaluationCallback(Callback):
  """Fills the accuracy matrix: the untrained model's accuracy on every task
  (for FWT) at the start, and column k after task k (trained and
  consolidated). Predictions choose among the classes seen so far in
  class-incremental learning; those runs also get the task-IL matrix."""

  def on_fit_begin(self, ctx):
    if ctx.initial_accuracy is None:  # a resumed run has it already
      t0 = time.perf_counter()
      ctx.initial_accuracy, _ = _evaluate(ctx, ctx.train_state)
      ctx.eval_seconds += time.perf_counter() - t0

  def on_task_end(self, ctx):
    from jcl import evaluation
    t0 = time.perf_counter()
    state = ctx.train_state.replace(class_mask=evaluation.class_mask_for(ctx.benchmark, ctx.task))
    ctx.accuracy_matrix[:, ctx.task], given_task = _evaluate(ctx, state)
    if ctx.task_il_matrix is not None:
      ctx.task_il_matrix[:, ctx.task] = given_task
    ctx.eval_seconds += time.perf_counter() - t0


def _evaluate(ctx, train_state):
  from jcl import evaluation
  return evaluation.evaluate_benchmark(train_state, ctx.benchmark, ctx.config.eval_split,
                                       ctx.config.eval_batch_size)


class CheckpointCallback(Callback):
  """Orbax checkpoints of the run in progress, and resumption from them.

  Saves `(train_state, algo_state)` and a JSON record (position in the
  stream, accuracy matrices, history, `run_record`) after every task and
  every `every_chunks` chunks (0: tasks only). `restore` puts the newest
  readable checkpoint back into the context; `fit` then skips what was done.

  Args:
    checkpointer: a `jcl.checkpoint.Checkpointer`.
    every_chunks: also save every this many chunks (0 = at task ends only).
    run_record: JSON-able facts stored with each checkpoint (e.g. the
      config); a checkpoint with a different record is refused on restore.
  """

  def __init__(self, checkpointer, every_chunks: int = 0, run_record: dict[str, Any] | None = None):
    self.checkpointer = checkpointer
    self.every_chunks = every_chunks
    self.run_record = run_record

  def restore(self, ctx) -> bool:
    restored = self.checkpointer.restore_latest((ctx.train_state, ctx.algo_state))
    if restored is None:
      return False
    _, (ctx.train_state, ctx.algo_state), record = restored
    if self.run_record is not None and record.get('run') and record['run'] != self.run_record:
      raise ValueError(f'the checkpoints in {self.checkpointer.directory} were written by a '
                       'different run configuration; resume with the same config or use a '
                       'fresh workdir')
    apply_record(ctx, record)
    return True

  def on_chunk_end(self, ctx):
    if self.every_chunks and (ctx.chunk + 1) % self.every_chunks == 0:
      self.save(ctx, 'train', ctx.epoch, ctx.chunk + 1)

  def on_task_end(self, ctx):
    self.save(ctx, 'task_done')

  def save(self, ctx, phase: str, epoch: int = 0, next_chunk: int = 0) -> int:
    return self.checkpointer.save((ctx.train_state, ctx.algo_state),
                                  make_record(ctx, phase, epoch, next_chunk, self.run_record))


def make_record(ctx, phase: str, epoch: int = 0, next_chunk: int = 0,
                run_record: dict[str, Any] | None = None) -> dict[str, Any]:
  """The JSON record of a checkpoint: where the run stands and what it measured."""
  return {
      'position': {'task': ctx.task, 'epoch': epoch, 'next_chunk': next_chunk, 'phase': phase},
      'accuracy_matrix': nan_to_none(ctx.accuracy_matrix.tolist()),
      'task_il_accuracy_matrix': (None if ctx.task_il_matrix is None
                                  else nan_to_none(ctx.task_il_matrix.tolist())),
      'initial_accuracy': np.asarray(ctx.initial_accuracy).tolist(),
      'history': ctx.history, 'samples_seen': ctx.samples_seen, 'run': run_record or {}}


def apply_record(ctx, record: dict[str, Any]) -> None:
  """Puts a checkpoint record back into `ctx` (the inverse of `make_record`)."""
  ctx.resume_position = dict(record['position'])
  ctx.accuracy_matrix = none_to_nan(record['accuracy_matrix'])
  if ctx.task_il_matrix is not None and record.get('task_il_accuracy_matrix') is not None:
    ctx.task_il_matrix = none_to_nan(record['task_il_accuracy_matrix'])
  ctx.initial_accuracy = np.asarray(record['initial_accuracy'])
  ctx.history = list(record['history'])
  ctx.samples_seen = record['samples_seen']
