"""The typed form of an experiment config: one `RunSpec`, validated once.

An ml_collections config (see `jcl.config`) is turned into a `RunSpec` at
the top of a run (`RunSpec.from_config`); from there on only these frozen
dataclasses flow down to the loop, the executors and the backends. Every
section validates itself and raises a `ValueError` naming the field; each
default lives in exactly one place, the dataclass field here (or the
algorithm's spec in `jcl.specs`), and `jcl.config.default_config` is built
from them.

  seed        RunSpec.seed: model init, data order, algorithm keys
  benchmark   BenchmarkSpec: a `jcl.data.make_benchmark` builder and its options
  model       ModelSpec: a model name and its fields
  algo        an `AlgorithmSpec` (`jcl.specs`)
  optimizer   `jcl.specs.OptimizerSpec`
  train       TrainConfig: epochs, batch size, chunk size, evaluation
  log         LogSpec: writers, progress bar, plots (presentation only)
  checkpoint  CheckpointSpec: Orbax / torch.save checkpoints and resumption
  num_seeds, grid, replicas
              ReplicasSpec: several seeds and a hyperparameter grid

Imports neither JAX nor PyTorch.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
import re
import typing
from typing import Any, ClassVar, Mapping

from jcl import specs as specs_lib

# Config keys that are not part of a run (read by other tools).
IGNORED_SECTIONS = ('expected', 'session')
MODES = ('auto', 'vmap', 'sequential')
LEARNING_RATE = 'optimizer.learning_rate'
# Summary metrics where smaller is better (rankings sort them ascending).
LOWER_IS_BETTER = ('forgetting', 'max_forgetting', 'intransigence')
# The summary metrics a run computes (`jcl.metrics.summarize`), which can rank settings.
SUMMARY_METRICS = ('acc', 'learning_accuracy', 'bwt', 'fwt', 'forgetting', 'max_forgetting')
# The largest seed: JAX's `PRNGKey` and `torch.manual_seed` take 64-bit seeds.
MAX_SEED = 2**63 - 1


def _fail(section: str, field: str, message: str):
  raise ValueError(f'{section}: invalid {field!r}: {message}')


def _int_at_least(section: str, field: str, value: Any, low: int) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or value < low:
    _fail(section, field, f'must be an integer >= {low}, got {value!r}')


def _name(section: str, field: str, value: Any, optional: bool = False) -> None:
  """A non-empty string (or None when `optional`)."""
  if not (optional and value is None) and (not isinstance(value, str) or not value.strip()):
    _fail(
      section, field, f'must be a non-empty string{" or None" if optional else ""}, got {value!r}'
    )


@functools.lru_cache(maxsize=None)
def _scalar_fields(cls) -> tuple[tuple[str, type, bool], ...]:
  """`(field, type, None allowed)` of the bool, int, float and str fields of a dataclass."""
  try:
    hints = typing.get_type_hints(cls)
  except Exception:  # pylint: disable=broad-except  # e.g. a spec class defined in a function
    return ()
  out = []
  for f in dataclasses.fields(cls):
    args = typing.get_args(hints[f.name]) or (hints[f.name],)
    kinds = [a for a in args if a is not type(None)]
    if len(kinds) == 1 and kinds[0] in (bool, int, float, str):
      out.append((f.name, kinds[0], len(kinds) < len(args)))
  return tuple(out)


_KINDS = {bool: 'True or False', int: 'an integer', float: 'a finite number', str: 'a string'}


def check_types(section: str, obj: Any) -> None:
  """Every bool, int, float and str field of the dataclass `obj` holds a value
  of its type (an int counts as a float, a bool as neither); else a ValueError
  naming `section` and the field."""
  for field, kind, optional in _scalar_fields(type(obj)):
    value = getattr(obj, field)
    if value is None and optional:
      continue
    if kind is bool:
      ok = isinstance(value, bool)
    elif kind is float:
      ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    else:
      ok = isinstance(value, kind) and not isinstance(value, bool)
    if not ok:
      _fail(
        section, field, f'must be {_KINDS[kind]}{" or None" if optional else ""}, got {value!r}'
      )


def as_plain(section: Any) -> dict[str, Any]:
  """A config section (ConfigDict, mapping or None) as a plain dict, lists as tuples."""
  if section is None:
    return {}
  if hasattr(section, 'to_dict'):
    section = section.to_dict()

  def plain(value):
    if isinstance(value, list):
      return tuple(plain(v) for v in value)
    if hasattr(value, 'to_dict'):
      return as_plain(value)
    return value

  return {k: plain(v) for k, v in dict(section).items()}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How the loop walks the stream.

  Attributes:
    epochs: epochs per task (1 = single pass, online CL).
    batch_size: training batch size B.
    chunk_steps: batches per scanned chunk K (host Python runs once per chunk;
      a chunk's work must outweigh a few hundred microseconds of Python:
      `experiments/bench_peers.py` (then bench_loop) measured K=100 about 7% slower than K=1000
      at batch 10 on 2 CPU cores).
    drop_last: drop the last partial batch instead of padding it.
    eval_batch_size: evaluation batch size.
    eval_split: 'test' or 'val' (validation held out from the training set).
    end_task_batch_size: batch size of the task data handed to `end_task`.
    importance_samples: at most this many samples of the task go to
      `end_task` (e.g. for the Fisher), chosen with the seed; None = all (an
      algorithm's own `importance_samples` wins).
    data_parallel: devices one run's batch is split over (JAX, `jcl.parallel`):
      1 (or 0) one device, N the first N, -1 every device; `batch_size` and
      `eval_batch_size` must divide by it. The numbers equal one device's
      up to float rounding, so checkpoints do not record it.
    seed: data order (epochs are shuffled with `(seed, task, epoch)`).
    mask_unseen_classes: class-incremental training masks the output units
      of classes not seen yet (the common protocol); False trains on all
      units, as Mammoth and the DER paper do. Prediction always chooses
      among the classes seen so far.
    augment: training-time augmentation of image inputs (`jcl.data.augment`):
      None (off), 'crop_flip', or ops such as 'crop:4,flip' (random crop
      with 4 pixels of padding, horizontal flip); stored in canonical form.
      Every training forward pass augments, replayed samples afresh at each
      replay; buffers keep the inputs as they came, evaluation never augments.
  """

  epochs: int = 1
  batch_size: int = 10
  chunk_steps: int = 500
  drop_last: bool = False
  eval_batch_size: int = 1000
  eval_split: str = 'test'
  end_task_batch_size: int = 256
  importance_samples: int | None = None
  data_parallel: int = 1
  seed: int = 0
  mask_unseen_classes: bool = True
  augment: str | None = None

  def __post_init__(self):
    from jcl.data import augment  # no framework import

    try:
      object.__setattr__(self, 'augment', augment.canonical(self.augment))
    except ValueError as e:
      _fail('train', 'augment', str(e))
    for name in ('epochs', 'batch_size', 'chunk_steps', 'eval_batch_size', 'end_task_batch_size'):
      _int_at_least('train', name, getattr(self, name), 1)
    if self.eval_split not in ('test', 'val'):
      _fail('train', 'eval_split', f"must be 'test' or 'val', got {self.eval_split!r}")
    if self.importance_samples is not None:
      _int_at_least('train', 'importance_samples', self.importance_samples, 1)
    _int_at_least('train', 'seed', self.seed, 0)
    _int_at_least('train', 'data_parallel', self.data_parallel, -1)
    for name in ('batch_size', 'eval_batch_size'):
      if self.data_parallel > 1 and getattr(self, name) % self.data_parallel:
        _fail(
          'train',
          'data_parallel',
          f'train.{name}={getattr(self, name)} does not divide over {self.data_parallel} devices',
        )
    check_types('train', self)


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
  """A benchmark builder of `jcl.data.make_benchmark` and its options.

  `options` are the builder's keyword arguments; without a `seed` there,
  the benchmark is seeded with the run's seed (so seeds draw different
  permutations, class orders, ...).
  """

  name: str
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    from jcl.data import benchmarks  # NumPy only

    if self.name not in benchmarks.BENCHMARKS:
      _fail(
        'benchmark', 'name', f'must be one of {sorted(benchmarks.BENCHMARKS)}, got {self.name!r}'
      )
    allowed = benchmarks.builder_options(self.name)
    unknown = sorted(set(self.options) - set(allowed))
    if unknown:
      raise ValueError(f'benchmark {self.name}: unknown option(s) {unknown}; allowed: {allowed}')

  def build(self, seed: int):
    """The `jcl.data.Benchmark` (seeded by `seed` unless the options set one)."""
    from jcl.data import benchmarks

    return benchmarks.make_benchmark(self.name, **{'seed': seed, **dict(self.options)})


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A model name of the backend's model registry and its fields (widths,
  dropout, ...); the output head comes from the benchmark's scenario. The
  model of a user module's `model_fn` is `'user_module'` with a `path`
  (`jcl.user_module`)."""

  name: str
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name:
      _fail('model', 'name', f'must be a model name, got {self.name!r}')

  @classmethod
  def from_section(cls, section: Mapping[str, Any]) -> 'ModelSpec':
    """The spec of a config's model section (`{'name': ..., **fields}`)."""
    section = dict(section)
    if 'name' not in section:
      raise ValueError("model: needs a 'name' (a model preset: --config.model=mlp)")
    return cls(section.pop('name'), section)


