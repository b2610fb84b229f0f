"""The one walk over a continual-learning stream, for every backend and mode.

`walk(executor, stream, callbacks, train_state, algo_state)` goes through the
tasks once: per task `begin_task`, epochs of fixed-shape chunks `[K, B]`,
`end_task`, then the callbacks (evaluation of every task first, the
checkpoint last). It owns everything that does not depend on a framework:
the data order, where a resumed run starts, the callbacks, the NaN check,
`stop_task` / `stop_fit`, the timings and the summary. What runs the steps
is an *executor* (`Executor`):

  jcl.train.JaxExecutor          one JAX run (jit + lax.scan), the task's
                                 data on the device
  jcl.replicas.VmappedExecutor   R seeds / grid settings as one vmapped
                                 program, sharded over a device mesh
  jcl.torch.fit.TorchExecutor    one PyTorch run

`jcl.train.fit`, `jcl.torch.fit.fit`, the replicas of `jcl.replicas` and
`jcl.runs.run` all go through `walk`.

A walk carries R >= 1 replicas in lockstep (R > 1 only for the vmapped
executor): the context holds per-replica accuracy matrices `[R, T, T]`,
histories and errors. A replica whose training produces a NaN or infinite
metric is recorded as failed (named in `ctx.errors`) while the others go on;
when every replica has failed, `NonFiniteLossError` is raised.

The host overlaps the device: an asynchronous executor (JAX) returns from
`run_chunk` at once, so chunk i+1 is dispatched before chunk i's metrics
are fetched and its callbacks run. When a callback then stops the task or
replaces the states, the speculative chunk i+1 is dropped (the states after
chunk i are still held), so the results are those of a strictly sequential
loop.

Imports neither JAX nor PyTorch.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Protocol, Sequence

import numpy as np

from jcl import metrics as metrics_lib
from jcl.data import stream as stream_lib
from jcl.data.benchmarks import Benchmark, TaskSplit, joint_task
from jcl.data.stream import IndexChunk
from jcl.run_spec import TrainConfig

__all__ = [
  'ChunkResult',
  'Executor',
  'FitContext',
  'FitResult',
  'NonFiniteLossError',
  'Stream',
  'TrainConfig',
  'nan_to_none',
  'none_to_nan',
  'walk',
]

# Seed offset of `end_task`'s subsample of the task data.
IMPORTANCE_SALT = 1 << 20


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or infinite loss (`.context`: the `FitContext` so far)."""


def nan_to_none(rows):
  """A matrix as JSON-able lists, NaN (not trained yet) as None."""
  return [
    [None if (isinstance(v, float) and math.isnan(v)) else v for v in r]
    for r in np.asarray(rows, dtype=np.float64).tolist()
  ]


def none_to_nan(rows) -> np.ndarray:
  return np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64)


# -----------------------------------------------------------------------------
# What the walk goes over, and who runs the steps.
# -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Stream:
  """The stream of each replica and how it is walked.

  Attributes:
    benchmarks: per replica, its `Benchmark` (the same object where replicas
      share a stream); every one has the same tasks, classes and scenario.
    seeds: per replica, the data-order seed (epochs are shuffled with
      `(seed, task, epoch)`, the `end_task` subsample with `(seed, task, 2^20)`).
    config: the loop's `TrainConfig`.
    cumulative_data: task k trains on tasks 0..k (Joint).
    uses_task_data: `end_task` reads the finished task's data (else it gets None).
    end_task_samples: at most this many samples go to `end_task` (None: all).
    labels: per replica, its name in messages ('' for a single run).
  """

  benchmarks: Sequence[Benchmark]
  seeds: Sequence[int]
  config: TrainConfig
  cumulative_data: bool = False
  uses_task_data: bool = True
  end_task_samples: int | None = None
  labels: Sequence[str] = ('',)

  @classmethod
  def single(
    cls, benchmark: Benchmark, config: TrainConfig, spec: Any = None, label: str = ''
  ) -> 'Stream':
    """One replica's stream; `spec` (an `AlgorithmSpec`) says what the loop
    must provide (cumulative data, task data and how much of it)."""
    return cls([benchmark], [config.seed], config, labels=[label], **stream_needs(spec, config))

  @property
  def num_replicas(self) -> int:
    return len(self.benchmarks)

  @property
  def benchmark(self) -> Benchmark:
    """The first replica's benchmark (task count, class masks, scenario: shared by all)."""
    return self.benchmarks[0]


