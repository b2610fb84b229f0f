"""`fit`: runs a continual-learning stream with scanned, jit-compiled chunks.

Per task: `begin_task`, epochs of fixed-shape chunks `[K, B, ...]` each run as
one `lax.scan` over `algorithm.step` (host Python runs only between chunks),
`end_task` on the task's training set, then evaluation of *every* task (seen
or not, so forward transfer can be measured), filling column k of the
accuracy matrix `R[i, k]`.
"""
from __future__ import annotations

import math
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jcl import callbacks as callbacks_lib
from jcl import evaluation
from jcl import metrics as metrics_lib
from jcl.algorithms.base import Algorithm
from jcl.data import stream
from jcl.data.benchmarks import Benchmark, TaskSplit
from jcl.loop import FitResult, NonFiniteLossError, TrainConfig, subsample, training_split
from jcl.train_state import TrainState
from jcl.types import Batch


def run_chunk_fn(step):
  """`(train_state, algo_state, chunk) -> (train_state, algo_state, metrics, valid)`.

  Scans `step` over the K batches of `chunk`; all-padding batches (mask all 0)
  leave the states untouched. `metrics` is stacked `[K]`, `valid` `[K]` bool.
  """

  def run(train_state, algo_state, chunk: Batch):

    def body(carry, batch):
      ts, st = carry

      def skip(_):
        metric_shapes = jax.eval_shape(step, ts, batch, st)[2]
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)
        return ts, st, zeros

      valid = jnp.sum(batch.mask) > 0
      ts, st, metrics = jax.lax.cond(valid, lambda _: step(ts, batch, st), skip, None)
      return (ts, st), (metrics, valid)

    (train_state, algo_state), (metrics, valid) = jax.lax.scan(body, (train_state, algo_state), chunk)
    return train_state, algo_state, metrics, valid

  return run


_none_to_nan = callbacks_lib.none_to_nan
_nan_to_none = callbacks_lib.nan_to_none


def task_data(split: TaskSplit, batch_size: int) -> Batch:
  """A whole split as one padded chunk `[K, B, ...]` (for `end_task`)."""
  steps = stream.num_batches(len(split), batch_size, drop_last=False)
  (chunk,) = stream.eval_chunks(split, batch_size=batch_size, chunk_steps=steps)
  return Batch(*map(jnp.asarray, chunk))


def class_mask_for(benchmark: Benchmark, task_id: int, *, training: bool = False,
                   config: TrainConfig | None = None) -> jax.Array:
  """Output units usable after training task `task_id` (see
  `jcl.evaluation.class_mask_for`); in training, `config.mask_unseen_classes`
  decides whether unseen classes are masked."""
  return evaluation.class_mask_for(
      benchmark, task_id, training=training,
      mask_unseen_classes=config is None or config.mask_unseen_classes)


def evaluate_all(train_state: TrainState, benchmark: Benchmark, config: TrainConfig):
  """Accuracy on every task `[T]` and, class-incremental, the task-IL accuracy."""
  return evaluation.evaluate_benchmark(train_state, benchmark, config.eval_split,
                                       config.eval_batch_size)


def _mean_metrics(metrics: dict[str, np.ndarray], valid: np.ndarray) -> dict[str, float]:
  n = max(int(valid.sum()), 1)
  return {k: float(np.sum(np.where(valid, v, 0.0)) / n) for k, v in metrics.items()}