@dataclasses.dataclass(frozen=True)
class LogSpec:
  """Presentation: what is written where (never changes the numbers).

  Attributes:
    loggers: writers of `jcl.loggers` ('console', 'jsonl', 'csv',
      'tensorboard', 'wandb'); file writers need a workdir.
    progress: a progress bar per task (only on a terminal).
    every_chunks: training metrics are written every this many chunks, and
      at the end of every epoch in any case.
    plots: PNG plots of the accuracy matrix at the end of a run (matplotlib).
    project: the W&B project.
    run_name: the run's name for W&B (default: the workdir's name); the
      replicas of a run are named after it and grouped under it.
  """

  loggers: tuple[str, ...] = ('console', 'jsonl')
  progress: bool = True
  every_chunks: int = 2
  plots: bool = True
  project: str = 'jcl'
  run_name: str | None = None

  def __post_init__(self):
    if isinstance(self.loggers, str):
      object.__setattr__(self, 'loggers', (self.loggers,))
    if not isinstance(self.loggers, (tuple, list)):
      _fail('log', 'loggers', f'must be writer names, got {self.loggers!r}')
    names = [n.strip() for entry in self.loggers for n in str(entry).split(',') if n.strip()]
    object.__setattr__(self, 'loggers', tuple(names))
    from jcl import loggers  # NumPy only

    known = loggers.available_writers()
    unknown = [n for n in names if n not in known]
    if unknown:
      _fail('log', 'loggers', f'unknown writer(s) {unknown}; known: {list(known)}')
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
      _fail('log', 'loggers', f'writer(s) {repeated} named more than once')
    _int_at_least('log', 'every_chunks', self.every_chunks, 1)
    _name('log', 'project', self.project)
    _name('log', 'run_name', self.run_name, optional=True)
    check_types('log', self)