def stream_needs(spec: Any, config: TrainConfig) -> dict[str, Any]:
  """What an algorithm's spec declares the loop must provide (`Stream` fields)."""
  if spec is None:
    return dict(end_task_samples=config.importance_samples)
  return dict(
    cumulative_data=spec.cumulative_data,
    uses_task_data=spec.uses_task_data,
    end_task_samples=spec.end_task_samples(config.importance_samples),
  )


@dataclasses.dataclass
class ChunkResult:
  """What a chunk measured, per replica: the mean of each metric over its
  real steps, and the optimizer step count after it."""

  metrics: list[dict[str, float]]
  steps: list[int]


class Executor(Protocol):
  """Runs the steps of a walk; the states are whatever the backend uses
  (stacked `[R, ...]` for several replicas). See `jcl.train.JaxExecutor`.
  An executor may also have `place_states(states) -> states`: the initial
  states where it keeps them (`walk` restores a checkpoint into that placement)."""

  num_replicas: int
  # `run_chunk` returns before the work is done (results come with `chunk_result`).
  asynchronous: bool

  @property
  def compile_seconds(self) -> float:
    """Seconds spent compiling so far (subtracted from training and evaluation)."""

  def place_task(self, task_id: int, splits: Sequence[TaskSplit]) -> None:
    """Puts each replica's training split where `run_chunk` reads it."""

  def begin_task(self, states, task_id: int, class_mask: np.ndarray):
    """`begin_task` with the training class mask `[C]` bool; returns the states."""

  def run_chunk(self, states, chunks: Sequence[IndexChunk]):
    """One chunk per replica (the same object where replicas share it):
    `(states, pending)`; `chunk_result(pending)` gives its `ChunkResult`."""

  def chunk_result(self, pending) -> ChunkResult: ...

  def end_task(self, states, splits: Sequence[TaskSplit], chunks: Sequence[IndexChunk] | None):
    """`end_task` on rows `chunks` of each replica's task split (None: no
    data); returns the states once the work is done."""

  def evaluate(self, states, class_mask: np.ndarray | None):
    """`(accuracy [R, T], accuracy given the task [R, T] or None)` on every
    task's evaluation split; predictions among `class_mask` (None: the
    states' own mask)."""


# -----------------------------------------------------------------------------
# The context callbacks see.
# -----------------------------------------------------------------------------


