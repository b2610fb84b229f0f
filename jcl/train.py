"""The JAX executor of the walk (`jcl.loop.walk`), and `fit`.

The stream's stored images go to the device once and each task's training
split is staged there from them (`jcl.inputs`: no task's inputs exist on
the host, and only the current task's on the device); a chunk is then only
its row numbers `[K, B]`: one jit-compiled program runs `algorithm.step`
over the K batches in a `lax.scan`, each step gathering its batch on the
device, so host Python runs once per chunk and moves a few kilobytes.
`fit(algorithm, train_state, benchmark, config)` runs a stream with it.

The programs are built by `Program`, whose functions take the values of
gridded hyperparameters (`hp`, e.g. `{'algo.ewc_lambda': 3.0}`) as
arguments, so one compilation serves every seed and grid setting
(`jcl.replicas` vmaps the same functions).

With `TrainConfig.data_parallel` > 1 the executor splits each batch over
the devices of a 1-D mesh (`jcl.parallel`): the states and the staged split
replicated, the row numbers `[K, B]` split along B, and the chunk compiled
with the batch constrained to the 'data' axis (`Program.run_chunk`'s `mesh`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jcl import callbacks as callbacks_lib
from jcl import evaluation
from jcl import inputs as inputs_lib
from jcl import loop
from jcl import parallel
from jcl import train_state as ts_lib
from jcl.algorithms.base import Algorithm, Context
from jcl.data import stream
from jcl.data.benchmarks import Benchmark, TaskSplit
from jcl.loop import FitResult, NonFiniteLossError, TrainConfig, subsample, training_split
from jcl.train_state import TrainState
from jcl.types import Batch

__all__ = [
  'FitResult',
  'JaxExecutor',
  'NonFiniteLossError',
  'Program',
  'TrainConfig',
  'compile_seconds',
  'fit',
  'gather_rows_fn',
  'run_chunk_fn',
  'subsample',
  'task_data',
  'training_split',
]

LEARNING_RATE = 'optimizer.learning_rate'

# -----------------------------------------------------------------------------
# Compilation time, as JAX reports it (tracing, lowering, XLA compilation).
# -----------------------------------------------------------------------------

_COMPILE_EVENTS = (
  '/jax/core/compile/jaxpr_trace_duration',
  '/jax/core/compile/jaxpr_to_mlir_module_duration',
  '/jax/core/compile/backend_compile_duration',
)
_compiled = [0.0]


def _on_duration(event: str, duration: float, **_) -> None:
  if event in _COMPILE_EVENTS:
    _compiled[0] += duration


jax.monitoring.register_event_duration_secs_listener(_on_duration)


def compile_seconds() -> float:
  """Seconds this process has spent tracing, lowering and compiling (or
  loading compilations from the persistent cache) so far."""
  return _compiled[0]


# -----------------------------------------------------------------------------
# Chunks.
# -----------------------------------------------------------------------------


def _scan_steps(step, skip_padding: bool, batch_of):
  """`(train_state, algo_state, xs) -> (train_state, algo_state, metrics [K], valid [K])`:
  `step` over the batches `batch_of(x)` of the K entries of `xs`; with
  `skip_padding`, all-padding batches (mask all 0) leave the states
  untouched (a `lax.cond`; without it every batch must hold a real sample)."""

  def run(train_state, algo_state, xs):

    def body(carry, x):
      ts, st = carry
      batch = batch_of(x)
      valid = jnp.sum(batch.mask) > 0
      if not skip_padding:
        ts, st, metrics = step(ts, batch, st)
        return (ts, st), (metrics, valid)

      def skip(_):
        metric_shapes = jax.eval_shape(step, ts, batch, st)[2]
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)
        return ts, st, zeros

      ts, st, metrics = jax.lax.cond(valid, lambda _: step(ts, batch, st), skip, None)
      return (ts, st), (metrics, valid)

    (train_state, algo_state), (metrics, valid) = jax.lax.scan(body, (train_state, algo_state), xs)
    return train_state, algo_state, metrics, valid

  return run


def run_chunk_fn(step, skip_padding: bool = True):
  """`(train_state, algo_state, chunk) -> (train_state, algo_state, metrics, valid)`:
  `step` scanned over the K batches of a chunk `[K, B, ...]`; with
  `skip_padding`, all-padding batches (mask all 0) leave the states untouched.
  `metrics` is stacked `[K]`, `valid` `[K]` bool."""
  return _scan_steps(step, skip_padding, lambda batch: batch)


def gather_rows_fn(step, skip_padding: bool = True):
  """`(train_state, algo_state, data, idx, mask) -> (train_state, algo_state, metrics, valid)`:
  `step` scanned over K batches, batch k being rows `idx[k]` `[B]` of a split
  staged on the device (`data`: x `[N, ...]`, y, t; `jcl.inputs.stage`) with
  `mask[k]`; rows `>= N` (padding) are zeros. Each step gathers its own
  batch: on XLA:CPU that is faster than gathering the chunk first (no
  `[K, B, ...]` copy through memory).
  """

  def run(train_state, algo_state, data, idx, mask):
    batch_of = lambda rows_and_mask: inputs_lib.take_rows(data, *rows_and_mask)
    return _scan_steps(step, skip_padding, batch_of)(train_state, algo_state, (idx, mask))

  return run


def _chunk_means(metrics, valid):
  """The mean of each `[K]` metric over the valid steps (scalars)."""
  count = jnp.maximum(jnp.sum(valid), 1)
  return {
    k: jnp.sum(jnp.where(valid, v, 0).astype(jnp.float32)) / count for k, v in metrics.items()
  }


def task_data(split: TaskSplit, batch_size: int) -> Batch:
  """A whole split as one padded chunk `[K, B, ...]` on the device (for `end_task`)."""
  chunk = stream.gather(split, stream.subset_index_chunk(len(split), batch_size))
  return Batch(*map(jnp.asarray, chunk))


# -----------------------------------------------------------------------------
# The programs of one replica.
# -----------------------------------------------------------------------------


@contextlib.contextmanager
def _traced_values_named(hp):
  """Turns a concretization error on a gridded value into a `ValueError` naming it."""
  try:
    yield
  except jax.errors.ConcretizationTypeError as error:
    if not hp:
      raise
    raise ValueError(
      f'grid: the algorithm branches in Python on one of {sorted(hp)}, so it '
      'cannot be gridded in one program; run the settings separately'
    ) from error


class Program:
  """The functions of one replica of an algorithm, the gridded values `hp`
  (`{path: scalar}`, traced) as arguments; with `hp = {}` they are the
  algorithm's own.

  Args:
    algorithm: the algorithm (with its spec).
    context: the stream's `Context`, to rebuild the algorithm from a copy of
      its spec whose gridded fields hold traced values.
  """

  def __init__(self, algorithm: Algorithm, context: Context | None = None):
    self.base, self.context = algorithm, context
    self.run_chunk = jax.jit(self._run_chunk, static_argnames=('skip_padding', 'mesh'))
    self.end_task = jax.jit(self._end_task)
    self._vmapped: dict[Any, Any] = {}

  def algorithm(self, hp: Mapping[str, Any]) -> Algorithm:
    """The algorithm with the spec's gridded fields set to the values in `hp`."""
    fields = {path.partition('.')[2]: v for path, v in hp.items() if path.startswith('algo.')}
    if not fields:
      return self.base
    from jcl import algorithms  # the registry

    spec = copy.copy(self.base.spec)  # validated with Python numbers in `RunSpec`
    for field, value in fields.items():
      object.__setattr__(spec, field, value)
    return algorithms.build(spec, self.context)

  def init(self, train_state, rng, hp):
    with _traced_values_named(hp):
      return self.algorithm(hp).init(train_state, rng)

  def begin_task(self, train_state, algo_state, task_id, hp):
    """The algorithm's `begin_task`, then the gridded learning rate (decayed per task)."""
    with _traced_values_named(hp):
      train_state, algo_state = self.algorithm(hp).begin_task(train_state, algo_state, task_id)
    if LEARNING_RATE in hp:
      decayed = ts_lib.learning_rate_for_task(train_state.regime, task_id, hp[LEARNING_RATE])
      opt_state = train_state.opt_state
      hyperparams = dict(opt_state.hyperparams, learning_rate=decayed)
      train_state = train_state.replace(opt_state=opt_state._replace(hyperparams=hyperparams))
    return train_state, algo_state

  def _run_chunk(self, train_state, algo_state, data, idx, mask, hp, skip_padding=True, mesh=None):
    """Gathers the chunk from `data` and scans the steps over it: `(train_state,
    algo_state, {metric: mean over the chunk's steps}, optimizer step)`; with
    a `mesh` (static), each step's batch split over its 'data' axis and the
    states kept replicated (`jcl.parallel.data_parallel_step`)."""
    with _traced_values_named(hp):
      step = parallel.data_parallel_step(self.algorithm(hp).step, mesh)
      run = gather_rows_fn(step, skip_padding)
      train_state, algo_state, metrics, valid = run(train_state, algo_state, data, idx, mask)
      train_state, algo_state = parallel.replicate((train_state, algo_state), mesh)
    return train_state, algo_state, _chunk_means(metrics, valid), train_state.step

  def _end_task(self, train_state, algo_state, data, idx, mask, hp):
    with _traced_values_named(hp):
      chunk = None if data is None else inputs_lib.take_rows(data, idx, mask)
      return self.algorithm(hp).end_task(train_state, algo_state, chunk)

  def vmapped(self, name: str, *axes, static: Mapping[str, Any] | None = None):
    """`jit(vmap(fn))` of 'run_chunk', 'end_task', 'begin_task' or 'count_correct'."""
    key = (name, axes, tuple(sorted((static or {}).items())))
    if key not in self._vmapped:
      fn = {
        'run_chunk': self._run_chunk,
        'end_task': self._end_task,
        'begin_task': self.begin_task,
        'count_correct': evaluation.count_correct,
      }[name]
      if static:
        fn = _partial(fn, static)
      self._vmapped[key] = jax.jit(jax.vmap(fn, in_axes=axes))
    return self._vmapped[key]