@dataclasses.dataclass(frozen=True)
class CheckpointSpec:
  """Checkpoints in `WORKDIR/checkpoints`, from which a rerun resumes.

  Attributes:
    enabled: write checkpoints (with a workdir).
    every_chunks: also save every this many chunks (0 = at task ends only).
    max_to_keep: recent checkpoints kept (>= 2, so a corrupt newest one
      leaves a good one behind).
  """

  enabled: bool = True
  every_chunks: int = 0
  max_to_keep: int = 3

  def __post_init__(self):
    _int_at_least('checkpoint', 'every_chunks', self.every_chunks, 0)
    _int_at_least('checkpoint', 'max_to_keep', self.max_to_keep, 2)
    check_types('checkpoint', self)


@dataclasses.dataclass(frozen=True)
class Replica:
  """One run of a config: its `seed` and its gridded values `{path: value}`.

  >>> replica = Replica(1, {'optimizer.learning_rate': 0.1, 'algo.ewc_lambda': 10.0})
  >>> replica.label()
  'seed=1 optimizer.learning_rate=0.1 algo.ewc_lambda=10'
  >>> replica.dirname()
  'seed_1-learning_rate_0.1-ewc_lambda_10'
  """

  seed: int
  hparams: Mapping[str, float] = dataclasses.field(default_factory=dict)

  def label(self) -> str:
    values = ' '.join(f'{k}={v:g}' for k, v in self.hparams.items())
    return f'seed={self.seed}' + (f' {values}' if values else '')

  def dirname(self) -> str:
    """A folder name for the replica's files, e.g. `seed_1-learning_rate_0.1`."""
    parts = [f'seed_{self.seed}'] + [
      f'{k.rpartition(".")[2]}_{v:g}' for k, v in self.hparams.items()
    ]
    return re.sub(r'[^A-Za-z0-9_.=+-]', '_', '-'.join(parts))


