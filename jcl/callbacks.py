"""Hooks at the boundaries of the walk (`jcl.loop.walk`): fit, task, epoch, chunk.

A callback sees a `jcl.loop.FitContext` (states, position in the stream,
metrics so far). Evaluation, checkpointing, the metric writers and the
progress bar are themselves callbacks, so a user adds their own (early
stopping, saving the model after each task...) without touching the loop:

  class SaveEachTask(jcl.callbacks.Callback):
    def on_task_end(self, ctx):
      np.save(f'params_{ctx.task}.npy', ...)

The run puts `EvaluationCallback` first and `CheckpointCallback` last at
every hook, so a user callback sees the task's accuracy column and the
checkpoint holds what every callback did. Setting `ctx.stop_task` ends the
current task's training (its `end_task` and evaluation still run);
`ctx.stop_fit` ends the run after the current task.

Every callback works on walks of several replicas (seeds / grid settings
vmapped together): per-replica values have a leading axis R.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from jcl import metrics as metrics_lib
from jcl.loop import FitContext, nan_to_none, none_to_nan, prediction_class_mask
from jcl.loop import timed_evaluation
from jcl.run_spec import record_differences

__all__ = [
  'in_run_order',
  'Callback',
  'CheckpointCallback',
  'EvaluationCallback',
  'FitContext',
  'LoggingCallback',
  'ProgressCallback',
  'nan_to_none',
  'none_to_nan',
]


class Callback:
  """Base class; override the hooks you need.

  A callback may also define `restore(ctx) -> bool`: the walk calls it before
  any `on_fit_begin` so it can put a saved walk back into `ctx` (states,
  matrices, `resume_position`); it returns whether it did.
  """

  def on_fit_begin(self, ctx: FitContext) -> None: ...
  def on_task_begin(self, ctx: FitContext) -> None: ...
  def on_epoch_begin(self, ctx: FitContext) -> None: ...
  def on_chunk_end(self, ctx: FitContext) -> None: ...
  def on_epoch_end(self, ctx: FitContext) -> None: ...
  def on_task_end(self, ctx: FitContext) -> None: ...
  def on_fit_end(self, ctx: FitContext) -> None: ...


def in_run_order(callbacks=(), *, evaluate: bool = True, checkpoint=None) -> list:
  """The callbacks of a walk in the order every run uses: the evaluation first
  (so the others see the task's accuracy column), `callbacks`, the checkpoint
  last (so it holds what every callback did)."""
  return [
    *([EvaluationCallback()] if evaluate else []),
    *callbacks,
    *([checkpoint] if checkpoint is not None else []),
  ]


class EvaluationCallback(Callback):
  """Fills the accuracy matrices: the untrained models' accuracy on every task
  (for FWT) at the start, and column k after task k (trained and
  consolidated). Predictions choose among the classes seen so far in
  class-incremental learning; those runs also get the task-IL matrices."""

  def on_fit_begin(self, ctx):
    if ctx.initial_accuracies is None:  # a resumed run has them already
      ctx.initial_accuracies, _ = timed_evaluation(ctx, None)

  def on_task_end(self, ctx):
    accuracy, given_task = timed_evaluation(ctx, prediction_class_mask(ctx.benchmark, ctx.task))
    ctx.accuracy_matrices[:, :, ctx.task] = accuracy
    if ctx.task_il_matrices is not None:
      ctx.task_il_matrices[:, :, ctx.task] = given_task


class LoggingCallback(Callback):
  """Sends what the walk measures to one `jcl.loggers.MetricWriter` per replica.

  * training metrics (`loss`, `accuracy`, ...), averaged over the chunks
    since the last write, every `every_chunks` chunks of an epoch and at its
    end (so each epoch is written at least once), with `task` and `epoch`;
  * after each task: `eval/acc`, `eval/bwt`, ... of the tasks trained so
    far, `eval/task_<i>/acc` for every task i, the accuracy matrix as a text
    (`eval/accuracy_matrix`) and as an image (`eval/accuracy_matrix_image`).

  The x-axis is the replica's optimizer step.
  """

  def __init__(self, writers: Sequence[Any] | Any, every_chunks: int = 10):
    self.writers = list(writers) if isinstance(writers, (list, tuple)) else [writers]
    self.every_chunks = every_chunks
    self._sums: list[dict[str, float]] = []
    self._counts: list[int] = []

  def _step(self, ctx, r: int) -> int:
    history = ctx.histories[r]
    return int(history[-1]['step']) if history else 0

  def on_fit_begin(self, ctx):
    if len(self.writers) != ctx.num_replicas:
      raise ValueError(
        f'LoggingCallback: {len(self.writers)} writers for {ctx.num_replicas} replicas'
      )
    self._reset(ctx)

  def _reset(self, ctx):
    self._sums = [{} for _ in range(ctx.num_replicas)]
    self._counts = [0] * ctx.num_replicas

  def on_chunk_end(self, ctx):
    for r, means in enumerate(ctx.replica_metrics):
      for k, v in means.items():
        self._sums[r][k] = self._sums[r].get(k, 0.0) + v
      self._counts[r] += 1
    if (ctx.chunk + 1) % self.every_chunks == 0:
      self._write_training(ctx)

  def on_epoch_end(self, ctx):
    if any(self._counts):
      self._write_training(ctx)

  def _write_training(self, ctx):
    for r, writer in enumerate(self.writers):
      if self._counts[r]:
        means = {k: v / self._counts[r] for k, v in self._sums[r].items()}
        writer.write_scalars(self._step(ctx, r), {'task': ctx.task, 'epoch': ctx.epoch, **means})
    self._sums = [{} for _ in self.writers]
    self._counts = [0] * len(self.writers)

  def on_task_end(self, ctx):
    from jcl import loggers  # NumPy only

    for r, writer in enumerate(self.writers):
      step = self._step(ctx, r)
      matrix = ctx.accuracy_matrices[r]
      trained = matrix[:, : ctx.task + 1]
      initial = None if ctx.initial_accuracies is None else ctx.initial_accuracies[r]
      scalars = {'task': ctx.task}
      if not np.isnan(trained).all():
        summary = metrics_lib.summarize(trained, b=initial, scenario=ctx.scenario)
        scalars.update({f'eval/{k}': v for k, v in summary.items()})
        scalars.update(
          {f'eval/task_{i}/acc': float(matrix[i, ctx.task]) for i in range(ctx.num_tasks)}
        )
        if ctx.task_il_matrices is not None:
          scalars['eval/task_il_acc'] = metrics_lib.average_accuracy(
            ctx.task_il_matrices[r][:, : ctx.task + 1]
          )
      writer.write_scalars(step, scalars)
      notes = ''.join(f'\n{why}' for why in metrics_lib.undefined_metrics(ctx.scenario).values())
      writer.write_texts(
        step,
        {
          'eval/accuracy_matrix': (
            f'accuracy matrix after task {ctx.task} (%, task i after training task j):\n'
            + metrics_lib.format_matrix(matrix)
            + notes
          )
        },
      )
      writer.write_images(
        step, {'eval/accuracy_matrix_image': loggers.accuracy_matrix_image(matrix)}
      )
      writer.flush()

  def on_fit_end(self, ctx):
    for writer in self.writers:
      writer.flush()


class ProgressCallback(Callback):
  """A tqdm bar over the chunks of each task (off when stdout is no terminal)."""

  def __init__(self, enabled: bool = True, force: bool = False, desc: str = ''):
    self.enabled, self.force, self.desc, self.bar = enabled, force, desc, None

  def on_task_begin(self, ctx):
    from jcl.loggers import ProgressBar

    label = self.desc or (
      ctx.labels[0] if ctx.num_replicas == 1 else f'{ctx.num_replicas} replicas'
    )
    self.bar = ProgressBar(
      total=ctx.chunks_per_epoch * ctx.epochs,
      desc=f'{label + " " if label else ""}task {ctx.task}',
      enabled=self.enabled,
      force=self.force,
    )

  def on_chunk_end(self, ctx):
    if self.bar is not None:
      self.bar.update(1)
      losses = [m['loss'] for m in ctx.replica_metrics if 'loss' in m]
      if losses:
        self.bar.set_postfix({'loss': f'{np.mean(losses):.4f}'})

  def on_task_end(self, ctx):
    if self.bar is not None:
      self.bar.close()
      self.bar = None


class CheckpointCallback(Callback):
  """Checkpoints of the walk in progress, and resumption from them.

  Saves `(train_state, algo_state)` and a JSON record (position in the
  stream, accuracy matrices, histories, errors, seconds, `run_record`)
  after every task and every `every_chunks` chunks (0: tasks only).
  `restore` puts the newest readable checkpoint back into the context; the
  walk then skips what was done.

  Args:
    checkpointer: a `jcl.checkpoint.Checkpointer` (or the torch one).
    every_chunks: also save every this many chunks (0 = at task ends only).
    run_record: the flat `{field: value}` that decides the run's numbers
      (`RunSpec.record`); a checkpoint with a different one is refused, the
      differing fields named.
  """

  def __init__(
    self, checkpointer, every_chunks: int = 0, run_record: Mapping[str, Any] | None = None
  ):
    self.checkpointer = checkpointer
    self.every_chunks = every_chunks
    self.run_record = dict(run_record) if run_record is not None else None

  def restore(self, ctx) -> bool:
    self.check_run(self.checkpointer.latest_record())  # before any array is read
    restored = self.checkpointer.restore_latest((ctx.train_state, ctx.algo_state))
    if restored is None:
      return False
    _, (train_state, algo_state), record = restored
    self.check_run(record)
    ctx.train_state, ctx.algo_state = train_state, algo_state
    self.apply_record(ctx, record)
    return True

  def check_run(self, record: dict[str, Any] | None) -> None:
    """Refuses a checkpoint written by another run, naming its algorithm and
    this config's, and the fields that differ."""
    stored = None if record is None else record.get('run')
    if self.run_record is None or stored is None:
      return
    differences = record_differences(stored, self.run_record)
    if not differences:  # the same run (a field added since is None, its default)
      return
    theirs, ours = stored.get('algo.name', '?'), self.run_record.get('algo.name', '?')
    algorithms = (
      f'this workdir holds a run of {theirs}; this config is {ours}'
      if theirs != ours
      else f'both are runs of {ours}'
    )
    raise ValueError(
      f'the checkpoints in {self.checkpointer.directory} were written by a different run '
      f'configuration ({algorithms}); the fields that differ:\n  '
      + '\n  '.join(differences)
      + '\nresume with the same config or use a fresh workdir'
    )

  def apply_record(self, ctx, record: dict[str, Any]) -> None:
    """Puts a restored record into `ctx` (subclasses adapt older records)."""
    ctx.apply_record(record)

  def on_chunk_end(self, ctx):
    if self.every_chunks and (ctx.chunk + 1) % self.every_chunks == 0:
      self.save(ctx, 'train', ctx.epoch, ctx.chunk + 1)

  def on_task_end(self, ctx):
    self.save(ctx, 'task_done')

  def save(self, ctx, phase: str, epoch: int = 0, next_chunk: int = 0) -> int:
    record = {**ctx.record(phase, epoch, next_chunk), 'run': self.run_record}
    return self.checkpointer.save((ctx.train_state, ctx.algo_state), record)
