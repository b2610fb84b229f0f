"""`fit` for the PyTorch backend: the loop contract of `jcl.train.fit`.

Per task: the training class mask and `begin_task`; epochs over the same
fixed-shape chunks `[K, B, ...]` in the same order (`np.random.default_rng(
[seed, task, epoch])`), one `step` per batch with all-padding batches
skipped; `end_task` on the task's training set (subsampled with
`[seed, task, 2^20]`, batched by `end_task_batch_size`); then evaluation of
every task, filling column k of the accuracy matrix. The `FitResult` and its
JSON are those of the JAX loop, so `results.json` reads the same.

Dropout draws from torch's generator, seeded with `config.seed` for the
run (the caller's generator state is restored afterwards). With a
`checkpoint` (`jcl.callbacks.CheckpointCallback` over a
`jcl.torch.checkpoint.Checkpointer`) the run resumes from the newest
checkpoint exactly where it stopped, generator state included.
"""
from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np
import torch

from jcl import callbacks as callbacks_lib
from jcl import metrics as metrics_lib
from jcl.data import stream
from jcl.data.benchmarks import Benchmark, TaskSplit
from jcl.loop import FitResult, NonFiniteLossError, TrainConfig, subsample, training_split
from jcl.torch import evaluation
from jcl.torch.algorithms.base import Algorithm
from jcl.torch.train_state import TrainState
from jcl.types import Batch


def to_tensors(batch: Batch, device) -> Batch:
  return Batch(*(torch.from_numpy(np.asarray(a)).to(device) for a in batch))


def task_data(split: TaskSplit, batch_size: int, device=None) -> Batch:
  """A whole split as one padded chunk `[K, B, ...]` of tensors (for `end_task`)."""
  steps = stream.num_batches(len(split), batch_size, drop_last=False)
  (chunk,) = stream.eval_chunks(split, batch_size=batch_size, chunk_steps=steps)
  return to_tensors(chunk, device)


def run_chunk(algorithm: Algorithm, train_state: TrainState, algo_state: Any, chunk: Batch):
  """`step` over the K batches of `chunk` (tensors `[K, B, ...]`), skipping
  all-padding ones; returns the states and the mean metrics of the real steps."""
  valid = (chunk.mask.sum(1) > 0).tolist()
  per_step = []
  for k, real in enumerate(valid):
    if real:
      batch = Batch(chunk.x[k], chunk.y[k], chunk.t[k], chunk.mask[k])
      train_state, algo_state, metrics = algorithm.step(train_state, batch, algo_state)
      per_step.append(metrics)
  if not per_step:
    return train_state, algo_state, {}
  means = {name: float(torch.stack([m[name].float() for m in per_step]).mean())
           for name in per_step[0]}
  return train_state, algo_state, means


def fit(algorithm: Algorithm, train_state: TrainState, benchmark: Benchmark,
        config: TrainConfig | None = None, *, algo_state: Any = None,
        callbacks: Sequence[callbacks_lib.Callback] = (),
        cumulative_data: bool | None = None,
        checkpoint: callbacks_lib.CheckpointCallback | None = None) -> FitResult:
  """Trains `algorithm` on every task of `benchmark` in order (`jcl.train.fit`'s contract).

  Args:
    algorithm: a `jcl.torch.algorithms.Algorithm`.
    train_state: the initial `jcl.torch.train_state.TrainState` (updated in place).
    benchmark: a `jcl.data.Benchmark`.
    config: the loop's `TrainConfig` (this module's or `jcl.train`'s: the same fields).
    algo_state: the algorithm's initial state (default `algorithm.init`).
    callbacks: `jcl.callbacks.Callback`s called at fit/task/epoch/chunk boundaries,
      after the evaluation and before the checkpoint.
    cumulative_data: train task k on tasks 0..k (default: the spec's, True for Joint).
    checkpoint: a `CheckpointCallback` over a `jcl.torch.checkpoint.Checkpointer`,
      run last. When its directory holds a checkpoint, `fit` resumes from the
      newest readable one exactly where it stopped.

  Returns:
    A `FitResult` with the final states and the accuracy matrix.

  Raises:
    NonFiniteLossError: a chunk produced a NaN/inf metric (the context so far
      is in the exception's `context`).
  """
  config = config or TrainConfig()
  if cumulative_data is None:
    cumulative_data = bool(getattr(algorithm.spec, 'cumulative_data', False))
  importance_samples = getattr(algorithm.spec, 'importance_samples', None) or config.importance_samples
  device = train_state.device
  devices = [] if device.type == 'cpu' else [device]
  with torch.random.fork_rng(devices=devices):
    torch.manual_seed(config.seed)
    if algo_state is None:
      algo_state = algorithm.init(train_state)
    callbacks = [*callbacks, *([checkpoint] if checkpoint is not None else [])]
    return _fit(algorithm, train_state, algo_state, benchmark, config, callbacks,
                cumulative_data, importance_samples, device)