def parse_grid(grid: Any) -> dict[str, tuple[float, ...]]:
  """`{'optimizer.learning_rate': (0.01, 0.1), ...}` from a grid description.

  Args:
    grid: None or '' (no grid); a string `'path=v1,v2;path=v1,v2'`; or a
      mapping from dotted paths, or a nested mapping `{'algo': {'ewc_lambda':
      [1, 10]}}`, to values.

  >>> parse_grid('optimizer.learning_rate=0.01,0.1; algo.ewc_lambda=1')
  {'optimizer.learning_rate': (0.01, 0.1), 'algo.ewc_lambda': (1.0,)}
  >>> parse_grid({'algo': {'alpha': [0.1, 0.2]}})
  {'algo.alpha': (0.1, 0.2)}
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
      try:
        axes[path.strip()] = tuple(float(v) for v in values.split(',') if v.strip())
      except ValueError:
        raise ValueError(
          f'grid: the values of {path.strip()!r} must be numbers, got {values!r}'
        ) from None
    return axes
  if hasattr(grid, 'to_dict'):
    grid = grid.to_dict()
  if isinstance(grid, tuple) and all(isinstance(a, tuple) and len(a) == 2 for a in grid):
    return {path: tuple(float(v) for v in values) for path, values in grid}

  def flatten(prefix: str, node: Any):
    if isinstance(node, Mapping):
      for key, value in node.items():
        flatten(f'{prefix}.{key}' if prefix else str(key), value)
    else:
      values = node if isinstance(node, (list, tuple)) else (node,)
      axes[prefix] = tuple(float(v) for v in values)

  flatten('', grid)
  return {k: v for k, v in axes.items() if v}


@dataclasses.dataclass(frozen=True)
class ReplicasSpec:
  """Several seeds and/or a grid over scalar hyperparameters (`jcl.replicas`).

  Attributes:
    num_seeds: seeds `seed .. seed + num_seeds - 1`.
    grid: `((path, values), ...)`, e.g. `(('optimizer.learning_rate', (0.01,
      0.1)),)`; the replicas are every setting (their product) x seeds.
    mode: 'vmap' (one batched program), 'sequential' (one compiled program
      run replica after replica, bit-identical to separate runs) or 'auto'
      (vmap on accelerators or several devices, sequential on one CPU).
    batch_shards: devices along the batch axis of the vmap mode's mesh.
    rank_by: the summary metric that ranks the settings.
    distributed: `jax.distributed.initialize()` first (multi-host).
  """

  num_seeds: int = 1
  grid: tuple[tuple[str, tuple[float, ...]], ...] = ()
  mode: str = 'auto'
  batch_shards: int = 1
  rank_by: str = 'acc'
  distributed: bool = False

  def __post_init__(self):
    _int_at_least('replicas', 'num_seeds', self.num_seeds, 1)
    _int_at_least('replicas', 'batch_shards', self.batch_shards, 1)
    if self.mode not in MODES:
      _fail('replicas', 'mode', f'must be one of {MODES}, got {self.mode!r}')
    if self.rank_by not in SUMMARY_METRICS:
      _fail('replicas', 'rank_by', f'must be one of {SUMMARY_METRICS}, got {self.rank_by!r}')
    check_types('replicas', self)
    object.__setattr__(self, 'grid', tuple(parse_grid(self.grid).items()))
    for path, values in self.grid:
      if not values:
        raise ValueError(f'grid: no values for {path!r}')
      if not all(math.isfinite(v) for v in values):
        raise ValueError(f'grid: the values of {path!r} must be finite, got {values}')

  @property
  def replicated(self) -> bool:
    return self.num_seeds > 1 or bool(self.grid)


def _grid_fields(algorithm: specs_lib.AlgorithmSpec) -> set[str]:
  return {
    f.name for f in dataclasses.fields(algorithm) if isinstance(getattr(algorithm, f.name), float)
  }


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """Everything a run is, validated: see the module docstring for the sections.

  Attributes:
    compilation_cache: the persistent XLA compilation cache ('auto': a
      user cache folder, `$JCL_CACHE_DIR` or `~/.cache/jcl/xla`; a path;
      None or '' to switch it off). Compilations are reused across tasks,
      seeds and reruns.
    config: the config as JSON-able data (what results.json records).
  """

  seed: int
  benchmark: BenchmarkSpec
  model: ModelSpec
  algorithm: specs_lib.AlgorithmSpec
  optimizer: specs_lib.OptimizerSpec = dataclasses.field(default_factory=specs_lib.OptimizerSpec)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  log: LogSpec = dataclasses.field(default_factory=LogSpec)
  checkpoint: CheckpointSpec = dataclasses.field(default_factory=CheckpointSpec)
  replicas: ReplicasSpec = dataclasses.field(default_factory=ReplicasSpec)
  compilation_cache: str | None = 'auto'
  config: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

  # The sections of an ml_collections config and the top-level keys.
  SECTIONS: ClassVar[tuple[str, ...]] = (
    'benchmark',
    'model',
    'algo',
    'optimizer',
    'train',
    'log',
    'checkpoint',
    'replicas',
  )
  TOP_LEVEL: ClassVar[tuple[str, ...]] = (
    'seed',
    'num_seeds',
    'grid',
    'compilation_cache',
    'user_module',
  )

  def __post_init__(self):
    _int_at_least('config', 'seed', self.seed, 0)
    if self.seed + self.replicas.num_seeds - 1 > MAX_SEED:
      _fail(
        'config',
        'seed',
        f'must be <= {MAX_SEED - self.replicas.num_seeds + 1} (seeds seed .. seed + num_seeds '
        f'- 1 are 64-bit integers), got {self.seed}',
      )
    if self.compilation_cache is not None and not isinstance(self.compilation_cache, str):
      _fail(
        'config',
        'compilation_cache',
        f"must be 'auto', a folder, or '' / None (off), got {self.compilation_cache!r}",
      )
    check_types('optimizer', self.optimizer)
    check_types(self.algorithm.name, self.algorithm)
    if self.train.seed != self.seed:
      object.__setattr__(self, 'train', dataclasses.replace(self.train, seed=self.seed))
    floats = _grid_fields(self.algorithm)
    for path, values in self.replicas.grid:
      section, _, field = path.partition('.')
      if path == LEARNING_RATE:
        for v in values:
          dataclasses.replace(self.optimizer, learning_rate=v)  # validates
      elif section == 'algo' and field in floats:
        for v in values:
          dataclasses.replace(self.algorithm, **{field: v})  # validates
      else:
        raise ValueError(
          f'grid: cannot grid {path!r} in one program; gridded values must live in the state '
          f'or be used as numbers by the step: {LEARNING_RATE!r} or a float field of '
          f'{self.algorithm.name}: {", ".join("algo." + f for f in sorted(floats)) or "none"}'
        )

  def regime(self) -> tuple[dict[str, Any], specs_lib.OptimizerSpec, TrainConfig]:
    """`(model config with its 'name', optimizer, loop config)` under the
    algorithm's training regime (`AlgorithmSpec.regime`)."""
    return self.algorithm.regime(
      {'name': self.model.name, **self.model.options}, self.optimizer, self.train
    )

  def build_benchmark(self):
    """The run's `Benchmark`, checked against the algorithm's scenarios."""
    benchmark = self.benchmark.build(self.seed)
    if benchmark.scenario not in self.algorithm.scenarios:
      raise ValueError(
        f'{self.algorithm.name} does not apply to {benchmark.scenario}-incremental '
        f'learning; it supports: {", ".join(self.algorithm.scenarios)}'
      )
    return benchmark

  # --------------------------------------------------------------------------
  # From an ml_collections config.
  # --------------------------------------------------------------------------

  @classmethod
  def from_config(cls, config: Any) -> 'RunSpec':
    """The `RunSpec` of an ml_collections config (or a nested mapping).

    >>> spec = RunSpec.from_config({'seed': 3, 'benchmark': {'name': 'split_mnist'},
    ...                             'model': {'name': 'mlp'}, 'algo': {'name': 'ewc'},
    ...                             'num_seeds': 2, 'grid': 'algo.ewc_lambda=1,10'})
    >>> [r.label() for r in spec.replica_list()]
    ['seed=3 algo.ewc_lambda=1', 'seed=4 algo.ewc_lambda=1',
     'seed=3 algo.ewc_lambda=10', 'seed=4 algo.ewc_lambda=10']
    >>> spec.for_replica(spec.replica_list()[3]).algorithm.ewc_lambda
    10.0
    >>> RunSpec.from_config({'benchmark': {'name': 'split_mnist'}, 'model': {'name': 'mlp'},
    ...                      'train': {'batch_sise': 10}})
    Traceback (most recent call last):
    ...
    ValueError: train: unknown field(s) ['batch_sise']; known: [...]

    Raises:
      ValueError: an unknown section or field, or a bad value (named).
    """
    if isinstance(config, RunSpec):
      return config
    values = as_plain(config)
    unknown = sorted(set(values) - set(cls.SECTIONS) - set(cls.TOP_LEVEL) - set(IGNORED_SECTIONS))
    if unknown:
      raise ValueError(
        f'config: unknown section(s) {unknown}; known: {sorted(cls.SECTIONS + cls.TOP_LEVEL)}'
      )
    seed = values.get('seed', 0)
    _int_at_least('config', 'seed', seed, 0)
    benchmark_spec, model_spec = _benchmark_and_model(values)
    replicas = dict(values.get('replicas') or {})
    for key in ('num_seeds', 'grid'):
      if key in values:
        replicas[key] = values[key]
    if replicas.get('num_seeds') is None:
      replicas['num_seeds'] = 1
    train = dict(values.get('train') or {})
    train.pop('seed', None)
    return cls(
      seed=seed,
      benchmark=benchmark_spec,
      model=model_spec,
      algorithm=specs_lib.spec_from_config(values.get('algo') or {'name': 'naive'}),
      optimizer=_section(specs_lib.OptimizerSpec, 'optimizer', values.get('optimizer')),
      train=_section(TrainConfig, 'train', {**train, 'seed': seed}),
      log=_section(LogSpec, 'log', values.get('log')),
      checkpoint=_section(CheckpointSpec, 'checkpoint', values.get('checkpoint')),
      replicas=_section(ReplicasSpec, 'replicas', replicas),
      compilation_cache=values.get('compilation_cache', 'auto'),
      config=_json_able(values),
    )

  # --------------------------------------------------------------------------
  # Replicas.
  # --------------------------------------------------------------------------

  @property
  def replicated(self) -> bool:
    """Whether the run has several seeds or a grid."""
    return self.replicas.replicated

  def replica_list(self) -> list[Replica]:
    """Every grid setting x seeds `seed .. seed + num_seeds - 1` (setting-major)."""
    axes = dict(self.replicas.grid)
    seeds = [self.seed + i for i in range(self.replicas.num_seeds)]
    settings = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    return [Replica(seed, setting) for setting in settings for seed in seeds]

  def for_replica(self, replica: Replica) -> 'RunSpec':
    """The single run of `replica`: its seed and gridded values, no replicas."""
    algorithm, optimizer = self.algorithm, self.optimizer
    for path, value in replica.hparams.items():
      section, _, field = path.partition('.')
      if path == LEARNING_RATE:
        optimizer = dataclasses.replace(optimizer, learning_rate=float(value))
      elif section == 'algo':
        algorithm = dataclasses.replace(algorithm, **{field: float(value)})
    return dataclasses.replace(
      self,
      seed=replica.seed,
      algorithm=algorithm,
      optimizer=optimizer,
      train=dataclasses.replace(self.train, seed=replica.seed),
      replicas=dataclasses.replace(self.replicas, num_seeds=1, grid=()),
    )

  # --------------------------------------------------------------------------
  # What a checkpoint records, and how two runs differ.
  # --------------------------------------------------------------------------

  def record(self, mode: str | None = None) -> dict[str, Any]:
    """The fields that decide a run's numbers, flat `{dotted.path: value}`:
    everything but presentation (`log`), checkpoint cadence and the cache.
    A checkpoint stores it; resuming under a different record is refused."""
    flat: dict[str, Any] = {'seed': self.seed}
    flat.update(_flatten('benchmark', {'name': self.benchmark.name, **self.benchmark.options}))
    flat.update(_flatten('model', {'name': self.model.name, **self.model.options}))
    flat.update(_flatten('algo', self.algorithm.to_dict()))
    flat.update(_flatten('optimizer', dataclasses.asdict(self.optimizer)))
    # Not `train.data_parallel`: it changes the numbers by float rounding only.
    train = dataclasses.asdict(self.train)
    flat.update(
      _flatten('train', {k: v for k, v in train.items() if k not in ('seed', 'data_parallel')})
    )
    if self.replicated:
      flat['num_seeds'] = self.replicas.num_seeds
      flat['grid'] = ';'.join(
        f'{p}={",".join(f"{v:g}" for v in vs)}' for p, vs in self.replicas.grid
      )
      flat['replicas.mode'] = mode or self.replicas.mode
      flat['replicas.batch_shards'] = self.replicas.batch_shards
    return _json_able(flat)