def fit(algorithm: Algorithm, train_state: TrainState, benchmark: Benchmark,
        config: TrainConfig | None = None, *, algo_state: Any = None,
        callbacks: Sequence[callbacks_lib.Callback] = (), rng: jax.Array | None = None,
        cumulative_data: bool | None = None, evaluate: bool = True,
        checkpoint: callbacks_lib.CheckpointCallback | None = None) -> FitResult:
  """Trains `algorithm` on every task of `benchmark` in order.

  Args:
    algorithm: a `jcl.algorithms.Algorithm`.
    train_state: the initial `TrainState` (model, optimizer, keys).
    benchmark: a `jcl.data.Benchmark`.
    config: the loop's `TrainConfig`.
    algo_state: the algorithm's initial state (default `algorithm.init`).
    callbacks: hooks called at fit/task/epoch/chunk boundaries, in order,
      after the evaluation and before the checkpoint.
    rng: key for `algorithm.init` (default: derived from `config.seed`).
    cumulative_data: train task k on tasks 0..k (default: the spec's
      `cumulative_data`, True for Joint).
    evaluate: fill the accuracy matrix (an `EvaluationCallback` first).
    checkpoint: a `CheckpointCallback`, run last. When its directory holds a
      checkpoint, `fit` resumes from the newest readable one exactly where
      it stopped.

  Returns:
    A `FitResult` with the final states and the accuracy matrix.

  Raises:
    NonFiniteLossError: a chunk produced a NaN/inf loss (the metrics and
      accuracy matrix gathered so far are in the exception's `context`).
  """
  config = config or TrainConfig()
  if cumulative_data is None:
    cumulative_data = bool(getattr(algorithm.spec, 'cumulative_data', False))
  importance_samples = getattr(algorithm.spec, 'importance_samples', None) or config.importance_samples
  if rng is None:
    rng = jax.random.PRNGKey(config.seed)
  if algo_state is None:
    algo_state = algorithm.init(train_state, rng)
  callbacks = [*([callbacks_lib.EvaluationCallback()] if evaluate else []), *callbacks,
               *([checkpoint] if checkpoint is not None else [])]

  num_tasks = benchmark.num_tasks
  run_chunk = jax.jit(run_chunk_fn(algorithm.step))
  end_task = jax.jit(algorithm.end_task)
  ctx = callbacks_lib.FitContext(
      train_state=train_state, algo_state=algo_state, num_tasks=num_tasks,
      accuracy_matrix=np.full((num_tasks, num_tasks), np.nan), initial_accuracy=None,
      epochs=config.epochs, benchmark=benchmark, config=config,
      task_il_matrix=np.full((num_tasks, num_tasks), np.nan) if benchmark.scenario == 'class' else None)

  # Where to start: the beginning, or where a restored checkpoint stopped.
  for cb in callbacks:
    if hasattr(cb, 'restore') and cb.restore(ctx):
      break
  start = ctx.resume_position or {'task': 0, 'epoch': 0, 'next_chunk': 0, 'phase': 'start'}
  first_task = start['task'] + (1 if start['phase'] == 'task_done' else 0)
  resume_mid_task = start['phase'] == 'train'
  for cb in callbacks:
    cb.on_fit_begin(ctx)

  for task_id in range(first_task, num_tasks):
    split = training_split(benchmark, task_id, cumulative_data)
    ctx.task, ctx.chunks_per_epoch = task_id, stream.num_chunks(
        len(split), config.batch_size, config.chunk_steps, drop_last=config.drop_last)
    ctx.stop_task = False
    resuming = resume_mid_task and task_id == start['task']
    if not resuming:  # a resumed state has had its begin_task already
      ts = ctx.train_state.replace(
          class_mask=class_mask_for(benchmark, task_id, training=True, config=config))
      ctx.train_state, ctx.algo_state = algorithm.begin_task(ts, ctx.algo_state, task_id)
    for cb in callbacks:
      cb.on_task_begin(ctx)

    for epoch in range(start['epoch'] if resuming else 0, config.epochs):
      if ctx.stop_task:
        break
      ctx.epoch = epoch
      for cb in callbacks:
        cb.on_epoch_begin(ctx)
      order_rng = np.random.default_rng([config.seed, task_id, epoch])
      chunks = stream.epoch_chunks(split, batch_size=config.batch_size, chunk_steps=config.chunk_steps,
                                   rng=order_rng, drop_last=config.drop_last)
      skip = start['next_chunk'] if (resuming and epoch == start['epoch']) else 0
      for chunk_id, chunk in enumerate(chunks):
        if chunk_id < skip:
          continue  # trained before the interruption
        t0 = time.perf_counter()
        ctx.train_state, ctx.algo_state, metrics, valid = run_chunk(
            ctx.train_state, ctx.algo_state, Batch(*map(jnp.asarray, chunk)))
        metrics, valid = jax.device_get((metrics, valid))
        ctx.train_seconds += time.perf_counter() - t0
        ctx.chunk = chunk_id
        ctx.samples_seen += int(np.sum(chunk.mask))
        ctx.chunk_metrics = _mean_metrics(metrics, valid)
        ctx.history.append({'task': task_id, 'epoch': epoch, 'chunk': chunk_id,
                            'step': int(ctx.train_state.step), **ctx.chunk_metrics})
        if not all(math.isfinite(v) for v in ctx.chunk_metrics.values()):
          bad = {k: v for k, v in ctx.chunk_metrics.items() if not math.isfinite(v)}
          err = NonFiniteLossError(
              f'non-finite training metrics {bad} in task {task_id}, epoch {epoch}, chunk {chunk_id} '
              f'(step {int(ctx.train_state.step)}); lower the learning rate or check the data')
          err.context = ctx
          raise err
        for cb in callbacks:
          cb.on_chunk_end(ctx)
        if ctx.stop_task:
          break
      for cb in callbacks:
        cb.on_epoch_end(ctx)

    t0 = time.perf_counter()
    data = task_data(subsample(benchmark.tasks[task_id].train, importance_samples,
                               np.random.default_rng([config.seed, task_id, 1 << 20])),
                     config.end_task_batch_size)
    ctx.train_state, ctx.algo_state = end_task(ctx.train_state, ctx.algo_state, data)
    jax.block_until_ready(ctx.algo_state)
    ctx.train_seconds += time.perf_counter() - t0
    for cb in callbacks:
      cb.on_task_end(ctx)
    if ctx.stop_fit:
      break

  for cb in callbacks:
    cb.on_fit_end(ctx)
  summary = metrics_lib.summarize(ctx.accuracy_matrix, b=ctx.initial_accuracy) if evaluate else {}
  if evaluate and ctx.task_il_matrix is not None:
    summary['task_il_acc'] = metrics_lib.average_accuracy(ctx.task_il_matrix)
  timings = {'train_seconds': ctx.train_seconds, 'eval_seconds': ctx.eval_seconds,
             'total_seconds': time.perf_counter() - ctx.start_time,
             'samples_seen': ctx.samples_seen,
             'train_samples_per_second': ctx.samples_seen / max(ctx.train_seconds, 1e-9)}
  initial = ctx.initial_accuracy if ctx.initial_accuracy is not None else np.full(num_tasks, np.nan)
  return FitResult(ctx.train_state, ctx.algo_state, ctx.accuracy_matrix, np.asarray(initial),
                   summary, ctx.history, timings, ctx.task_il_matrix)
