"""Seeds and hyperparameter settings of one config, trained as one program.

A *replica* is one run of a config: a seed (model init, algorithm keys, data
order and, unless `benchmark.seed` is set, the benchmark itself) and values
of the gridded hyperparameters. `run(config, workdir)` trains the
`len(grid settings) x num_seeds` replicas and writes, per replica, the
accuracy matrix `R[i, j]` and its metrics, and per setting the mean and
sample standard deviation (ddof=1) of every metric over the seeds, the
settings ranked by `replicas.rank_by`:

  python -m experiments.train --config=configs/ewc.py:permuted_mnist \
      --config.num_seeds=5 --workdir=/tmp/ewc_5_seeds
  python -m experiments.train --config=configs/ewc.py:permuted_mnist --config.num_seeds=3 \
      --config.grid='optimizer.learning_rate=0.01,0.1;algo.ewc_lambda=1,10' --workdir=/tmp/grid

Replica `(seed s, setting h)` equals the single run of `config_for(config,
replica)` (the config with `seed=s` and the values of `h`).

Execution, `config.replicas.mode`:

* 'vmap': the replicas are a leading axis `[R, ...]` of `(train_state,
  algo_state)` and of the data chunks `[R, K, B, ...]`; a chunk is one
  `jit(vmap(scan(step)))`, evaluation one `vmap` of the counting scan. With
  several devices the replica axis, and with `replicas.batch_shards > 1`
  the batch axis too, is sharded over a `jax.sharding.Mesh`
  `('replica', 'batch')`; R is padded to a multiple of the replica shards.
* 'sequential': one compiled single-replica program (the hyperparameters
  are its arguments), run replica after replica: the compilation and the
  start-up are paid once, and the numbers are bit-identical to separate
  runs.
* 'auto' (default): vmap on GPU/TPU or with several devices, sequential on
  a single CPU device, where vmapping buys nothing (XLA:CPU runs the
  batched small matmuls of a batch-10 MLP no faster than one after the
  other; measured on 2 cores: 10 seeds, 2 tasks x 6000 samples, 12.7 CPU
  seconds vmapped, 11.1 sequential) and the sequential numbers are the
  single runs' bit for bit. See experiments/bench_seeds.py.

Vmapped and sequential replicas agree to float rounding (XLA compiles the
batched matmuls differently); see tests/test_replicas.py for the tolerance.
Both evaluate in chunks of at most as many batches as the test split fills
(`fit` pads to 10 batches a chunk: a 1000-sample split at batch 1000 costs
10 forward passes there, 1 here); the accuracies are the same.

Memory: the sequential mode builds one seed's stream at a time; vmap holds
every seed's (Permuted MNIST draws its permutations from the seed; set
`benchmark.seed` to share one stream, kept once).

Hyperparameters that can be gridded in one program are those the step uses
as numbers: `optimizer.learning_rate` (it lives in the optax state, via
`inject_hyperparams`) and the float fields of the algorithm's spec
(`algo.ewc_lambda`, `algo.alpha`, ...). The algorithm is built inside the
traced function from a copy of the spec whose fields hold traced scalars;
an algorithm that branches in Python on such a field raises a `ValueError`
naming it. Fields that change shapes (memory sizes) cannot be gridded.

Config fields (missing ones take these defaults):

  num_seeds = 1                  # seeds seed .. seed + num_seeds - 1
  grid = ''                      # 'optimizer.learning_rate=0.01,0.1;algo.ewc_lambda=1,10'
  replicas.mode = 'auto'         # 'vmap' | 'sequential' | 'auto'
  replicas.batch_shards = 1      # devices along the batch axis of the mesh
  replicas.rank_by = 'acc'       # the summary metric that ranks the settings
  replicas.distributed = False   # jax.distributed.initialize() first (multi-host)

Multi-host jobs (TPU pods, GPU clusters) call
`initialize_distributed(config)` before JAX touches a device (the
experiment binary does, with `--config.replicas.distributed=True`); every
process builds the same replicas, the global arrays are assembled from
them with `jax.make_array_from_callback`, and process 0 writes the results.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import math
import os
import time
import types
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jcl import algorithms
from jcl import evaluation
from jcl import experiment
from jcl import metrics as metrics_lib
from jcl import specs
from jcl import train as train_lib
from jcl import train_state as ts_lib
from jcl.data import stream
from jcl.types import Batch

REPLICA_AXIS, BATCH_AXIS = 'replica', 'batch'
MODES = ('auto', 'vmap', 'sequential')
LEARNING_RATE = 'optimizer.learning_rate'
# Summary metrics where smaller is better (the ranking sorts them ascending).
LOWER_IS_BETTER = ('forgetting', 'max_forgetting', 'intransigence')
# Seed offset of `end_task`'s subsample of the task data (as in `jcl.train.fit`).
_IMPORTANCE_SALT = 1 << 20


# -----------------------------------------------------------------------------
# Replicas of a config.
# -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Replica:
  """One run of a config: its `seed` and its gridded values `{path: value}`."""
  seed: int
  hparams: Mapping[str, float] = dataclasses.field(default_factory=dict)

  def label(self) -> str:
    values = ' '.join(f'{k}={v:g}' for k, v in self.hparams.items())
    return f'seed={self.seed}' + (f' {values}' if values else '')


def parse_grid(grid: Any) -> dict[str, tuple[float, ...]]:
  """`{'optimizer.learning_rate': (0.01, 0.1), ...}` from a grid description.

  Args:
    grid: None or '' (no grid); a string `'path=v1,v2;path=v1,v2'`; or a
      mapping from dotted paths, or a nested mapping `{'algo': {'ewc_lambda':
      [1, 10]}}`, to values.
  """
  if grid is None or (isinstance(grid, str) and not grid.strip()):
    return {}
  axes: dict[str, tuple[float, ...]] = {}
  if isinstance(grid, str):
    for part in grid.replace('\n', ';').split(';'):
      if not part.strip():
        continue
      path, sep, values = part.partition('=')
      if not sep or not values.strip():
        raise ValueError(f'grid: expected "path=v1,v2,..." in {part!r}')
      axes[path.strip()] = tuple(float(v) for v in values.split(',') if v.strip())
    return axes
  if hasattr(grid, 'to_dict'):
    grid = grid.to_dict()

  def flatten(prefix: str, node: Any):
    if isinstance(node, Mapping):
      for key, value in node.items():
        flatten(f'{prefix}.{key}' if prefix else str(key), value)
    else:
      values = node if isinstance(node, (list, tuple)) else (node,)
      axes[prefix] = tuple(float(v) for v in values)

  flatten('', grid)
  return {k: v for k, v in axes.items() if v}


def grid_settings(config) -> list[dict[str, float]]:
  """Every setting of the config's grid (their product), validated; `[{}]` without one."""
  axes = parse_grid(config.get('grid', None))
  spec = specs.spec_from_config(_section(config.algo))
  optimizer = specs.OptimizerSpec(**_section(config.optimizer))
  floats = {f.name for f in dataclasses.fields(spec) if isinstance(getattr(spec, f.name), float)}
  for path, values in axes.items():
    section, _, field = path.partition('.')
    if path == LEARNING_RATE:
      for v in values:
        dataclasses.replace(optimizer, learning_rate=v)  # validates
    elif section == 'algo' and field in floats:
      for v in values:
        dataclasses.replace(spec, **{field: v})  # validates
    else:
      raise ValueError(
          f'grid: cannot grid {path!r} in one program; gridded values must live in the state or '
          f'be used as numbers by the step: {LEARNING_RATE!r} or a float field of {spec.name}: '
          f'{", ".join("algo." + f for f in sorted(floats)) or "none"}')
    if not values:
      raise ValueError(f'grid: no values for {path!r}')
  return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def replicas_of(config) -> list[Replica]:
  """The replicas of `config`: every grid setting x seeds `seed .. seed + num_seeds - 1`."""
  num_seeds = int(config.get('num_seeds', 1) or 1)
  if num_seeds < 1:
    raise ValueError(f"invalid 'num_seeds': must be >= 1, got {num_seeds}")
  seeds = [int(config.seed) + i for i in range(num_seeds)]
  return [Replica(seed, setting) for setting in grid_settings(config) for seed in seeds]