def _benchmark_and_model(values: Mapping[str, Any]) -> tuple[BenchmarkSpec, ModelSpec]:
  """The benchmark and model specs of a config: its sections, or a user
  module's `data_fn` / `model_fn` in their place (`jcl.user_module`)."""
  path = values.get('user_module') or None
  found = ()
  if path is not None:
    from jcl import user_module  # imports the user's file

    if not isinstance(path, str):
      _fail('config', 'user_module', f'must be the path of a Python file, got {path!r}')
    path = os.path.abspath(path)
    found = user_module.exports(path)
  if 'data_fn' in found:
    benchmark = user_module.UserBenchmarkSpec(user_module.NAME, {'path': path})
  else:
    options = dict(values.get('benchmark') or {})
    if 'name' not in options:
      raise ValueError("benchmark: needs a 'name'")
    benchmark = BenchmarkSpec(options.pop('name'), options)
  if 'model_fn' in found:
    model = ModelSpec(user_module.NAME, {'path': path})
  else:
    model = ModelSpec.from_section(values.get('model') or {})
  return benchmark, model


def _section(cls, name: str, values: Mapping[str, Any] | None):
  """`cls(**values)`, naming unknown fields."""
  values = dict(values or {})
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ValueError(f'{name}: unknown field(s) {unknown}; known: {sorted(known)}')
  return cls(**values)


