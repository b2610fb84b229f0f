"""Hooks at the boundaries of `jcl.train.fit`: fit, task, epoch and chunk.

A callback sees a `FitContext` (states, position in the stream, metrics so
far). The console table, the JSON-lines log and the progress bar are
themselves callbacks, so a user adds their own without touching the loop.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from jcl import metrics as metrics_lib


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


class Callback:
  """Base class; override the hooks you need."""

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