def is_replicated(config) -> bool:
  """Whether `config` asks for several seeds or a grid (then `run` trains it)."""
  return int(config.get('num_seeds', 1) or 1) > 1 or bool(parse_grid(config.get('grid', None)))


def config_for(config, replica: Replica):
  """The single-run config of `replica`: `config` with its seed and gridded values."""
  single = config.copy_and_resolve_references()
  with single.unlocked():
    single.seed = replica.seed
    if 'num_seeds' in single:
      single.num_seeds = 1
    if 'grid' in single:
      single.grid = ''
    for path, value in replica.hparams.items():
      section, _, field = path.partition('.')
      values = _section(single[section])
      values[field] = float(value)
      single[section] = values
  return single


# -----------------------------------------------------------------------------
# The single-replica program, with the gridded values as arguments.
# -----------------------------------------------------------------------------


class Program:
  """The functions of one replica; `hp` maps gridded paths to (traced) scalars.

  `run_chunk(ts, st, chunk, hp)` and `end_task(ts, st, data, hp)` are
  jit-compiled once for every replica; `vmapped(...)` gives their versions
  over a leading replica axis. With `hp = {}` they are `fit`'s own.
  """

  def __init__(self, spec: specs.AlgorithmSpec, context: algorithms.Context):
    self.spec, self.context = spec, context
    self._base = algorithms.build(spec, context)
    self.run_chunk = jax.jit(self._run_chunk)
    self.end_task = jax.jit(self._end_task)
    self._vmapped: dict[Any, Any] = {}

  def algorithm(self, hp: Mapping[str, Any]) -> algorithms.Algorithm:
    """The algorithm with the spec's gridded fields set to the values in `hp`."""
    fields = {path.partition('.')[2]: v for path, v in hp.items() if path.startswith('algo.')}
    if not fields:
      return self._base
    spec = copy.copy(self.spec)  # validated with Python numbers in `grid_settings`
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
      regime = train_state.regime
      decayed = ts_lib.learning_rate_for_task(types.SimpleNamespace(
          learning_rate=hp[LEARNING_RATE], lr_decay=regime.lr_decay, min_lr=regime.min_lr), task_id)
      opt_state = train_state.opt_state
      hyperparams = dict(opt_state.hyperparams, learning_rate=decayed)
      train_state = train_state.replace(opt_state=opt_state._replace(hyperparams=hyperparams))
    return train_state, algo_state

  def _run_chunk(self, train_state, algo_state, chunk, hp):
    with _traced_values_named(hp):
      return train_lib.run_chunk_fn(self.algorithm(hp).step)(train_state, algo_state, chunk)

  def _end_task(self, train_state, algo_state, data, hp):
    with _traced_values_named(hp):
      return self.algorithm(hp).end_task(train_state, algo_state, data)

  def vmapped(self, name: str, *axes):
    """`jit(vmap(fn))` of 'run_chunk', 'end_task' or 'count_correct' with `in_axes=axes`."""
    key = (name, axes)
    if key not in self._vmapped:
      fn = {'run_chunk': self._run_chunk, 'end_task': self._end_task,
            'count_correct': evaluation.count_correct}[name]
      self._vmapped[key] = jax.jit(jax.vmap(fn, in_axes=axes))
    return self._vmapped[key]