def _fit(algorithm, train_state, algo_state, benchmark, config, callbacks, cumulative_data,
         importance_samples, device) -> FitResult:
  num_tasks = benchmark.num_tasks
  task_il = np.full((num_tasks, num_tasks), np.nan) if benchmark.scenario == 'class' else None
  ctx = callbacks_lib.FitContext(
      train_state=train_state, algo_state=algo_state, num_tasks=num_tasks,
      accuracy_matrix=np.full((num_tasks, num_tasks), np.nan), initial_accuracy=None,
      epochs=config.epochs)
  for name, value in (('benchmark', benchmark), ('config', config), ('task_il_matrix', task_il)):
    if hasattr(ctx, name):
      setattr(ctx, name, value)

  def evaluate(state):
    return evaluation.evaluate_benchmark(state, benchmark, config.eval_split,
                                         config.eval_batch_size)

  # Where to start: the beginning, or where a restored checkpoint stopped
  # (its states, generator state and record are back in `ctx`).
  for cb in callbacks:
    if hasattr(cb, 'restore') and cb.restore(ctx):
      break
  start = ctx.resume_position or {'task': 0, 'epoch': 0, 'next_chunk': 0, 'phase': 'start'}
  first_task = start['task'] + (1 if start['phase'] == 'task_done' else 0)
  resume_mid_task = start['phase'] == 'train'
  if ctx.initial_accuracy is None:  # a resumed run has it already
    t0 = time.perf_counter()
    ctx.initial_accuracy, _ = evaluate(ctx.train_state)  # the untrained model, for FWT
    ctx.eval_seconds += time.perf_counter() - t0
  for cb in callbacks:
    cb.on_fit_begin(ctx)

  for task_id in range(first_task, num_tasks):
    split = training_split(benchmark, task_id, cumulative_data)
    ctx.task, ctx.chunks_per_epoch = task_id, stream.num_chunks(
        len(split), config.batch_size, config.chunk_steps, drop_last=config.drop_last)
    ctx.stop_task = False
    resuming = resume_mid_task and task_id == start['task']
    if not resuming:  # a resumed state has had its begin_task already
      ctx.train_state.class_mask = evaluation.class_mask_for(
          benchmark, task_id, training=True, mask_unseen_classes=config.mask_unseen_classes,
          device=device)
      ctx.train_state, ctx.algo_state = algorithm.begin_task(ctx.train_state, ctx.algo_state,
                                                             task_id)
    for cb in callbacks:
      cb.on_task_begin(ctx)

    for epoch in range(start['epoch'] if resuming else 0, config.epochs):
      if ctx.stop_task:
        break
      ctx.epoch = epoch
      for cb in callbacks:
        cb.on_epoch_begin(ctx)
      order_rng = np.random.default_rng([config.seed, task_id, epoch])
      chunks = stream.epoch_chunks(split, batch_size=config.batch_size,
                                   chunk_steps=config.chunk_steps, rng=order_rng,
                                   drop_last=config.drop_last)
      skip = start['next_chunk'] if (resuming and epoch == start['epoch']) else 0
      for chunk_id, chunk in enumerate(chunks):
        if chunk_id < skip:
          continue  # trained before the interruption
        t0 = time.perf_counter()
        ctx.train_state, ctx.algo_state, ctx.chunk_metrics = run_chunk(
            algorithm, ctx.train_state, ctx.algo_state, to_tensors(chunk, device))
        ctx.train_seconds += time.perf_counter() - t0
        ctx.chunk = chunk_id
        ctx.samples_seen += int(np.sum(chunk.mask))
        ctx.history.append({'task': task_id, 'epoch': epoch, 'chunk': chunk_id,
                            'step': int(ctx.train_state.step), **ctx.chunk_metrics})
        if not all(math.isfinite(v) for v in ctx.chunk_metrics.values()):
          bad = {k: v for k, v in ctx.chunk_metrics.items() if not math.isfinite(v)}
          err = NonFiniteLossError(
              f'non-finite training metrics {bad} in task {task_id}, epoch {epoch}, chunk '
              f'{chunk_id} (step {int(ctx.train_state.step)}); lower the learning rate or check '
              'the data')
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
                     config.end_task_batch_size, device)
    ctx.train_state, ctx.algo_state = algorithm.end_task(ctx.train_state, ctx.algo_state, data)
    ctx.train_seconds += time.perf_counter() - t0

    t0 = time.perf_counter()
    eval_state = ctx.train_state.replace(
        class_mask=evaluation.class_mask_for(benchmark, task_id, device=device))
    ctx.accuracy_matrix[:, task_id], given_task = evaluate(eval_state)
    if ctx.task_il_matrix is not None:
      ctx.task_il_matrix[:, task_id] = given_task
    ctx.eval_seconds += time.perf_counter() - t0
    for cb in callbacks:
      cb.on_task_end(ctx)
    if ctx.stop_fit:
      break

  for cb in callbacks:
    cb.on_fit_end(ctx)
  summary = metrics_lib.summarize(ctx.accuracy_matrix, b=ctx.initial_accuracy)
  if ctx.task_il_matrix is not None:
    summary['task_il_acc'] = metrics_lib.average_accuracy(ctx.task_il_matrix)
  timings = {'train_seconds': ctx.train_seconds, 'eval_seconds': ctx.eval_seconds,
             'total_seconds': time.perf_counter() - ctx.start_time,
             'samples_seen': ctx.samples_seen,
             'train_samples_per_second': ctx.samples_seen / max(ctx.train_seconds, 1e-9)}
  return FitResult(ctx.train_state, ctx.algo_state, ctx.accuracy_matrix, ctx.initial_accuracy,
                   summary, ctx.history, timings, ctx.task_il_matrix)