@dataclasses.dataclass
class FitContext:
  """What callbacks read (and, with care, replace) during a walk.

  Per-replica arrays have a leading axis R; the singular names
  (`accuracy_matrix`, `chunk_metrics`, `history`, ...) are views of the only
  replica of a single run.
  """

  train_state: Any
  algo_state: Any
  num_tasks: int
  accuracy_matrices: np.ndarray  # [R, T, T] fractions, NaN in untrained columns
  initial_accuracies: np.ndarray | None  # [R, T], the untrained models (for FWT)
  task_il_matrices: np.ndarray | None = None  # [R, T, T] class-IL: predictions among task classes
  labels: Sequence[str] = ('',)
  task: int = 0
  epoch: int = 0
  chunk: int = 0
  chunks_per_epoch: int = 0
  epochs: int = 1
  replica_metrics: list[dict[str, float]] = dataclasses.field(default_factory=list)
  histories: list[list[dict[str, Any]]] = dataclasses.field(default_factory=list)
  errors: list[str | None] = dataclasses.field(default_factory=list)
  samples_seen: int = 0
  start_time: float = dataclasses.field(default_factory=time.perf_counter)
  train_seconds: float = 0.0
  eval_seconds: float = 0.0
  compile_seconds: float = 0.0
  # Seconds from the process's start to the first chunk's results in this
  # walk (start-up, building, compilation and one chunk; None: none trained).
  first_chunk_seconds: float | None = None
  benchmark: Any = None  # the first replica's `jcl.data.Benchmark`
  config: Any = None  # the loop's `TrainConfig`
  executor: Any = None  # the walk's `Executor` (evaluation uses it)
  # Where training starts: set by a callback's `restore` (a resumed run).
  resume_position: dict[str, Any] | None = None
  finished: bool = False  # the whole stream is trained (a finished run resumed)
  stop_task: bool = False  # set by a callback: end this task's training now
  stop_fit: bool = False  # set by a callback: stop after this task

  @property
  def num_replicas(self) -> int:
    return len(self.labels)

  def _only(self, name: str):
    if self.num_replicas != 1:
      raise AttributeError(
        f'{name} is a single-run view; this walk has {self.num_replicas} '
        f'replicas: use the per-replica fields (e.g. {name}s[r])'
      )

  @property
  def accuracy_matrix(self) -> np.ndarray:
    self._only('accuracy_matrix')
    return self.accuracy_matrices[0]

  @accuracy_matrix.setter
  def accuracy_matrix(self, value):
    self._only('accuracy_matrix')
    self.accuracy_matrices[0] = value

  @property
  def initial_accuracy(self) -> np.ndarray | None:
    self._only('initial_accuracy')
    return None if self.initial_accuracies is None else self.initial_accuracies[0]

  @initial_accuracy.setter
  def initial_accuracy(self, value):
    self._only('initial_accuracy')
    self.initial_accuracies = None if value is None else np.asarray(value, np.float64)[None]

  @property
  def task_il_matrix(self) -> np.ndarray | None:
    self._only('task_il_matrix')
    return None if self.task_il_matrices is None else self.task_il_matrices[0]

  @property
  def chunk_metrics(self) -> dict[str, float]:
    self._only('chunk_metrics')
    return self.replica_metrics[0] if self.replica_metrics else {}

  @property
  def history(self) -> list[dict[str, Any]]:
    self._only('history')
    return self.histories[0]

  @property
  def scenario(self) -> str | None:
    """The stream's scenario ('task', 'domain', 'class'; None without a benchmark)."""
    return getattr(self.benchmark, 'scenario', None)

  def summaries(self) -> list[dict[str, float]]:
    """Per replica, `jcl.metrics.summarize` of its matrix (with `task_il_acc`
    for class-incremental runs, where FWT is undefined: NaN); NaN metrics for
    a failed replica."""
    out = []
    for r in range(self.num_replicas):
      if np.isnan(self.accuracy_matrices[r]).all():
        out.append({})
        continue
      initial = None if self.initial_accuracies is None else self.initial_accuracies[r]
      summary = metrics_lib.summarize(self.accuracy_matrices[r], b=initial, scenario=self.scenario)
      if self.task_il_matrices is not None:
        summary['task_il_acc'] = metrics_lib.average_accuracy(self.task_il_matrices[r])
      out.append({k: float('nan') for k in summary} if self.errors[r] else summary)
    return out

  def timings(self) -> dict[str, float]:
    """Seconds of training (compilation excluded), evaluation and
    compilation, and the training throughput."""
    return {
      'train_seconds': self.train_seconds,
      'eval_seconds': self.eval_seconds,
      'compile_seconds': self.compile_seconds,
      'total_seconds': time.perf_counter() - self.start_time,
      'samples_seen': self.samples_seen,
      'train_samples_per_second': self.samples_seen / max(self.train_seconds, 1e-9),
      'first_chunk_seconds': self.first_chunk_seconds,
    }

  # Checkpoint records (`jcl.callbacks.CheckpointCallback`).

  def record(self, phase: str, epoch: int = 0, next_chunk: int = 0) -> dict[str, Any]:
    """The JSON record of a checkpoint: where the walk stands and what it measured."""
    initial = self.initial_accuracies
    return {
      'position': {'task': self.task, 'epoch': epoch, 'next_chunk': next_chunk, 'phase': phase},
      'finished': phase == 'task_done' and (self.task == self.num_tasks - 1 or self.stop_fit),
      'labels': list(self.labels),
      'accuracy_matrices': [nan_to_none(m) for m in self.accuracy_matrices],
      'task_il_accuracy_matrices': (
        None if self.task_il_matrices is None else [nan_to_none(m) for m in self.task_il_matrices]
      ),
      'initial_accuracies': None if initial is None else np.asarray(initial).tolist(),
      'histories': self.histories,
      'errors': self.errors,
      'samples_seen': self.samples_seen,
      'seconds': {
        'train': self.train_seconds,
        'eval': self.eval_seconds,
        'compile': self.compile_seconds,
      },
    }

  def apply_record(self, record: dict[str, Any]) -> None:
    """Puts a checkpoint record back (the inverse of `record`)."""
    self.resume_position = dict(record['position'])
    self.finished = bool(record.get('finished'))
    self.accuracy_matrices = np.stack([none_to_nan(m) for m in record['accuracy_matrices']])
    if self.task_il_matrices is not None and record.get('task_il_accuracy_matrices'):
      self.task_il_matrices = np.stack(
        [none_to_nan(m) for m in record['task_il_accuracy_matrices']]
      )
    initial = record.get('initial_accuracies')
    self.initial_accuracies = None if initial is None else np.asarray(initial, np.float64)
    self.histories = [list(h) for h in record['histories']]
    self.errors = list(record['errors'])
    self.samples_seen = record['samples_seen']
    seconds = record.get('seconds', {})
    self.train_seconds = seconds.get('train', 0.0)
    self.eval_seconds = seconds.get('eval', 0.0)
    self.compile_seconds = seconds.get('compile', 0.0)