@contextlib.contextmanager
def _traced_values_named(hp):
  """Turns a concretization error on a gridded value into a `ValueError` naming it."""
  try:
    yield
  except jax.errors.ConcretizationTypeError as error:
    if not hp:
      raise
    raise ValueError(f'grid: the algorithm branches in Python on one of {sorted(hp)}, so it '
                     'cannot be gridded in one program; run the settings separately') from error


# -----------------------------------------------------------------------------
# Devices.
# -----------------------------------------------------------------------------


def initialize_distributed(config) -> None:
  """`jax.distributed.initialize()` when `config.replicas.distributed` (multi-host).

  Must run before JAX uses a device. On TPU pods, SLURM and Open MPI the
  coordinator is found from the environment; elsewhere set
  `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`.
  """
  options = _section(config.get('replicas', {}))
  if options.get('distributed', False):
    jax.distributed.initialize()


def default_mode() -> str:
  """'vmap' on accelerators or several devices, 'sequential' on one CPU device."""
  if jax.default_backend() != 'cpu' or jax.device_count() > 1:
    return 'vmap'
  return 'sequential'


def make_mesh(batch_shards: int = 1, devices: Sequence[Any] | None = None) -> Mesh | None:
  """A `('replica', 'batch')` mesh of all devices, `batch_shards` along the
  batch axis; None with a single device."""
  devices = list(devices if devices is not None else jax.devices())
  if len(devices) % batch_shards:
    raise ValueError(f'replicas.batch_shards={batch_shards} does not divide the '
                     f'{len(devices)} devices')
  if len(devices) == 1:
    return None
  return Mesh(np.array(devices).reshape(len(devices) // batch_shards, batch_shards),
              (REPLICA_AXIS, BATCH_AXIS))


def _place(tree, mesh: Mesh | None, spec_of):
  """`tree`'s leaves as global arrays sharded by `spec_of(leaf)`; unchanged without a mesh.

  Every process holds the whole host value, so `make_array_from_callback`
  builds the same global array on one host or many.
  """
  if mesh is None:
    return jax.tree.map(jnp.asarray, tree)

  def put(leaf):
    host = np.asarray(leaf)
    sharding = NamedSharding(mesh, spec_of(host))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(put, tree)


def _fetch(tree):
  """Host NumPy copies of arrays, gathered from every process where they span several."""

  def get(leaf):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      from jax.experimental import multihost_utils
      return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(jax.device_get(leaf))

  return jax.tree.map(get, tree)


# -----------------------------------------------------------------------------
# Results.
# -----------------------------------------------------------------------------


@dataclasses.dataclass
class ReplicasResult:
  """What `run` measured, replica by replica and per setting.

  Attributes:
    replicas: the R replicas, setting-major then seed.
    accuracy_matrices: `[R, T, T]`, `R[r, i, j]` accuracy on task i after task j.
    initial_accuracy: `[R, T]`, the untrained models.
    task_il_accuracy_matrices: `[R, T, T]` for class-incremental streams, else None.
    summaries: per replica, ACC, BWT, FWT, forgetting, ... (fractions).
    histories: per replica, the per-chunk mean training metrics.
    errors: per replica, the first non-finite training metric, else None.
    table: per setting, ranked best first: `hparams`, `seeds`, `mean`,
      `std` (sample, ddof=1; 0 for one seed) of every summary metric and of
      the accuracy matrix.
    train_state, algo_state: the final states, stacked `[R, ...]`.
    mode: 'vmap' or 'sequential'; timings: seconds.
  """
  replicas: list[Replica]
  accuracy_matrices: np.ndarray
  initial_accuracy: np.ndarray
  task_il_accuracy_matrices: np.ndarray | None
  summaries: list[dict[str, float]]
  histories: list[list[dict[str, Any]]]
  errors: list[str | None]
  table: list[dict[str, Any]]
  train_state: Any
  algo_state: Any
  mode: str
  timings: dict[str, float]
  devices: list[str] = dataclasses.field(default_factory=list)
  # Per replica, its share of `timings`: its own seconds in sequential mode,
  # the vmapped program's seconds divided by R in vmap mode.
  replica_timings: list[dict[str, float]] = dataclasses.field(default_factory=list)

  def fit_result(self, index: int) -> train_lib.FitResult:
    """Replica `index` as the `FitResult` of a single run."""
    pick = lambda tree: jax.tree.map(lambda leaf: leaf[index], tree)
    task_il = (None if self.task_il_accuracy_matrices is None
               else self.task_il_accuracy_matrices[index])
    return train_lib.FitResult(pick(self.train_state), pick(self.algo_state),
                               self.accuracy_matrices[index], self.initial_accuracy[index],
                               self.summaries[index], self.histories[index], dict(self.timings),
                               task_il)

  def best(self) -> dict[str, Any]:
    """The best setting: the first row of `table`."""
    return self.table[0]

  def to_json(self) -> dict[str, Any]:
    runs = []
    for r, replica in enumerate(self.replicas):
      entry = {'seed': replica.seed, 'hparams': dict(replica.hparams),
               'accuracy_matrix': _nan_to_none(self.accuracy_matrices[r]),
               'initial_accuracy': self.initial_accuracy[r].tolist(),
               'summary': self.summaries[r]}
      if self.task_il_accuracy_matrices is not None:
        entry['task_il_accuracy_matrix'] = _nan_to_none(self.task_il_accuracy_matrices[r])
      if self.errors[r]:
        entry['error'] = self.errors[r]
      runs.append(entry)
    table = [dict(row, mean_accuracy_matrix=_nan_to_none(row['mean_accuracy_matrix']),
                  std_accuracy_matrix=_nan_to_none(row['std_accuracy_matrix']))
             for row in self.table]
    return {'mode': self.mode, 'devices': self.devices, 'replicas': runs, 'table': table,
            'best': table[0], 'timings': self.timings}


def _section(section) -> dict[str, Any]:
  """A config section as a plain dict (lists as tuples)."""
  if section is None:
    return {}
  if hasattr(section, 'to_dict'):
    section = section.to_dict()
  return {k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(section).items()}


def _nan_to_none(matrix: np.ndarray):
  return [[None if math.isnan(v) else float(v) for v in row] for row in np.asarray(matrix)]


def aggregate(replicas: Sequence[Replica], summaries: Sequence[dict[str, float]],
              accuracy_matrices: np.ndarray, rank_by: str = 'acc') -> list[dict[str, Any]]:
  """Per setting: mean and sample std over seeds of every metric, best first by `rank_by`.

  A setting with a diverged seed (NaN metric) ranks last.
  """
  groups: dict[tuple, list[int]] = {}
  for r, replica in enumerate(replicas):
    groups.setdefault(tuple(replica.hparams.items()), []).append(r)
  rows = []
  for key, members in groups.items():
    names = sorted(set().union(*(summaries[r] for r in members)))
    values = {k: np.array([summaries[r].get(k, np.nan) for r in members], np.float64)
              for k in names}
    rows.append({
        'hparams': dict(key), 'seeds': [replicas[r].seed for r in members],
        'mean': {k: float(np.mean(v)) for k, v in values.items()},
        'std': {k: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()},
        'mean_accuracy_matrix': np.mean(accuracy_matrices[members], axis=0),
        'std_accuracy_matrix': (np.std(accuracy_matrices[members], axis=0, ddof=1)
                                if len(members) > 1 else np.zeros_like(accuracy_matrices[0]))})
  sign = 1.0 if rank_by in LOWER_IS_BETTER else -1.0

  def score(row):
    value = row['mean'].get(rank_by, np.nan)
    return (math.isnan(value), sign * value if not math.isnan(value) else 0.0)

  return sorted(rows, key=score)


def format_summary(result: ReplicasResult, rank_by: str = 'acc') -> str:
  """The settings table (mean ± std over seeds, %), best first, for the console."""
  keys = ('acc', 'bwt', 'fwt', 'forgetting')
  lines = [f'{len(result.replicas)} replicas ({result.mode}), ranked by {rank_by}:']
  for rank, row in enumerate(result.table, 1):
    setting = ' '.join(f'{k}={v:g}' for k, v in row['hparams'].items()) or '(config)'
    cells = [f"{k} {100 * row['mean'][k]:.2f} ± {100 * row['std'][k]:.2f}"
             for k in keys if k in row['mean']]
    lines.append(f"{rank:>2}. {setting} [{len(row['seeds'])} seeds]: " + ' | '.join(cells))
  lines.append('mean accuracy matrix of the best setting (%):')
  lines.append(metrics_lib.format_matrix(result.table[0]['mean_accuracy_matrix']))
  t = result.timings
  lines.append(f"train {t['train_seconds']:.1f}s, eval {t['eval_seconds']:.1f}s, "
               f"wall {t['wall_seconds']:.1f}s")
  return '\n'.join(lines)


# -----------------------------------------------------------------------------
# Executors: one replica at a time, or all of them vmapped.
# -----------------------------------------------------------------------------


@dataclasses.dataclass
class _Member:
  """A replica with what it trains on: its benchmark, initial states and gridded values."""
  replica: Replica
  benchmark: Any
  train_state: Any
  algo_state: Any


def _same_benchmark(a, b) -> bool:
  """Whether two benchmarks hold the same tasks (e.g. a seed-independent stream)."""
  if a is b:
    return True
  if (a.name, a.scenario, a.num_tasks, a.num_classes) != (b.name, b.scenario, b.num_tasks,
                                                          b.num_classes):
    return False
  for ta, tb in zip(a.tasks, b.tasks):
    for split in ('train', 'val', 'test'):
      sa, sb = getattr(ta, split), getattr(tb, split)
      if (sa is None) != (sb is None):
        return False
      if sa is not None and not all(np.array_equal(getattr(sa, f), getattr(sb, f))
                                    for f in ('x', 'y', 't')):
        return False
  return True


def _hp_arrays(hparams: Mapping[str, float]) -> dict[str, jax.Array]:
  return {k: jnp.float32(v) for k, v in hparams.items()}


def eval_chunks(benchmark, task_id: int, config: train_lib.TrainConfig) -> list[Batch]:
  """Task `task_id`'s evaluation split as chunks of up to 10 batches, no more
  than the split fills (`fit` pads its chunks to 10 batches; the counts are
  integers, so the chunking leaves the accuracies as they are)."""
  split = getattr(benchmark.tasks[task_id], config.eval_split)
  if split is None:
    raise ValueError("eval_split='val' needs a benchmark built with val_fraction > 0")
  steps = min(10, stream.num_batches(len(split), config.eval_batch_size))
  return list(stream.eval_chunks(split, batch_size=config.eval_batch_size, chunk_steps=steps))


def _accuracies(counts: list[list[Any]], size: int, given_task: bool):
  """`(accuracy [R, T], accuracy given the task [R, T] or None)` from the
  per-task lists of per-chunk `[R, 3]` counts, summed in float64 as
  `evaluation.split_accuracy` does."""
  totals = np.array([np.sum(np.asarray(_fetch(c), np.float64), axis=0) for c in counts])[:, :size]
  acc = (totals[..., 0] / totals[..., 2]).T
  return acc, ((totals[..., 1] / totals[..., 2]).T if given_task else None)


class _Sequential:
  """One replica, with the shared single-replica program (`fit`'s steps).

  `eval_cache` holds each benchmark's evaluation chunks on the device, shared
  by the replicas that evaluate on it.
  """

  def __init__(self, program: Program, member: _Member, config: train_lib.TrainConfig,
               eval_cache: dict[int, list[list[Batch]]]):
    self.program, self.config = program, config
    self.members = [member]
    self.benchmarks = [member.benchmark]
    self.hp = _hp_arrays(member.replica.hparams)
    self.ts, self.st = member.train_state, member.algo_state
    self._eval_cache = eval_cache

  def begin_task(self, task_id, class_mask):
    self.ts, self.st = self.program.begin_task(self.ts.replace(class_mask=class_mask), self.st,
                                               task_id, self.hp)

  def run_chunk(self, chunks: list[Batch]):
    self.ts, self.st, metrics, valid = self.program.run_chunk(
        self.ts, self.st, Batch(*map(jnp.asarray, chunks[0])), self.hp)
    metrics, valid = jax.device_get((metrics, valid))
    return {k: v[None] for k, v in metrics.items()}, valid[None]

  def end_task(self, datas: list[Batch]):
    self.ts, self.st = self.program.end_task(self.ts, self.st, datas[0], self.hp)
    jax.block_until_ready(self.st)

  def evaluate(self, class_mask):
    ts = self.ts if class_mask is None else self.ts.replace(class_mask=class_mask)
    bench = self.benchmarks[0]
    table = jnp.asarray(bench.class_mask_table()) if bench.scenario == 'class' else None
    if id(bench) not in self._eval_cache:
      self._eval_cache[id(bench)] = [[Batch(*map(jnp.asarray, chunk))
                                      for chunk in eval_chunks(bench, task_id, self.config)]
                                     for task_id in range(bench.num_tasks)]
    counts = [[evaluation.count_correct(ts, chunk, table)[None] for chunk in chunks]
              for chunks in self._eval_cache[id(bench)]]
    return _accuracies(counts, 1, table is not None)

  def states(self):
    return self.ts, self.st


class _Vmapped:
  """All replicas along a leading axis, sharded over `mesh` (padded to fill it)."""

  def __init__(self, program: Program, members: list[_Member], config: train_lib.TrainConfig,
               mesh: Mesh | None):
    self.program, self.config, self.mesh = program, config, mesh
    self.members = members
    self.size = len(members)
    replica_shards = 1 if mesh is None else mesh.shape[REPLICA_AXIS]
    self.batch_shards = 1 if mesh is None else mesh.shape[BATCH_AXIS]
    if config.batch_size % self.batch_shards:
      raise ValueError(f'replicas.batch_shards={self.batch_shards} does not divide the batch '
                       f'size {config.batch_size}')
    self.padded = -(-self.size // replica_shards) * replica_shards
    rows = list(range(self.size)) + [self.size - 1] * (self.padded - self.size)
    self.rows = rows
    # One benchmark object per distinct stream (seed-independent streams are shared).
    self.benchmarks = [m.benchmark for m in members]
    self.shared_benchmark = all(b is self.benchmarks[0] for b in self.benchmarks)
    stack = lambda trees: jax.tree.map(lambda *leaves: np.stack([np.asarray(l) for l in leaves]),
                                       *trees)
    self.ts = self._put_replicated_axis(stack([members[r].train_state for r in rows]))
    self.st = self._put_replicated_axis(stack([members[r].algo_state for r in rows]))
    hps = [_hp_arrays(members[r].replica.hparams) for r in rows]
    self.hp = self._put_replicated_axis(stack(hps)) if hps[0] else {}
    self._eval_cache: dict[int, list[Batch]] = {}

  # Placement: leading replica axis sharded; the batch axis (the one after
  # the K steps) sharded when it divides.
  def _put_replicated_axis(self, tree):
    return _place(tree, self.mesh, lambda leaf: P(REPLICA_AXIS))

  def _put_data(self, tree, batched: bool):
    def spec(leaf):
      lead = (REPLICA_AXIS,) if batched else ()
      rest = leaf.shape[len(lead):]
      if len(rest) >= 2 and self.batch_shards > 1 and rest[1] % self.batch_shards == 0:
        return P(*lead, None, BATCH_AXIS)
      return P(*lead)
    return _place(tree, self.mesh, spec)

  def _stack_data(self, batches: list[Batch]):
    """`(data, in_axes)`: one chunk shared by every replica, or `[R, K, B, ...]`
    (the mask unbatched when equal: the padding steps stay a real `cond`)."""
    if all(b is batches[0] for b in batches):
      return self._put_data(batches[0], batched=False), None
    rows = [batches[r] for r in self.rows]
    stacked = lambda field: np.stack([np.asarray(getattr(b, field)) for b in rows])
    mask_shared = all(np.array_equal(b.mask, rows[0].mask) for b in rows)
    data = Batch(*(self._put_data(stacked(f), batched=True) for f in ('x', 'y', 't')),
                 mask=(self._put_data(np.asarray(rows[0].mask), batched=False) if mask_shared
                       else self._put_data(stacked('mask'), batched=True)))
    return data, Batch(0, 0, 0, None if mask_shared else 0)

  def begin_task(self, task_id, class_mask):
    mask = jnp.broadcast_to(class_mask, (self.padded, *class_mask.shape))
    ts = self.ts.replace(class_mask=self._put_replicated_axis(mask))
    self.ts, self.st = jax.vmap(self.program.begin_task, in_axes=(0, 0, None, 0))(
        ts, self.st, task_id, self.hp)

  def run_chunk(self, chunks: list[Batch]):
    data, axes = self._stack_data(chunks)
    fn = self.program.vmapped('run_chunk', 0, 0, axes, 0)
    self.ts, self.st, metrics, valid = fn(self.ts, self.st, data, self.hp)
    metrics, valid = _fetch((metrics, valid))
    return ({k: np.asarray(v)[:self.size] for k, v in metrics.items()},
            np.asarray(valid)[:self.size])

  def end_task(self, datas: list[Batch]):
    data, axes = self._stack_data(datas)
    fn = self.program.vmapped('end_task', 0, 0, axes, 0)
    self.ts, self.st = fn(self.ts, self.st, data, self.hp)
    jax.block_until_ready(self.st)

  def _eval_chunks(self, task_id: int):
    """Task `task_id`'s evaluation chunks, placed once: `(data, in_axes)` pairs."""
    if task_id not in self._eval_cache:
      per_member = [eval_chunks(b, task_id, self.config) for b in self.benchmarks]
      if self.shared_benchmark:
        per_member = [per_member[0]] * len(per_member)
      self._eval_cache[task_id] = [self._stack_data(list(chunks)) for chunks in zip(*per_member)]
    return self._eval_cache[task_id]

  def evaluate(self, class_mask):
    ts = self.ts
    if class_mask is not None:
      mask = jnp.broadcast_to(class_mask, (self.padded, *class_mask.shape))
      ts = ts.replace(class_mask=self._put_replicated_axis(mask))
    bench = self.benchmarks[0]
    table = jnp.asarray(bench.class_mask_table()) if bench.scenario == 'class' else None
    counts = [[self.program.vmapped('count_correct', 0, axes, None)(ts, data, table)
               for data, axes in self._eval_chunks(task_id)] for task_id in range(bench.num_tasks)]
    return _accuracies(counts, self.size, table is not None)

  def states(self):
    cut = lambda tree: jax.tree.map(lambda leaf: leaf[:self.size], tree)
    return cut(self.ts), cut(self.st)


# -----------------------------------------------------------------------------
# The loop.
# -----------------------------------------------------------------------------


def _train(executor, train_config: train_lib.TrainConfig, spec, importance_samples):
  """`fit`'s loop over the tasks for the executor's replicas: their matrices
  `[R', T, T]`, initial accuracies, histories, errors, seconds and final states."""
  members = executor.members
  bench = members[0].benchmark  # the class masks and task count (every stream has the same)
  num_tasks, size = bench.num_tasks, len(members)
  acc = np.full((size, num_tasks, num_tasks), np.nan)
  task_il = np.full_like(acc, np.nan) if bench.scenario == 'class' else None
  histories: list[list[dict[str, Any]]] = [[] for _ in members]
  errors: list[str | None] = [None] * size
  cumulative = bool(getattr(spec, 'cumulative_data', False))
  seconds = {'train_seconds': 0.0, 'eval_seconds': 0.0, 'samples_seen': 0}

  t0 = time.perf_counter()
  initial, _ = executor.evaluate(None)
  seconds['eval_seconds'] += time.perf_counter() - t0
  steps = 0
  for task_id in range(num_tasks):
    executor.begin_task(task_id, train_lib.class_mask_for(bench, task_id, training=True,
                                                          config=train_config))
    splits = [train_lib.training_split(m.benchmark, task_id, cumulative) for m in members]
    for epoch in range(train_config.epochs):
      epochs = [stream.epoch_chunks(
          split, batch_size=train_config.batch_size, chunk_steps=train_config.chunk_steps,
          rng=np.random.default_rng([m.replica.seed, task_id, epoch]),
          drop_last=train_config.drop_last) for m, split in zip(members, splits)]
      for chunk_id, chunks in enumerate(zip(*epochs)):
        t0 = time.perf_counter()
        metrics, valid = executor.run_chunk(list(chunks))
        seconds['train_seconds'] += time.perf_counter() - t0
        seconds['samples_seen'] += int(sum(np.sum(chunk.mask) for chunk in chunks))
        steps += int(np.sum(valid[0]))
        for r in range(size):
          n = max(int(valid[r].sum()), 1)
          means = {k: float(np.sum(np.where(valid[r], v[r], 0.0)) / n) for k, v in metrics.items()}
          histories[r].append({'task': task_id, 'epoch': epoch, 'chunk': chunk_id, 'step': steps,
                               **means})
          if errors[r] is None and not all(math.isfinite(v) for v in means.values()):
            errors[r] = (f'non-finite training metrics in task {task_id}, epoch {epoch}, '
                         f'chunk {chunk_id}')
    t0 = time.perf_counter()
    datas, made = [], {}
    for m in members:  # the task data of `end_task`, made once per (stream, subsample)
      key = (id(m.benchmark), m.replica.seed if importance_samples else None)
      if key not in made:
        made[key] = train_lib.task_data(train_lib.subsample(
            m.benchmark.tasks[task_id].train, importance_samples,
            np.random.default_rng([m.replica.seed, task_id, _IMPORTANCE_SALT])),
            train_config.end_task_batch_size)
      datas.append(made[key])
    executor.end_task(datas)
    seconds['train_seconds'] += time.perf_counter() - t0
    t0 = time.perf_counter()
    acc[:, :, task_id], given_task = executor.evaluate(train_lib.class_mask_for(bench, task_id))
    if task_il is not None:
      task_il[:, :, task_id] = given_task
    seconds['eval_seconds'] += time.perf_counter() - t0
  train_state, algo_state = executor.states()
  return dict(acc=acc, initial=initial, task_il=task_il, histories=histories, errors=errors,
              seconds=seconds, train_state=train_state, algo_state=algo_state)


def _summaries(acc, initial, task_il, errors) -> list[dict[str, float]]:
  """Per replica, the metrics of `jcl.metrics.summarize`; NaN for a replica
  whose training diverged (its matrix is kept, but it ranks last)."""
  out = []
  for r in range(len(acc)):
    summary = metrics_lib.summarize(acc[r], b=initial[r])
    if task_il is not None:
      summary['task_il_acc'] = metrics_lib.average_accuracy(task_il[r])
    out.append({k: float('nan') for k in summary} if errors[r] else summary)
  return out


def _seed_parts(config, seeds: Sequence[int], share_streams: bool):
  """Yields `(seed, experiment.build(its single-run config))`, one seed at a time.

  Every train state gets the first one's model `apply` (a static field), so
  that they stack. With `share_streams`, a stream equal to an earlier seed's
  (a fixed `benchmark.seed`) is replaced by it, kept once in memory.
  """
  first, kept = None, []
  for seed in seeds:
    parts = experiment.build(config_for(config, Replica(seed)))
    b = parts['benchmark']
    if first is None:
      first = parts
    elif (b.scenario, b.num_tasks, b.num_classes, tuple(b.input_shape)) != (
        first['benchmark'].scenario, first['benchmark'].num_tasks,
        first['benchmark'].num_classes, tuple(first['benchmark'].input_shape)):
      raise ValueError('the seeds build streams of different shapes; set benchmark.seed')
    parts['train_state'] = parts['train_state'].replace(apply_fn=first['train_state'].apply_fn)
    if share_streams:
      same = next((k for k in kept if _same_benchmark(k, b)), None)
      parts['benchmark'] = same if same is not None else b
      if same is None:
        kept.append(b)
    yield seed, parts


def run(config, workdir: str | None = None, *, mode: str | None = None,
        mesh: Mesh | None | str = 'auto') -> ReplicasResult:
  """Trains every replica of `config` (seeds x grid settings); with `workdir`,
  writes `results.json` (per-replica matrices and summaries, the ranked
  per-setting table of mean ± std, the best setting).

  Args:
    config: an experiment config (see `jcl.config`) with `num_seeds`, `grid`
      and `replicas` (`mode`, `batch_shards`, `rank_by`); missing ones default.
    workdir: where `results.json` goes (process 0 of a multi-host job).
    mode: overrides `config.replicas.mode` ('auto', 'vmap' or 'sequential').
    mesh: the device mesh of vmap mode; 'auto' builds one over all devices
      (`make_mesh`), None runs on the default device.
  """
  t_start = time.perf_counter()
  options = _section(config.get('replicas', {}))
  mode = mode or options.get('mode', 'auto')
  if mode not in MODES:
    raise ValueError(f"replicas.mode: must be one of {MODES}, got {mode!r}")
  mode = default_mode() if mode == 'auto' else mode
  rank_by = options.get('rank_by', 'acc')
  replicas = replicas_of(config)

  # One seed's stream and initial states at a time in sequential mode, all in vmap mode.
  seeds = list(dict.fromkeys(r.seed for r in replicas))
  built = _seed_parts(config, seeds, share_streams=mode == 'vmap')
  first_seed, first = next(built)
  spec, train_config, bench = first['spec'], first['train_config'], first['benchmark']
  context = algorithms.Context(tuple(bench.input_shape), bench.num_classes, bench.num_tasks)
  stream_facts = {'benchmark': bench.name, 'scenario': bench.scenario}
  program = Program(spec, context)
  importance_samples = getattr(spec, 'importance_samples', None) or train_config.importance_samples

  def member(replica: Replica, parts) -> _Member:
    hp = _hp_arrays(replica.hparams)
    return _Member(replica, parts['benchmark'], parts['train_state'],
                   program.init(parts['train_state'], parts['algo_rng'], hp))

  if mode == 'vmap':
    by_seed = {first_seed: first, **dict(built)}
    if mesh == 'auto':
      mesh = make_mesh(int(options.get('batch_shards', 1) or 1))
    executors = [_Vmapped(program, [member(r, by_seed[r.seed]) for r in replicas],
                          train_config, mesh)]
    order = [0]
  else:  # seed by seed: `order` lists the replicas as they run
    order = [i for seed in seeds for i, r in enumerate(replicas) if r.seed == seed]

    def one_by_one(seed_parts):
      eval_cache: dict[int, list[list[Batch]]] = {}
      for seed, parts in seed_parts:
        eval_cache.clear()  # the previous seed's stream
        for replica in (r for r in replicas if r.seed == seed):
          yield _Sequential(program, member(replica, parts), train_config, eval_cache)

    executors = one_by_one(itertools.chain([(first_seed, first)], built))
  del first, bench

  trained = [_train(executor, train_config, spec, importance_samples) for executor in executors]
  trained = [trained[order.index(i)] for i in range(len(order))]  # back to replica order
  joined = lambda key: np.concatenate([t[key] for t in trained])
  acc, initial = joined('acc'), joined('initial')
  task_il = None if trained[0]['task_il'] is None else joined('task_il')
  histories = [h for t in trained for h in t['histories']]
  errors = [e for t in trained for e in t['errors']]
  # Stacked [R, ...] in both modes (vmap has one part, already stacked).
  stacked = lambda key: trained[0][key] if mode == 'vmap' else jax.tree.map(
      lambda *leaves: jnp.stack(leaves), *[t[key] for t in trained])
  train_state, algo_state = stacked('train_state'), stacked('algo_state')
  seconds = {k: sum(t['seconds'][k] for t in trained) for k in trained[0]['seconds']}
  replica_timings = [{k: v / len(t['errors']) for k, v in t['seconds'].items()}
                     for t in trained for _ in t['errors']]
  summaries = _summaries(acc, initial, task_il, errors)
  result = ReplicasResult(
      replicas=replicas, accuracy_matrices=acc, initial_accuracy=initial,
      task_il_accuracy_matrices=task_il, summaries=summaries, histories=histories, errors=errors,
      table=aggregate(replicas, summaries, acc, rank_by), train_state=train_state,
      algo_state=algo_state, mode=mode,
      timings={**seconds, 'wall_seconds': time.perf_counter() - t_start},
      devices=[str(d) for d in (mesh.devices.flat if isinstance(mesh, Mesh) else jax.devices()[:1])],
      replica_timings=replica_timings)
  if workdir and jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    experiment.write_results(workdir, config, {
        **result.to_json(), **stream_facts, 'algorithm': spec.to_dict()})
  if all(errors):
    raise train_lib.NonFiniteLossError(f'every replica diverged: {errors[0]}')
  return result