def _flatten(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
  out = {}
  for key, value in values.items():
    path = f'{prefix}.{key}'
    if isinstance(value, Mapping):
      out.update(_flatten(path, value))
    else:
      out[path] = value
  return out


def _json_able(value: Any) -> Any:
  """Tuples as lists, mappings as dicts, recursively (what JSON gives back)."""
  if isinstance(value, Mapping):
    return {str(k): _json_able(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_able(v) for v in value]
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def record_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
  """The fields in which two records differ, for a message; empty when they
  describe the same run. A field absent from one record and None (its
  default) in the other is no difference: a checkpoint written before the
  field existed still resumes.

  >>> record_differences({'seed': 0, 'optimizer.learning_rate': 0.05},
  ...                    {'seed': 0, 'optimizer.learning_rate': 0.5, 'benchmark.pixel_max': None})
  ['optimizer.learning_rate: 0.05 in the checkpoint, 0.5 now']
  """
  lines = []
  for key in sorted(set(stored) | set(current)):
    a, b = stored.get(key), current.get(key)
    if a != b:
      absent = lambda record: '(absent)' if key not in record else repr(record[key])
      lines.append(f'{key}: {absent(stored)} in the checkpoint, {absent(current)} now')
  return lines


def default_cache_dir() -> str:
  """`$JCL_CACHE_DIR`, else `$XDG_CACHE_HOME/jcl/xla`, else `~/.cache/jcl/xla`."""
  if os.environ.get('JCL_CACHE_DIR'):
    return os.environ['JCL_CACHE_DIR']
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'jcl', 'xla')


def field_types(cls) -> dict[str, Any]:
  """`{field: type}` of a dataclass, with `X | None` reduced to `X` (for
  typed `FieldReference`s in `jcl.config`)."""
  hints = typing.get_type_hints(cls)
  out = {}
  for f in dataclasses.fields(cls):
    hint = hints[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    out[f.name] = args[0] if args and type(None) in typing.get_args(hint) else hint
  return out
