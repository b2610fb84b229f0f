"""The PyTorch backend of `jcl.runs`: a run's parts built from its `RunSpec`.

`run(config, workdir)` is `jcl.runs.run(..., backend='torch')` (what
`experiments/train.py --backend=torch` calls): the same config sections,
the same walk, callbacks, checkpoints (`jcl.torch.checkpoint`, `torch.save`
files) and `results.json` as on JAX. The model is built by
`jcl.torch.models` with the head the benchmark's scenario needs and
initialized from the seed (flax's distributions, not the JAX run's numbers;
convert weights with `jcl.torch.convert` to start both from the same ones).
Seeds and grids run replica after replica ('sequential'; there is no vmap).
"""

from __future__ import annotations

import dataclasses
import platform
from typing import Any, Mapping

import torch

from jcl import loop
from jcl import runs
from jcl.data import augment as augment_lib
from jcl.data import benchmarks as benchmarks_lib
from jcl.run_spec import Replica, RunSpec
from jcl.torch import algorithms
from jcl.torch import checkpoint
from jcl.torch import fit as fit_lib
from jcl.torch import models
from jcl.torch import train_state as ts_lib

name = 'torch'


@dataclasses.dataclass
class Parts:
  """What a run is made of (one replica's, for seeds and grids)."""

  spec: RunSpec
  benchmark: benchmarks_lib.Benchmark
  model: torch.nn.Module
  algorithm: algorithms.Algorithm
  context: algorithms.Context
  train_state: ts_lib.TrainState
  train_config: loop.TrainConfig  # under the algorithm's regime (`RunSpec.regime`)
  device: Any = None


def build_model(
  model_config: Mapping[str, Any], benchmark: benchmarks_lib.Benchmark, seed: int, device=None
) -> torch.nn.Module:
  """The model of `model_config` with the output head the benchmark's scenario needs."""
  kwargs = dict(model_config)
  model_name = kwargs.pop('name')
  if model_name == 'user_module':  # jcl.user_module.NAME: its model_fn returns a flax module
    raise ValueError(
      "model: a user module's model_fn (config.user_module) gives a flax model, which the "
      'torch backend cannot run; use --backend=jax, or a named model (--config.model=mlp, cnn, ...)'
    )
  task_classes = None
  if benchmark.scenario == 'task' and benchmark.num_heads == 1:
    task_classes = tuple(tuple(int(c) for c in cls) for cls in benchmark.task_classes)
  model = models.make_model(
    model_name,
    benchmark.input_shape,
    seed=seed,
    num_classes=benchmark.num_classes,
    num_heads=benchmark.num_heads,
    task_classes=task_classes,
    **kwargs,
  )
  return model.to(device) if device is not None else model


def build(
  config, shared: dict[str, Any] | None = None, replica: Replica | None = None, device=None
) -> Parts:
  """The parts of `config` (a config or a `RunSpec`); with `replica`, those of
  that replica of a run of seeds / a grid (its seed and gridded values)."""
  spec = RunSpec.from_config(config)
  if replica is not None:
    spec = spec.for_replica(replica)
  device = device if device is not None else (shared or {}).get('device')
  benchmark = spec.build_benchmark()
  context = algorithms.Context.of(benchmark)
  model_config, optimizer, train_config = spec.regime()
  model = algorithms.adapt_model(
    spec.algorithm, build_model(model_config, benchmark, spec.seed, device), context
  )
  if device is not None:
    model = model.to(device)
  state = ts_lib.create_train_state(
    model,
    optimizer,
    num_classes=benchmark.num_classes,
    seed=spec.seed,
    augment=augment_lib.for_benchmark(train_config.augment, benchmark),
  )
  return Parts(
    spec,
    benchmark,
    model,
    algorithms.build(spec.algorithm, context),
    context,
    state,
    train_config,
    device,
  )


def executor(parts: Parts, shared: dict[str, Any]) -> fit_lib.TorchExecutor:
  del shared
  return fit_lib.TorchExecutor(
    parts.algorithm, parts.benchmark, parts.train_config, parts.train_state.device
  )


def init_algo_state(parts: Parts, shared: dict[str, Any]):
  del shared
  return parts.algorithm.init(parts.train_state)


def seeded(parts: Parts):
  """What the walk runs under: torch's generator seeded with the run's seed
  (dropout), denormals flushed to zero (`fit.walk_environment`)."""
  return fit_lib.walk_environment(parts.train_config.seed, parts.train_state.device)


def replica_mode(mode: str) -> str:
  """'sequential': the torch backend runs seeds and grids one replica after the other."""
  if mode == 'vmap':
    raise ValueError(
      'the torch backend runs seeds and grids one replica after the other: '
      "set replicas.mode to 'sequential' or 'auto'"
    )
  return 'sequential'


def stack_states(states):
  """The replicas' states, as a list (torch states are not stacked)."""
  return list(states)


def checkpointer(directory: str, max_to_keep: int):
  return checkpoint.Checkpointer(directory, max_to_keep=max_to_keep)


def is_writer() -> bool:
  return True


def devices(mesh) -> list[str]:
  del mesh
  return ['cpu' if not torch.cuda.is_available() else str(torch.cuda.get_device_name())]


def environment() -> dict[str, Any]:
  return {
    'torch': torch.__version__,
    'backend': 'torch',
    'threads': torch.get_num_threads(),
    'python': platform.python_version(),
  }


def prepare(spec: RunSpec) -> None:
  """Refuses what only the JAX backend does (`train.data_parallel`)."""
  fit_lib.refuse_data_parallel(spec.train)


def run(config, workdir: str | None = None, extra_callbacks=(), device=None):
  """`jcl.runs.run(config, workdir, backend='torch')`."""
  return runs.run(config, workdir, backend='torch', extra_callbacks=extra_callbacks, device=device)


def write_results(workdir: str, config, payload: Mapping[str, Any]) -> str:
  """Atomically writes `workdir/results.json` with the PyTorch environment."""
  return runs.write_results(workdir, config, payload, environment())
