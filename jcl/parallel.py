"""One run's batch split over several devices: `train.data_parallel` (JAX).

  python -m experiments.train --config=configs/quickstart.py --config.train.data_parallel=4

With `train.data_parallel=N` (N > 1; -1: every device) a single run
(`jcl.train.JaxExecutor`) places its parameters, optimizer and algorithm
state, and the current task's staged split, replicated on the devices of a
1-D `jax.sharding.Mesh` ('data'); each chunk's row numbers `[K, B]` are split
along B, and inside the compiled chunk every step's batch is constrained to
`P('data')` and the states to replicated (`data_parallel_step`). XLA's SPMD
partitioner then runs the forward and backward pass of each device's B / N
samples where they are and all-reduces the gradients (no pmap, no change to
the algorithms). Evaluation splits its batches the same way; `end_task`
(Fisher, buffers) runs replicated. The batch size and the evaluation batch
size must divide by N.

The numbers equal the one-device run's up to float rounding (the gradient's
sum over the batch is reduced in another order), so checkpoints do not
record N: a run checkpointed on N devices resumes on N devices (bit for bit)
or on any other number (to float rounding).

Multi-host: every process runs the same command with `--coordinator_address`,
`--num_processes` and `--process_id` (`experiments/train.py`;
`initialize_distributed` here), and the mesh spans every process's devices
(`data_parallel` must then be -1 or the global device count). Checkpoints
of multi-host jobs are refused for now (every process would write
`jcl.checkpoint`'s manifest). A manual run of 2 processes x 2 CPU devices
(gloo) matched the one-device run; the tests check the arguments only.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = [
  'DATA_AXIS',
  'check_distributed',
  'data_mesh',
  'data_parallel_step',
  'fetch',
  'initialize_distributed',
  'num_devices',
  'put_replicated',
  'put_rows',
  'replicate',
  'shard_batch',
]

DATA_AXIS = 'data'


# -----------------------------------------------------------------------------
# The mesh of a run.
# -----------------------------------------------------------------------------


def num_devices(
  requested: int,
  available: int,
  batch_sizes: Mapping[str, int] | None = None,
  processes: int = 1,
) -> int:
  """The devices `train.data_parallel = requested` asks for (0 or 1: one,
  -1: `available`), checked against the `available` devices and the batch
  sizes `{'train.batch_size': 10, ...}` (each must divide by it).

  >>> num_devices(-1, 4, {'train.batch_size': 12})
  4
  >>> num_devices(8, 4)
  Traceback (most recent call last):
  ...
  ValueError: train: invalid 'data_parallel': asks for 8 devices, 4 present...

  Raises:
    ValueError: naming the field.
  """
  n = available if requested == -1 else max(requested, 1)
  if n > available:
    raise ValueError(
      f"train: invalid 'data_parallel': asks for {n} devices, {available} present "
      f'(jax.devices(): set XLA_FLAGS=--xla_force_host_platform_device_count={n} for CPU '
      'devices, or -1 for all)'
    )
  if processes > 1 and n != available:
    raise ValueError(
      f"train: invalid 'data_parallel': a job of {processes} processes splits the batch over "
      f'all {available} devices (-1), got {requested}'
    )
  for field, size in (batch_sizes or {}).items():
    if n > 1 and size % n:
      raise ValueError(
        f"train: invalid 'data_parallel': {field}={size} does not divide over {n} devices"
      )
  return n


def data_mesh(config, devices: Sequence[Any] | None = None) -> Mesh | None:
  """The 1-D ('data',) mesh of `config.data_parallel` (a `TrainConfig`): the
  first N devices (every process's with several); None for one device."""
  devices = list(jax.devices() if devices is None else devices)
  n = num_devices(
    config.data_parallel,
    len(devices),
    {'train.batch_size': config.batch_size, 'train.eval_batch_size': config.eval_batch_size},
    jax.process_count(),
  )
  if n == 1:
    return None
  return Mesh(np.array(devices[:n]), (DATA_AXIS,))


# -----------------------------------------------------------------------------
# Inside the compiled programs.
# -----------------------------------------------------------------------------


def shard_batch(batch, mesh: Mesh | None):
  """`batch`'s arrays (leading axis B) constrained to be split along B over
  `mesh`'s 'data' axis (inside `jit`); unchanged without a mesh."""
  if mesh is None:
    return batch
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, sharding), batch)


def replicate(tree, mesh: Mesh | None):
  """`tree`'s arrays constrained to be replicated on every device of `mesh` (inside `jit`)."""
  if mesh is None:
    return tree
  sharding = NamedSharding(mesh, P())
  return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, sharding), tree)