# -----------------------------------------------------------------------------
# The walk.
# -----------------------------------------------------------------------------


def training_class_mask(
  benchmark: Benchmark, task_id: int, mask_unseen_classes: bool = True
) -> np.ndarray:
  """bool `[C]`: the output units training may use during task `task_id`:
  the classes seen so far in class-incremental learning (unless
  `mask_unseen_classes` is off), all units otherwise."""
  if benchmark.scenario == 'class' and mask_unseen_classes:
    return benchmark.seen_classes_mask(task_id)
  return np.ones(benchmark.num_classes, bool)


def prediction_class_mask(benchmark: Benchmark, task_id: int) -> np.ndarray:
  """bool `[C]`: the output units predictions choose among after task
  `task_id` (the classes seen so far in class-incremental learning)."""
  return training_class_mask(benchmark, task_id, True)


def training_split(benchmark: Benchmark, task_id: int, cumulative: bool) -> TaskSplit:
  """The data task `task_id` trains on: its own, or tasks 0..k for Joint."""
  return joint_task(benchmark, task_id) if cumulative else benchmark.tasks[task_id].train


def end_task_rows(n: int, max_samples: int | None, seed: int, task_id: int) -> np.ndarray | None:
  """The rows of a task's training split that `end_task` gets: all (None), or
  `max_samples` of them drawn with `(seed, task, 2^20)`, in order."""
  if max_samples is None or n <= max_samples:
    return None
  rng = np.random.default_rng([seed, task_id, IMPORTANCE_SALT])
  return np.sort(rng.choice(n, max_samples, replace=False))


def subsample(split: TaskSplit, max_samples: int | None, rng: np.random.Generator) -> TaskSplit:
  """`max_samples` samples of `split` drawn with `rng`, in order (all of them
  when it has no more)."""
  if max_samples is None or len(split) <= max_samples:
    return split
  idx = np.sort(rng.choice(len(split), max_samples, replace=False))
  return TaskSplit(split.images, split.rows[idx], split.y[idx], split.t[idx], split.view)


def _per_replica(keys: Sequence[Any], make) -> list[Any]:
  """`[make(key) for key in keys]`, made once per distinct key: replicas that
  share a stream get the same object (an executor then keeps one copy)."""
  made: dict[Any, Any] = {}
  for key in keys:
    if key not in made:
      made[key] = make(key)
  return [made[key] for key in keys]