def hp_arrays(hparams: Mapping[str, float]) -> dict[str, jax.Array]:
  """Gridded values as float32 scalars (the `hp` argument of `Program`'s functions)."""
  return {k: jnp.float32(v) for k, v in hparams.items()}


def _partial(fn, kwargs):
  def bound(*args):
    return fn(*args, **kwargs)

  return bound


# -----------------------------------------------------------------------------
# The executor of one replica.
# -----------------------------------------------------------------------------


class JaxExecutor:
  """Runs one replica's walk with a `Program` (see `jcl.loop.Executor`).

  The stream's stored images go to the device once (`jcl.inputs`); the
  current task's training split is staged there from them (the previous
  task's dropped), and so is each task's evaluation split in turn, padded to
  the longest one's length: memory does not grow with the number of tasks
  and the programs compile once for the stream.

  With `config.data_parallel` > 1 (`jcl.parallel.data_mesh`) the states and
  the staged splits are replicated on the mesh's devices (staged on the
  default device, then copied), the chunks' and the evaluation's row numbers
  split along the batch, and `end_task` runs replicated.
  """

  num_replicas = 1
  asynchronous = True

  def __init__(
    self,
    program: Program,
    benchmark: Benchmark,
    config: TrainConfig,
    hp: Mapping[str, float] | None = None,
    eval_cache: dict[Any, Any] | None = None,
  ):
    self.program, self.benchmark, self.config = program, benchmark, config
    self.mesh = parallel.data_mesh(config)
    self.hp = self._replicated(hp_arrays(hp or {}))
    self._placed: tuple[int, Batch] | None = None
    self._sources: dict[tuple[int, int], inputs_lib.StoredImages] = {}
    self._eval_cache = {} if eval_cache is None else eval_cache
    self._train_length = max(len(task.train) for task in benchmark.tasks)
    self._compiled0 = compile_seconds()

  @property
  def compile_seconds(self) -> float:
    return compile_seconds() - self._compiled0

  def _replicated(self, tree):
    """`tree` on the mesh's devices, replicated (as it is without a mesh)."""
    return tree if self.mesh is None else parallel.put_replicated(tree, self.mesh)

  def place_states(self, states):
    """The walk's initial states where the chunks take them (`jcl.loop.walk`
    restores a checkpoint into their placement)."""
    return self._replicated(states)

  def _class_mask(self, class_mask: np.ndarray) -> jax.Array:
    if self.mesh is None:
      return jnp.asarray(class_mask)
    return self._replicated(np.asarray(class_mask))

  def _rows(self, idx, mask, split: bool = True):
    """Row numbers and mask `[K, B]` on the device(s): split along B over the
    mesh (`split`) or replicated."""
    if self.mesh is None:
      return jax.device_put(idx), jax.device_put(mask)
    if split:
      return parallel.put_rows((idx, mask), self.mesh)
    return parallel.put_replicated((np.asarray(idx), np.asarray(mask)), self.mesh)

  def _source(self, split: TaskSplit) -> inputs_lib.StoredImages:
    """The stored images of `split` with its view, on the device (placed once)."""
    key = (id(split.images), id(split.view))
    if key not in self._sources:
      if len(self._sources) >= 4:  # another stream's (e.g. a previous seed's)
        self._sources.clear()
      self._sources[key] = jax.device_put(inputs_lib.stored_images(split.images, split.view))
    return self._sources[key]

  def _data(self, split: TaskSplit) -> Batch:
    if self._placed is None or self._placed[0] != id(split):
      self._placed = None  # drop the previous task's before staging this one
      length = inputs_lib.padded_length(len(split), self._train_length)
      staged = inputs_lib.stage_split(split, self._source(split), length)
      self._placed = (id(split), self._replicated(staged))
    return self._placed[1]

  def place_task(self, task_id: int, splits: Sequence[TaskSplit]) -> None:
    del task_id
    self._data(splits[0])

  def begin_task(self, states, task_id: int, class_mask: np.ndarray):
    train_state, algo_state = self._replicated(states)
    train_state = train_state.replace(class_mask=self._class_mask(class_mask))
    return self.program.begin_task(train_state, algo_state, task_id, self.hp)

  def run_chunk(self, states, chunks):
    (chunk,) = chunks
    train_state, algo_state, means, step = self.program.run_chunk(
      *self._replicated(states),
      self._placed[1],
      *self._rows(chunk.idx, chunk.mask),
      self.hp,
      skip_padding=chunk.padding_steps,
      mesh=self.mesh,
    )
    return (train_state, algo_state), (means, step)

  def chunk_result(self, pending) -> loop.ChunkResult:
    means, step = parallel.fetch(pending)
    return loop.ChunkResult([{k: float(v) for k, v in means.items()}], [int(step)])

  def end_task(self, states, splits, chunks):
    states = self._replicated(states)
    if chunks is None:
      out = self.program.end_task(*states, None, None, None, self.hp)
    else:
      (chunk,) = chunks
      out = self.program.end_task(
        *states,
        self._data(splits[0]),
        *self._rows(chunk.idx, chunk.mask, split=False),
        self.hp,
      )
    return jax.block_until_ready(out)

  def _eval_chunks(self) -> list[tuple[TaskSplit, Any, list[Any]]]:
    """Per task, its evaluation split, its padded rows (`jcl.inputs.split_rows`)
    and its index chunks, on the device (placed once: a few bytes a sample)."""
    key = (id(self.benchmark), self.mesh)
    if key not in self._eval_cache:
      self._eval_cache.clear()  # another stream's (e.g. the previous seed's)
      per_task = [
        evaluation.eval_index_chunks(
          self.benchmark, task, self.config.eval_split, self.config.eval_batch_size
        )
        for task in range(self.benchmark.num_tasks)
      ]
      length = max(len(split) for split, _ in per_task)
      self._eval_cache[key] = [
        (
          split,
          jax.device_put(inputs_lib.split_rows(split, length)),
          [self._rows(c.idx, c.mask) for c in chunks],
        )
        for split, chunks in per_task
      ]
    return self._eval_cache[key]

  def evaluate(self, states, class_mask):
    train_state = self._replicated(states[0])
    if class_mask is not None:
      train_state = train_state.replace(class_mask=self._class_mask(class_mask))
    table = evaluation.task_table(self.benchmark)
    if table is not None:
      table = self._replicated(table)
    counts = []
    for split, rows, chunks in self._eval_chunks():
      data = self._replicated(inputs_lib.stage(self._source(split), *rows))
      counts.append(
        [
          evaluation.count_correct(train_state, data, idx, mask, table, mesh=self.mesh)[None]
          for idx, mask in chunks
        ]
      )
      # At most two tasks' staged inputs in flight (dispatch is asynchronous):
      # memory stays flat in the number of tasks, the host still runs ahead.
      if len(counts) > 1:
        jax.block_until_ready(counts[-2])
    return evaluation.accuracies(counts, 1, table is not None, fetch=parallel.fetch)


