"""Seeds and hyperparameter settings of one config, trained as one program.

A *replica* (`jcl.run_spec.Replica`) is one run of a config: a seed (model
init, algorithm keys, data order and, unless `benchmark.seed` is set, the
benchmark itself) and values of the gridded hyperparameters:

  python -m experiments.train --config=configs/ewc.py:permuted_mnist \
      --config.num_seeds=5 --workdir=/tmp/ewc_5_seeds
  python -m experiments.train --config=configs/ewc.py:permuted_mnist --config.num_seeds=3 \
      --config.grid='optimizer.learning_rate=0.01,0.1;algo.ewc_lambda=1,10' --workdir=/tmp/grid

`jcl.runs.run` trains them as full runs (checkpoints, resumption, writers
per replica, progress, plots) and writes, per replica, the accuracy matrix
`R[i, j]` and its metrics, and per setting the mean and sample standard
deviation (ddof=1) of every metric over the seeds, ranked by
`replicas.rank_by`. Replica `(seed s, setting h)` equals the single run of
`config_for(config, replica)`.

Execution, `config.replicas.mode`:

* 'vmap': the replicas are a leading axis `[R, ...]` of `(train_state,
  algo_state)`, of the current task's staged data `[R, N, ...]` (one copy
  when the replicas share a stream; the stored images are always shared) and
  of the chunks' row numbers `[R, K, B]`; a
  chunk is one `jit(vmap(gather + scan(step)))` (`VmappedExecutor`, one
  walk). With several devices the replica axis, and with
  `replicas.batch_shards > 1` the batch axis too, is sharded over a
  `jax.sharding.Mesh` `('replica', 'batch')`; R is padded to a multiple of
  the replica shards.
* 'sequential': one compiled single-replica program (the hyperparameters
  are its arguments, `jcl.train.Program`), one walk per replica: the
  compilation and the start-up are paid once, and the numbers are
  bit-identical to separate runs.
* 'auto' (default): vmap on GPU/TPU or with several devices, sequential on
  a single CPU device, where vmapping buys nothing (XLA:CPU runs the
  batched small matmuls of a batch-10 MLP no faster than one after the
  other) and the sequential numbers are the single runs' bit for bit. See
  experiments/bench_seeds.py.

Vmapped and sequential replicas agree to float rounding (XLA compiles the
batched matmuls differently); see tests/test_replicas.py for the tolerance.

Hyperparameters that can be gridded in one program are those the step uses
as numbers: `optimizer.learning_rate` (it lives in the optax state, via
`inject_hyperparams`) and the float fields of the algorithm's spec
(`algo.ewc_lambda`, `algo.alpha`, ...). The algorithm is built inside the
traced function from a copy of the spec whose fields hold traced scalars;
an algorithm that branches in Python on such a field raises a `ValueError`
naming it. Fields that change shapes (memory sizes) cannot be gridded.

Multi-host jobs (TPU pods, GPU clusters) call `initialize_distributed(spec)`
before JAX touches a device (`jcl.runs.run` does, with
`--config.replicas.distributed=True`); every process builds the same
replicas, the global arrays are assembled from them with
`jax.make_array_from_callback`, and process 0 writes the results.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jcl import evaluation
from jcl import inputs as inputs_lib
from jcl import loop
from jcl import run_spec as run_spec_lib
from jcl import train as train_lib
from jcl.run_spec import Replica, RunSpec, parse_grid
from jcl.runs import ReplicasResult, aggregate, format_summary
from jcl.types import Batch

__all__ = [
  'MODES',
  'Replica',
  'ReplicasResult',
  'VmappedExecutor',
  'aggregate',
  'config_for',
  'default_mode',
  'format_summary',
  'initialize_distributed',
  'is_replicated',
  'make_mesh',
  'parse_grid',
  'replicas_of',
  'run',
]

REPLICA_AXIS, BATCH_AXIS = 'replica', 'batch'
MODES = run_spec_lib.MODES


# -----------------------------------------------------------------------------
# Replicas of a config.
# -----------------------------------------------------------------------------


def replicas_of(config) -> list[Replica]:
  """The replicas of `config`: every grid setting x seeds `seed .. seed + num_seeds - 1`."""
  return RunSpec.from_config(config).replica_list()


def is_replicated(config) -> bool:
  """Whether `config` asks for several seeds or a grid."""
  return RunSpec.from_config(config).replicated


def config_for(config, replica: Replica):
  """The single-run ml_collections config of `replica`: `config` with its
  seed and gridded values, no seeds or grid."""
  single = config.copy_and_resolve_references()
  with single.unlocked():
    single.seed = replica.seed
    if 'num_seeds' in single:
      single.num_seeds = 1
    if 'grid' in single:
      single.grid = ''
    for path, value in replica.hparams.items():
      section, _, field = path.partition('.')
      values = run_spec_lib.as_plain(single[section])
      values[field] = float(value)
      single[section] = values
  return single


def run(
  config, workdir: str | None = None, *, mode: str | None = None, mesh: Mesh | None | str = 'auto'
) -> ReplicasResult:
  """Trains every replica of `config` (`jcl.runs.run`; see the module docstring).

  Args:
    config: an experiment config with `num_seeds` and/or `grid`.
    workdir: results, writers, checkpoints (process 0 of a multi-host job).
    mode: overrides `config.replicas.mode` ('auto', 'vmap' or 'sequential').
    mesh: the device mesh of vmap mode; 'auto' builds one over all devices
      (`make_mesh`), None runs on the default device.
  """
  from jcl import runs

  return runs.run(config, workdir, mode=mode, mesh=mesh, as_replicas=True)


# -----------------------------------------------------------------------------
# Devices.
# -----------------------------------------------------------------------------


def initialize_distributed(spec: RunSpec) -> None:
  """`jax.distributed.initialize()` when `replicas.distributed` (multi-host).

  Must run before JAX uses a device. On TPU pods, SLURM and Open MPI the
  coordinator is found from the environment; elsewhere set
  `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`.
  """
  if spec.replicas.distributed and not jax.distributed.is_initialized():
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
    raise ValueError(
      f'replicas.batch_shards={batch_shards} does not divide the {len(devices)} devices'
    )
  if len(devices) == 1:
    return None
  return Mesh(
    np.array(devices).reshape(len(devices) // batch_shards, batch_shards),
    (REPLICA_AXIS, BATCH_AXIS),
  )


def _place(tree, mesh: Mesh | None, spec_of):
  """`tree`'s leaves as global arrays sharded by `spec_of(leaf)`; unchanged without a mesh.

  Every process holds the whole host value, so `make_array_from_callback`
  builds the same global array on one host or many.
  """
  if mesh is None:
    return jax.tree.map(jax.device_put, tree)

  def put(leaf):
    host = np.asarray(leaf)
    sharding = NamedSharding(mesh, spec_of(host))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(put, tree)


def fetch(tree):
  """Host NumPy copies of arrays, gathered from every process where they span several."""

  def get(leaf):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      from jax.experimental import multihost_utils

      return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(jax.device_get(leaf))

  return jax.tree.map(get, tree)


# -----------------------------------------------------------------------------
# The executor of every replica at once.
# -----------------------------------------------------------------------------


def same_benchmark(a, b) -> bool:
  """Whether two benchmarks hold the same tasks (e.g. a seed-independent stream)."""
  if a is b:
    return True
  if (a.name, a.scenario, a.num_tasks, a.num_classes) != (
    b.name,
    b.scenario,
    b.num_tasks,
    b.num_classes,
  ):
    return False
  for ta, tb in zip(a.tasks, b.tasks):
    for split in ('train', 'val', 'test'):
      sa, sb = getattr(ta, split), getattr(tb, split)
      if (sa is None) != (sb is None):
        return False
      if sa is not None and not sa.same_samples(sb):
        return False
  return True


def _stack(trees):
  return jax.tree.map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]), *trees)


class VmappedExecutor:
  """All replicas along a leading axis, sharded over `mesh` (padded to fill
  it); see `jcl.loop.Executor`. The states it takes and gives are stacked
  `[R', ...]` (R' >= R: padded with copies of the last replica)."""

  asynchronous = True

  def __init__(
    self,
    program: train_lib.Program,
    benchmarks: Sequence[Any],
    hparams: Sequence[Mapping[str, float]],
    config: loop.TrainConfig,
    mesh: Mesh | None,
  ):
    self.program, self.config, self.mesh = program, config, mesh
    self.benchmarks = list(benchmarks)
    self.num_replicas = len(self.benchmarks)
    replica_shards = 1 if mesh is None else mesh.shape[REPLICA_AXIS]
    self.batch_shards = 1 if mesh is None else mesh.shape[BATCH_AXIS]
    if config.batch_size % self.batch_shards:
      raise ValueError(
        f'replicas.batch_shards={self.batch_shards} does not divide the batch '
        f'size {config.batch_size}'
      )
    self.padded = -(-self.num_replicas // replica_shards) * replica_shards
    self.rows = list(range(self.num_replicas)) + [self.num_replicas - 1] * (
      self.padded - self.num_replicas
    )
    hps = [{k: np.float32(v) for k, v in hparams[r].items()} for r in self.rows]
    self.hp = self._put_replicated(_stack(hps)) if hps[0] else {}
    self._data: tuple[tuple[int, ...], Any, Any] | None = None
    self._sources: dict[tuple[int, int], Any] = {}
    self._train_length = max(len(t.train) for b in self.benchmarks for t in b.tasks)
    self._eval: list[tuple[list[Any], list[tuple[Any, Any, Any]]]] | None = None
    self._compiled0 = train_lib.compile_seconds()

  @property
  def compile_seconds(self) -> float:
    return train_lib.compile_seconds() - self._compiled0

  def stack_states(self, states: Sequence[Any]):
    """The replicas' `(train_state, algo_state)` pairs as one stacked, placed pair."""
    return self._put_replicated(_stack([states[r] for r in self.rows]))

  def replica_states(self, states):
    """The stacked states without the padding rows."""
    return jax.tree.map(lambda leaf: leaf[: self.num_replicas], states)

  # Placement: the leading replica axis sharded; the batch axis of row
  # numbers sharded when it divides.

  def _put_replicated(self, tree):
    return _place(tree, self.mesh, lambda leaf: P(REPLICA_AXIS))

  def _put_rows(self, tree, batched: bool):
    def spec(leaf):
      lead = (REPLICA_AXIS,) if batched else ()
      rest = leaf.shape[len(lead) :]
      if len(rest) >= 2 and self.batch_shards > 1 and rest[1] % self.batch_shards == 0:
        return P(*lead, None, BATCH_AXIS)
      return P(*lead)

    return _place(tree, self.mesh, spec)

  def _shared_or_stacked(self, items: Sequence[Any]):
    """`(items[0], False)` when every replica has the same object, else the
    padded list and True."""
    if all(item is items[0] for item in items):
      return items[0], False
    return [items[r] for r in self.rows], True

  def _source(self, split) -> inputs_lib.StoredImages:
    """A split's stored images with its view on the default device (placed once)."""
    key = (id(split.images), id(split.view))
    if key not in self._sources:
      if len(self._sources) >= 8:
        self._sources.clear()
      self._sources[key] = jax.device_put(inputs_lib.stored_images(split.images, split.view))
    return self._sources[key]

  def _staged(self, splits, length: int):
    """Each replica's split staged (`jcl.inputs`) and placed: `(data, in_axis)`;
    one copy where every replica has the same split."""
    shared, batched = self._shared_or_stacked(splits)
    if not batched:
      data = inputs_lib.stage_split(shared, self._source(shared), length)
      return Batch(*_place(tuple(data[:3]), self.mesh, lambda leaf: P()), None), None
    staged = {}
    for split in shared:
      if id(split) not in staged:
        staged[id(split)] = inputs_lib.stage_split(split, self._source(split), length)
    per_replica = [tuple(staged[id(split)][:3]) for split in shared]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *per_replica)
    # A shorter split's padding rows are zeros, as `take_rows`' fill.
    return Batch(*self._put_replicated(stacked), None), Batch(0, 0, 0, None)

  def _split_data(self, splits):
    """Each replica's split on the devices: `(data, in_axis)`."""
    key = tuple(id(s) for s in splits)
    if self._data is not None and self._data[0] == key:
      return self._data[1], self._data[2]
    self._data = None  # drop the previous task's before staging this one
    length = inputs_lib.padded_length(max(len(s) for s in splits), self._train_length)
    data, axis = self._staged(splits, length)
    self._data = (key, data, axis)
    return data, axis

  def _rows(self, chunks):
    """`(idx, mask, idx_axis, mask_axis)` of the replicas' index chunks."""
    shared, batched = self._shared_or_stacked(chunks)
    if not batched:
      return (self._put_rows(shared.idx, False), self._put_rows(shared.mask, False), None, None)
    idx = np.stack([c.idx for c in shared])
    masks = [c.mask for c in shared]
    mask_shared = all(np.array_equal(m, masks[0]) for m in masks)
    mask = masks[0] if mask_shared else np.stack(masks)
    return (
      self._put_rows(idx, True),
      self._put_rows(mask, not mask_shared),
      0,
      None if mask_shared else 0,
    )

  def place_task(self, task_id: int, splits) -> None:
    del task_id
    self._split_data(splits)

  def begin_task(self, states, task_id: int, class_mask: np.ndarray):
    train_state, algo_state = states
    masks = self._put_replicated(
      np.broadcast_to(np.asarray(class_mask), (self.padded, *np.shape(class_mask)))
    )
    train_state = train_state.replace(class_mask=masks)
    return jax.vmap(self.program.begin_task, in_axes=(0, 0, None, 0))(
      train_state, algo_state, task_id, self.hp
    )

  def run_chunk(self, states, chunks):
    data, data_axis = self._data[1], self._data[2]
    idx, mask, idx_axis, mask_axis = self._rows(chunks)
    skip_padding = any(c.padding_steps for c in chunks)
    fn = self.program.vmapped(
      'run_chunk', 0, 0, data_axis, idx_axis, mask_axis, 0, static={'skip_padding': skip_padding}
    )
    train_state, algo_state, means, step = fn(*states, data, idx, mask, self.hp)
    return (train_state, algo_state), (means, step)

  def chunk_result(self, pending) -> loop.ChunkResult:
    means, step = fetch(pending)
    size = self.num_replicas
    return loop.ChunkResult(
      [{k: float(v[r]) for k, v in means.items()} for r in range(size)],
      [int(s) for s in np.asarray(step)[:size]],
    )

  def end_task(self, states, splits, chunks):
    if chunks is None:
      fn = self.program.vmapped('end_task', 0, 0, None, None, None, 0)
      out = fn(*states, None, None, None, self.hp)
    else:
      data, data_axis = self._split_data(splits)
      idx, mask, idx_axis, mask_axis = self._rows(chunks)
      fn = self.program.vmapped('end_task', 0, 0, data_axis, idx_axis, mask_axis, 0)
      out = fn(*states, data, idx, mask, self.hp)
    return jax.block_until_ready(out)

  def _eval_chunks(self):
    """Per task, each replica's evaluation split and its index chunks, placed
    once: `(splits, [(idx, mask, in_axis)])`."""
    if self._eval is None:
      self._eval = []
      per_benchmark = {
        id(b): [
          evaluation.eval_index_chunks(b, task, self.config.eval_split, self.config.eval_batch_size)
          for task in range(b.num_tasks)
        ]
        for b in self.benchmarks
      }
      for task in range(self.benchmarks[0].num_tasks):
        per_replica = [per_benchmark[id(b)][task] for b in self.benchmarks]
        placed = []
        for chunks in zip(*(chunks for _, chunks in per_replica)):
          same = all(
            np.array_equal(c.idx, chunks[0].idx) and np.array_equal(c.mask, chunks[0].mask)
            for c in chunks
          )
          if same:
            placed.append((*self._put_rows((chunks[0].idx, chunks[0].mask), False), None))
          else:
            stacked = [
              np.stack([getattr(chunks[r], f) for r in self.rows]) for f in ('idx', 'mask')
            ]
            placed.append((*self._put_rows(tuple(stacked), True), 0))
        self._eval.append(([split for split, _ in per_replica], placed))
    return self._eval

  def evaluate(self, states, class_mask):
    train_state = states[0]
    if class_mask is not None:
      masks = np.broadcast_to(np.asarray(class_mask), (self.padded, *np.shape(class_mask)))
      train_state = train_state.replace(class_mask=self._put_replicated(masks))
    table = evaluation.task_table(self.benchmarks[0])
    tasks = self._eval_chunks()
    length = max(len(split) for splits, _ in tasks for split in splits)
    counts = []
    for splits, chunks in tasks:
      data, data_axis = self._staged(splits, length)
      counts.append(
        [
          self.program.vmapped('count_correct', 0, data_axis, axis, axis, None)(
            train_state, data, idx, mask, table
          )
          for idx, mask, axis in chunks
        ]
      )
      if len(counts) > 1:  # at most two tasks' staged inputs in flight
        jax.block_until_ready(counts[-2])
    return evaluation.accuracies(counts, self.num_replicas, table is not None, fetch=fetch)