def _call(callbacks, hook: str, ctx: FitContext) -> None:
  for cb in callbacks:
    getattr(cb, hook)(ctx)


def walk(
  executor: Executor, stream: Stream, callbacks: Sequence[Any], train_state: Any, algo_state: Any
) -> FitContext:
  """Trains every task of `stream` in order; returns the final `FitContext`.

  Args:
    executor: runs the steps (see `Executor`).
    stream: what each replica trains on (`Stream`).
    callbacks: `jcl.callbacks.Callback`s, called in order at every hook (the
      caller puts the evaluation first and the checkpoint last). A callback
      with `restore(ctx) -> bool` may put a saved walk back before anything
      runs; the walk then goes on where it stopped.
    train_state, algo_state: the initial states (stacked for several replicas).

  Raises:
    NonFiniteLossError: every replica's training produced a NaN/inf metric
      (`.context` holds what was measured so far).
  """
  bench, config, size = stream.benchmark, stream.config, stream.num_replicas
  num_tasks = bench.num_tasks
  place = getattr(executor, 'place_states', None)
  if place is not None:  # where the executor keeps them (e.g. on a mesh): checkpoints restore there
    train_state, algo_state = place((train_state, algo_state))
  ctx = FitContext(
    train_state=train_state,
    algo_state=algo_state,
    num_tasks=num_tasks,
    accuracy_matrices=np.full((size, num_tasks, num_tasks), np.nan),
    initial_accuracies=None,
    task_il_matrices=(
      np.full((size, num_tasks, num_tasks), np.nan) if bench.scenario == 'class' else None
    ),
    labels=list(stream.labels),
    epochs=config.epochs,
    histories=[[] for _ in range(size)],
    errors=[None] * size,
    benchmark=bench,
    config=config,
    executor=executor,
  )

  for cb in callbacks:
    if hasattr(cb, 'restore') and cb.restore(ctx):
      break
  start = ctx.resume_position or {'task': 0, 'epoch': 0, 'next_chunk': 0, 'phase': 'start'}
  first_task = start['task'] + (1 if start['phase'] == 'task_done' else 0)
  if ctx.finished:
    first_task = num_tasks
  _call(callbacks, 'on_fit_begin', ctx)

  for task_id in range(first_task, num_tasks):
    resuming = start['phase'] == 'train' and task_id == start['task']
    _train_task(
      executor,
      stream,
      callbacks,
      ctx,
      task_id,
      first_epoch=start['epoch'] if resuming else 0,
      first_chunk=start['next_chunk'] if resuming else 0,
      resuming=resuming,
    )
    _call(callbacks, 'on_task_end', ctx)
    if ctx.stop_fit:
      break

  _call(callbacks, 'on_fit_end', ctx)
  return ctx


def process_seconds() -> float | None:
  """Seconds since this process started (Linux `/proc`), or None elsewhere."""
  try:
    with open('/proc/self/stat') as f:
      start_ticks = int(f.read().rsplit(')', 1)[1].split()[19])
    with open('/proc/uptime') as f:
      uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf('SC_CLK_TCK')
  except (OSError, ValueError, IndexError):
    return None


class _Clock:
  """Wall-clock of a phase minus the compilation that happened in it."""

  def __init__(self, executor):
    self.executor = executor
    self.t0, self.c0 = time.perf_counter(), executor.compile_seconds

  def stop(self) -> tuple[float, float]:
    compiled = self.executor.compile_seconds - self.c0
    return time.perf_counter() - self.t0 - compiled, compiled


def timed_evaluation(ctx: FitContext, class_mask: np.ndarray | None):
  """`ctx.executor.evaluate` of the context's states, timed into `ctx`."""
  clock = _Clock(ctx.executor)
  result = ctx.executor.evaluate((ctx.train_state, ctx.algo_state), class_mask)
  seconds, compiled = clock.stop()
  ctx.eval_seconds += seconds
  ctx.compile_seconds += compiled
  return result