# -----------------------------------------------------------------------------
# fit.
# -----------------------------------------------------------------------------


def fit(
  algorithm: Algorithm,
  train_state: TrainState,
  benchmark: Benchmark,
  config: TrainConfig | None = None,
  *,
  algo_state: Any = None,
  callbacks: Sequence[callbacks_lib.Callback] = (),
  rng: jax.Array | None = None,
  cumulative_data: bool | None = None,
  evaluate: bool = True,
  checkpoint: callbacks_lib.CheckpointCallback | None = None,
) -> FitResult:
  """Trains `algorithm` on every task of `benchmark` in order (`jcl.loop.walk`).

  Args:
    algorithm: a `jcl.algorithms.Algorithm`.
    train_state: the initial `TrainState` (model, optimizer, keys).
    benchmark: a `jcl.data.Benchmark`.
    config: the loop's `TrainConfig`.
    algo_state: the algorithm's initial state (default `algorithm.init`).
    callbacks: hooks called at fit/task/epoch/chunk boundaries, in order,
      after the evaluation and before the checkpoint.
    rng: key for `algorithm.init` (default: derived from `config.seed`).
    cumulative_data: train task k on tasks 0..k (default: the spec's).
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
  if rng is None:
    rng = jax.random.PRNGKey(config.seed)
  if algo_state is None:
    algo_state = algorithm.init(train_state, rng)
  stream_ = loop.Stream.single(benchmark, config, algorithm.spec)
  if cumulative_data is not None:
    stream_ = dataclasses.replace(stream_, cumulative_data=cumulative_data)
  callbacks = callbacks_lib.in_run_order(callbacks, evaluate=evaluate, checkpoint=checkpoint)
  executor = JaxExecutor(Program(algorithm), benchmark, config)
  ctx = loop.walk(executor, stream_, callbacks, train_state, algo_state)
  return FitResult.from_context(ctx)
