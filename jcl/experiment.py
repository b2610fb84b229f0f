"""The JAX backend of `jcl.runs`: a run's parts built from its `RunSpec`.

`run(config, workdir)` is `jcl.runs.run` on this backend (what
`experiments/train.py` calls); `build(config)` gives the benchmark, model,
algorithm, initial train state and loop config of a config, for a loop of
your own. The rest is the backend interface `jcl.runs` uses (see there).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
from typing import Any, Mapping

import jax

from jcl import algorithms
from jcl import loop
from jcl import models
from jcl import replicas as replicas_lib
from jcl import runs
from jcl import train as train_lib
from jcl import train_state as ts_lib
from jcl import user_module
from jcl.data import augment as augment_lib
from jcl.data import benchmarks as benchmarks_lib
from jcl.run_spec import Replica, RunSpec, default_cache_dir

name = 'jax'


@dataclasses.dataclass
class Parts:
  """What a run is made of (one replica's, for seeds and grids)."""

  spec: RunSpec
  benchmark: benchmarks_lib.Benchmark
  model: Any
  algorithm: algorithms.Algorithm
  context: algorithms.Context
  train_state: ts_lib.TrainState
  algo_rng: jax.Array
  train_config: loop.TrainConfig  # under the algorithm's regime (`RunSpec.regime`)
  hp: dict[str, float] = dataclasses.field(default_factory=dict)  # gridded values


def build_model(model_config: Mapping[str, Any], benchmark: benchmarks_lib.Benchmark):
  """The model of `model_config` (its `name` and fields), with the output head
  the benchmark's scenario needs; a user module's `model_fn(benchmark)` for
  the name 'user_module' (`jcl.user_module`)."""
  kwargs = dict(model_config)
  model_name = kwargs.pop('name')
  if model_name == user_module.NAME:
    return user_module.model(kwargs.pop('path'), benchmark, **kwargs)
  task_classes = None
  if benchmark.scenario == 'task' and benchmark.num_heads == 1:
    task_classes = tuple(tuple(int(c) for c in cls) for cls in benchmark.task_classes)
  return models.make_model(
    model_name,
    num_classes=benchmark.num_classes,
    num_heads=benchmark.num_heads,
    task_classes=task_classes,
    **kwargs,
  )


def build(config, shared: dict[str, Any] | None = None, replica: Replica | None = None) -> Parts:
  """The parts of `config` (an ml_collections config or a `RunSpec`).

  With `replica`, those of that replica of a run of seeds / a grid: its
  seed's stream and initial state, the gridded values in `hp` (the algorithm
  and optimizer keep the config's values: the shared program takes `hp` as
  arguments). `shared` keeps what the replicas share (the program, the
  model's `apply`, the evaluation data of the last stream).
  """
  spec = RunSpec.from_config(config)
  shared = {} if shared is None else shared
  hp = dict(replica.hparams) if replica is not None else {}
  if replica is not None:
    spec = spec.for_replica(Replica(replica.seed))
    cached = shared.get('seed_parts')
    if cached is not None and cached.spec == spec:  # another setting of the same seed
      return dataclasses.replace(cached, hp=hp)
  benchmark = spec.build_benchmark()
  context = algorithms.Context.of(benchmark)
  model_config, optimizer, train_config = spec.regime()
  model = algorithms.adapt_model(spec.algorithm, build_model(model_config, benchmark), context)
  state, algo_rng = initial_state(spec.seed, model, optimizer, train_config, benchmark)
  if 'apply_fn' in shared:  # equal static fields: the replicas share compilations and stack
    state = state.replace(apply_fn=shared['apply_fn'])
  shared.setdefault('apply_fn', state.apply_fn)
  parts = Parts(
    spec,
    benchmark,
    model,
    algorithms.build(spec.algorithm, context),
    context,
    state,
    algo_rng,
    train_config,
    hp,
  )
  if replica is not None:
    shared['seed_parts'] = parts
  return parts


def _program(parts: Parts, shared: dict[str, Any]) -> train_lib.Program:
  if 'program' not in shared:
    shared['program'] = train_lib.Program(parts.algorithm, parts.context)
  return shared['program']


def executor(parts: Parts, shared: dict[str, Any]) -> train_lib.JaxExecutor:
  """The executor of one replica (programs and evaluation data shared)."""
  return train_lib.JaxExecutor(
    _program(parts, shared),
    parts.benchmark,
    parts.train_config,
    hp=parts.hp,
    eval_cache=shared.setdefault('eval', {}),
  )


def init_algo_state(parts: Parts, shared: dict[str, Any]):
  return _program(parts, shared).init(
    parts.train_state, parts.algo_rng, train_lib.hp_arrays(parts.hp)
  )


def seeded(parts: Parts):
  """The walk's context: nothing to seed (every key lives in the states)."""
  del parts
  return contextlib.nullcontext()


def vmapped(spec: RunSpec, replicas: list[Replica], mesh, shared: dict[str, Any]):
  """`(executor, stream, train_state, algo_state)` of every replica in one
  vmapped walk. Replicas whose streams are equal (a fixed `benchmark.seed`)
  share one copy."""
  if mesh == 'auto':
    mesh = replicas_lib.make_mesh(batch_shards(spec))
  by_seed: dict[int, Parts] = {}
  kept: list[benchmarks_lib.Benchmark] = []
  for seed in dict.fromkeys(r.seed for r in replicas):
    parts = build(spec, shared, Replica(seed))
    shared.pop('seed_parts', None)
    same = next((b for b in kept if replicas_lib.same_benchmark(b, parts.benchmark)), None)
    if same is None:
      kept.append(parts.benchmark)
    else:
      parts = dataclasses.replace(parts, benchmark=same)
    by_seed[seed] = parts
  members = [by_seed[r.seed] for r in replicas]
  first = members[0]
  shapes = {
    (
      p.benchmark.scenario,
      p.benchmark.num_tasks,
      p.benchmark.num_classes,
      tuple(p.benchmark.input_shape),
    )
    for p in members
  }
  if len(shapes) > 1:
    raise ValueError('the seeds build streams of different shapes; set benchmark.seed')
  program = _program(first, shared)
  executor_ = replicas_lib.VmappedExecutor(
    program, [p.benchmark for p in members], [r.hparams for r in replicas], first.train_config, mesh
  )
  states = [
    (p.train_state, program.init(p.train_state, p.algo_rng, train_lib.hp_arrays(r.hparams)))
    for p, r in zip(members, replicas)
  ]
  train_state, algo_state = executor_.stack_states(states)
  stream = loop.Stream(
    [p.benchmark for p in members],
    [r.seed for r in replicas],
    first.train_config,
    labels=[r.label() for r in replicas],
    **loop.stream_needs(spec.algorithm, first.train_config),
  )
  return executor_, stream, train_state, algo_state


def initial_state(seed: int, model, optimizer, train_config, benchmark):
  """`(train_state, algo_rng)`: the model initialised and its optimizer from
  `seed` (split into the init key and the algorithm's key), with the
  training augmentation `train_config.augment` for the benchmark's inputs."""
  init_rng, algo_rng = jax.random.split(jax.random.PRNGKey(seed))
  state = ts_lib.create_train_state(
    model,
    optimizer,
    init_rng,
    benchmark.input_shape,
    benchmark.num_classes,
    augment=augment_lib.for_benchmark(train_config.augment, benchmark),
  )
  return state, algo_rng


def batch_shards(spec: RunSpec) -> int:
  """The devices along the batch axis of the vmapped replicas' mesh:
  `replicas.batch_shards`, or those of `train.data_parallel` (each replica's
  batch split over them, the replicas over the rest: a 2-D mesh)."""
  from jcl import parallel

  wanted = spec.train.data_parallel
  if wanted in (0, 1):
    return spec.replicas.batch_shards
  n = parallel.num_devices(wanted, jax.device_count(), {'train.batch_size': spec.train.batch_size})
  if spec.replicas.batch_shards not in (1, n):
    raise ValueError(
      f'train.data_parallel={wanted} ({n} devices) and replicas.batch_shards='
      f"{spec.replicas.batch_shards} both split the vmapped replicas' batch; set one of them"
    )
  return n


def stack_states(states):
  """Per-replica states stacked `[R, ...]`."""
  import jax.numpy as jnp

  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def replica_mode(mode: str) -> str:
  """'vmap' or 'sequential' ('auto': by the devices, `replicas.default_mode`)."""
  return replicas_lib.default_mode() if mode == 'auto' else mode


def checkpointer(directory: str, max_to_keep: int):
  if jax.process_count() > 1:  # every process would write the manifest (jcl.checkpoint)
    raise ValueError(
      'checkpoints of a multi-host job are not supported yet: set checkpoint.enabled=False'
    )
  from jcl import checkpoint  # Orbax: imported when checkpoints are written

  return checkpoint.Checkpointer(directory, max_to_keep=max_to_keep)


def is_writer() -> bool:
  """Whether this process writes files (process 0 of a multi-host job)."""
  return jax.process_index() == 0


def devices(mesh) -> list[str]:
  return [str(d) for d in (mesh.devices.flat if mesh is not None else jax.devices()[:1])]


def environment() -> dict[str, Any]:
  return {
    'jax': jax.__version__,
    'backend': jax.default_backend(),
    'python': platform.python_version(),
  }


_PREPARED: dict[str, Any] = {}


def prepare(spec: RunSpec) -> None:
  """Before JAX computes anything: `jax.distributed` for multi-host jobs and
  the persistent compilation cache (compilations reused across tasks, seeds
  and reruns)."""
  replicas_lib.initialize_distributed(spec)
  cache = default_cache_dir() if spec.compilation_cache == 'auto' else spec.compilation_cache
  if cache and _PREPARED.get('cache') != cache:
    os.makedirs(cache, exist_ok=True)
    jax.config.update('jax_compilation_cache_dir', cache)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.1)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
    _PREPARED['cache'] = cache


def run(config, workdir: str | None = None, extra_callbacks=()):
  """`jcl.runs.run(config, workdir)` on JAX: a `FitResult` for one run, a
  `ReplicasResult` for seeds and grids."""
  return runs.run(config, workdir, backend='jax', extra_callbacks=extra_callbacks)


def write_results(workdir: str, config, payload: Mapping[str, Any]) -> str:
  """Atomically writes `workdir/results.json` (`jcl.runs.write_results`) with
  the JAX environment."""
  return runs.write_results(workdir, config, payload, environment())