def _train_task(
  executor,
  stream: Stream,
  callbacks,
  ctx: FitContext,
  task_id: int,
  *,
  first_epoch: int,
  first_chunk: int,
  resuming: bool,
) -> None:
  config, bench = stream.config, stream.benchmark
  clock = _Clock(executor)
  by_id = {id(b): b for b in stream.benchmarks}
  splits = _per_replica(
    [id(b) for b in stream.benchmarks],
    lambda key: training_split(by_id[key], task_id, stream.cumulative_data),
  )
  executor.place_task(task_id, splits)
  ctx.task, ctx.stop_task = task_id, False
  ctx.chunks_per_epoch = stream_lib.num_chunks(
    max(len(s) for s in splits), config.batch_size, config.chunk_steps, drop_last=config.drop_last
  )
  if not resuming:  # a resumed state has had its begin_task already
    ctx.train_state, ctx.algo_state = executor.begin_task(
      (ctx.train_state, ctx.algo_state),
      task_id,
      training_class_mask(bench, task_id, config.mask_unseen_classes),
    )
  _call(callbacks, 'on_task_begin', ctx)

  for epoch in range(first_epoch, config.epochs):
    if ctx.stop_task:
      break
    ctx.epoch = epoch
    _call(callbacks, 'on_epoch_begin', ctx)
    skip = first_chunk if epoch == first_epoch else 0
    by_split = {id(s): s for s in splits}
    orders = _per_replica(
      [(id(s), seed) for s, seed in zip(splits, stream.seeds)],
      lambda key: list(
        stream_lib.epoch_index_chunks(
          len(by_split[key[0]]),
          batch_size=config.batch_size,
          chunk_steps=config.chunk_steps,
          drop_last=config.drop_last,
          rng=np.random.default_rng([key[1], task_id, epoch]),
          start=skip,
        )
      ),
    )
    _train_epoch(executor, callbacks, ctx, orders, skip)
    _call(callbacks, 'on_epoch_end', ctx)

  own = _per_replica(
    [id(b) for b in stream.benchmarks], lambda key: by_id[key].tasks[task_id].train
  )
  rows = None
  if stream.uses_task_data:
    by_split = {id(s): s for s in own}
    limit = stream.end_task_samples
    rows = _per_replica(
      [(id(s), seed if limit else None) for s, seed in zip(own, stream.seeds)],
      lambda key: stream_lib.subset_index_chunk(
        len(by_split[key[0]]),
        config.end_task_batch_size,
        end_task_rows(len(by_split[key[0]]), limit, key[1], task_id),
      ),
    )
  ctx.train_state, ctx.algo_state = executor.end_task((ctx.train_state, ctx.algo_state), own, rows)
  seconds, compiled = clock.stop()
  ctx.train_seconds += seconds
  ctx.compile_seconds += compiled


@dataclasses.dataclass
class _Inflight:
  """A dispatched chunk whose results are not fetched yet."""

  chunk_id: int
  samples: int
  states: Any
  pending: Any


def _train_epoch(executor, callbacks, ctx: FitContext, orders, skip: int) -> None:
  """The chunks of one epoch (`orders`: per replica, its index chunks); on an
  asynchronous executor chunk i+1 is dispatched before chunk i finishes."""
  inflight = None
  for offset, chunks in enumerate(zip(*orders)):
    chunk_id = skip + offset
    samples = int(sum(chunk.mask.sum() for chunk in chunks))
    source = inflight.states if inflight is not None else (ctx.train_state, ctx.algo_state)
    states, pending = executor.run_chunk(source, chunks)
    current = _Inflight(chunk_id, samples, states, pending)
    if inflight is not None and not _finish(executor, callbacks, ctx, inflight):
      if ctx.stop_task:
        return  # the speculative chunk is dropped
      # A callback replaced the states: run the chunk again from them.
      states, pending = executor.run_chunk((ctx.train_state, ctx.algo_state), chunks)
      current = _Inflight(chunk_id, samples, states, pending)
    inflight = current
    if not executor.asynchronous:
      if not _finish(executor, callbacks, ctx, inflight) and ctx.stop_task:
        return
      inflight = None
  if inflight is not None:
    _finish(executor, callbacks, ctx, inflight)