def data_parallel_step(step: Callable, mesh: Mesh | None) -> Callable:
  """An algorithm's `step(train_state, batch, algo_state)` with the batch split
  over `mesh` and the states it returns replicated: XLA's partitioner then
  computes each device's part of the batch where it is and all-reduces what
  the states need (the gradients, a buffer's new samples)."""
  if mesh is None:
    return step

  def sharded(train_state, batch, algo_state):
    train_state, algo_state, metrics = step(train_state, shard_batch(batch, mesh), algo_state)
    train_state, algo_state = replicate((train_state, algo_state), mesh)
    return train_state, algo_state, metrics

  return sharded


# -----------------------------------------------------------------------------
# Placement (one process or several).
# -----------------------------------------------------------------------------


def _put(leaf, sharding: NamedSharding):
  """`leaf` placed with `sharding` (as it is when it already is)."""
  if not isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
    return leaf  # Python scalars stay as they are (weakly typed arguments)
  on_device = isinstance(leaf, jax.Array)
  if on_device and (
    leaf.sharding == sharding or leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
  ):
    return leaf
  if jax.process_count() == 1 or (on_device and not leaf.is_fully_addressable):
    return jax.device_put(leaf, sharding)
  # Several processes, each holding the same value: its devices' parts.
  if on_device and sharding.is_fully_replicated:
    local = [jax.device_put(leaf, d) for d in sharding.addressable_devices]
    return jax.make_array_from_single_device_arrays(leaf.shape, sharding, local)
  host = np.asarray(leaf)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def put_replicated(tree, mesh: Mesh):
  """`tree`'s arrays replicated on every device of `mesh` (those already so
  placed are returned as they are; every process holds the same values)."""
  sharding = NamedSharding(mesh, P())
  return jax.tree.map(lambda leaf: _put(leaf, sharding), tree)


def put_rows(tree, mesh: Mesh):
  """Row numbers and masks `[K, B]` split along B over `mesh`'s 'data' axis."""
  sharding = NamedSharding(mesh, P(None, DATA_AXIS))
  return jax.tree.map(lambda leaf: _put(np.asarray(leaf), sharding), tree)


def fetch(tree):
  """Host NumPy copies of (replicated or single-device) arrays, also of
  replicated arrays that span other processes' devices."""

  def spans_processes(leaf):
    return isinstance(leaf, jax.Array) and not leaf.is_fully_addressable

  if not any(spans_processes(leaf) for leaf in jax.tree.leaves(tree)):
    return jax.device_get(tree)
  return jax.tree.map(
    lambda leaf: np.asarray(leaf.addressable_data(0) if spans_processes(leaf) else leaf), tree
  )


# -----------------------------------------------------------------------------
# Several processes.
# -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Distributed:
  """The arguments of `jax.distributed.initialize` (every process: the same
  `coordinator_address` and `num_processes`, its own `process_id`)."""

  coordinator_address: str
  num_processes: int
  process_id: int


def check_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> Distributed | None:
  """The multi-host arguments, checked: all three or none (None).

  >>> check_distributed('10.0.0.1:1234', 2, 1)
  Distributed(coordinator_address='10.0.0.1:1234', num_processes=2, process_id=1)
  >>> check_distributed('10.0.0.1:1234', 2, 2)
  Traceback (most recent call last):
  ...
  ValueError: --process_id must be in [0, 2) (--num_processes=2), got 2

  Raises:
    ValueError: one missing, a bad address, count or id.
  """
  given = {
    'coordinator_address': coordinator_address,
    'num_processes': num_processes,
    'process_id': process_id,
  }
  if all(v is None for v in given.values()):
    return None
  missing = [f'--{k}' for k, v in given.items() if v is None]
  if missing:
    raise ValueError(
      f'a multi-host job needs --coordinator_address, --num_processes and --process_id; '
      f'missing: {", ".join(missing)}'
    )
  host, sep, port = str(coordinator_address).rpartition(':')
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(
      f'--coordinator_address must be HOST:PORT (process 0 listens there), '
      f'got {coordinator_address!r}'
    )
  if not isinstance(num_processes, int) or isinstance(num_processes, bool) or num_processes < 1:
    raise ValueError(f'--num_processes must be an integer >= 1, got {num_processes!r}')
  if not isinstance(process_id, int) or isinstance(process_id, bool):
    raise ValueError(f'--process_id must be an integer, got {process_id!r}')
  if not 0 <= process_id < num_processes:
    raise ValueError(
      f'--process_id must be in [0, {num_processes}) (--num_processes={num_processes}), '
      f'got {process_id}'
    )
  return Distributed(coordinator_address, num_processes, process_id)


def initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> bool:
  """`jax.distributed.initialize(coordinator_address, num_processes,
  process_id)` when the three are given (`check_distributed`), before JAX
  uses a device; whether it was called. Process 0 writes the files; on CPU
  the processes' collectives need `jax_cpu_collectives_implementation='gloo'`."""
  args = check_distributed(coordinator_address, num_processes, process_id)
  if args is None or jax.distributed.is_initialized():
    return False
  jax.distributed.initialize(**dataclasses.asdict(args))
  return True