def _finish(executor, callbacks, ctx: FitContext, inflight: _Inflight) -> bool:
  """Fetches a chunk's results, commits its states, checks them, runs the
  chunk callbacks; False when the chunk after it must not go on from its
  states (a callback stopped the task or replaced the states)."""
  result = executor.chunk_result(inflight.pending)
  if ctx.first_chunk_seconds is None:
    ctx.first_chunk_seconds = process_seconds()
  ctx.train_state, ctx.algo_state = inflight.states
  committed = ctx.train_state, ctx.algo_state
  ctx.chunk = inflight.chunk_id
  ctx.samples_seen += inflight.samples
  ctx.replica_metrics = result.metrics
  for r, (means, step) in enumerate(zip(result.metrics, result.steps)):
    ctx.histories[r].append(
      {'task': ctx.task, 'epoch': ctx.epoch, 'chunk': ctx.chunk, 'step': step, **means}
    )
    if ctx.errors[r] is None and not all(math.isfinite(v) for v in means.values()):
      bad = {k: v for k, v in means.items() if not math.isfinite(v)}
      who = f'replica {ctx.labels[r]}: ' if ctx.labels[r] else ''
      ctx.errors[r] = (
        f'{who}non-finite training metrics {bad} in task {ctx.task}, epoch '
        f'{ctx.epoch}, chunk {ctx.chunk} (step {step}); lower the learning rate '
        'or check the data'
      )
  if all(ctx.errors):
    error = NonFiniteLossError(
      ctx.errors[0] if len(ctx.errors) == 1 else 'every replica diverged:\n' + '\n'.join(ctx.errors)
    )
    error.context = ctx
    raise error
  _call(callbacks, 'on_chunk_end', ctx)
  return not ctx.stop_task and ctx.train_state is committed[0] and ctx.algo_state is committed[1]


@dataclasses.dataclass
class FitResult:
  """What a single run returns on either backend (the states are the backend's own)."""

  train_state: Any
  algo_state: Any
  accuracy_matrix: np.ndarray  # R[i, j]: accuracy on task i after training task j (fractions)
  initial_accuracy: np.ndarray  # [T] accuracy of the untrained model
  summary: dict[str, float]  # ACC, BWT, FWT, forgetting, ... (fractions)
  history: list[dict[str, Any]]  # per-chunk mean metrics
  timings: dict[str, float]
  # Class-incremental runs: the same matrix with predictions restricted to
  # each sample's task classes (task-incremental accuracy); else None.
  task_il_accuracy_matrix: np.ndarray | None = None
  # A rerun of a finished run: nothing was trained, the numbers are the saved ones.
  already_finished: bool = False

  @classmethod
  def from_context(
    cls, ctx: FitContext, replica: int = 0, train_state=None, algo_state=None
  ) -> 'FitResult':
    """Replica `replica` of a walk (its states given for several replicas);
    `already_finished` when the walk restored a finished run."""
    summary = ctx.summaries()[replica]
    initial = (
      ctx.initial_accuracies[replica]
      if ctx.initial_accuracies is not None
      else np.full(ctx.num_tasks, np.nan)
    )
    task_il = None if ctx.task_il_matrices is None else ctx.task_il_matrices[replica]
    return cls(
      ctx.train_state if train_state is None else train_state,
      ctx.algo_state if algo_state is None else algo_state,
      ctx.accuracy_matrices[replica],
      np.asarray(initial),
      summary,
      ctx.histories[replica],
      ctx.timings(),
      task_il,
      already_finished=ctx.finished,
    )

  def to_json(self) -> dict[str, Any]:
    extra = {}
    if self.task_il_accuracy_matrix is not None:
      extra['task_il_accuracy_matrix'] = nan_to_none(self.task_il_accuracy_matrix)
    return {
      **extra,
      'accuracy_matrix': nan_to_none(self.accuracy_matrix),
      'initial_accuracy': np.asarray(self.initial_accuracy).tolist(),
      'summary': self.summary,
      'timings': self.timings,
      'history': self.history,
    }
