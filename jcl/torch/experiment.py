"""Builds a run from an ml_collections config and runs it on PyTorch.

The counterpart of `jcl.experiment` (same config sections, same
`results.json`), without JAX: `experiments/train.py --backend=torch` calls
`run(config, workdir)`. The model is built by `jcl.torch.models` with the
head the benchmark's scenario needs and initialized from `config.seed`
(flax's distributions, not the JAX run's numbers; convert weights with
`jcl.torch.convert` to start both from the same ones). With a workdir,
checkpoints (`jcl.torch.checkpoint`, `torch.save` files) go to
`workdir/checkpoints` as in `jcl.experiment`, and a run started again in the
same workdir resumes from the newest one, to the same final numbers.
"""
from __future__ import annotations

import os
import platform
import time
from typing import Any, Mapping

import torch

from jcl import callbacks as callbacks_lib
from jcl import runs
from jcl import specs
from jcl.data import benchmarks as benchmarks_lib
from jcl.torch import algorithms
from jcl.torch import checkpoint
from jcl.torch import fit as fit_lib
from jcl.torch import models
from jcl.torch import train_state as ts_lib


def build_model(model_config: Mapping[str, Any], benchmark: benchmarks_lib.Benchmark,
                seed: int, device=None) -> torch.nn.Module:
  """The model of `model_config` with the output head the benchmark's scenario needs."""
  kwargs = runs.section_dict(model_config)
  name = kwargs.pop('name')
  task_classes = None
  if benchmark.scenario == 'task' and benchmark.num_heads == 1:
    task_classes = tuple(tuple(int(c) for c in cls) for cls in benchmark.task_classes)
  model = models.make_model(name, benchmark.input_shape, seed=seed,
                            num_classes=benchmark.num_classes, num_heads=benchmark.num_heads,
                            task_classes=task_classes, **kwargs)
  return model.to(device) if device is not None else model


def build(config, device=None) -> dict[str, Any]:
  """Benchmark, algorithm, initial train state and loop config of `config`."""
  spec = specs.spec_from_config(runs.section_dict(config.algo))
  optimizer = specs.OptimizerSpec(**runs.section_dict(config.optimizer))
  train_config = fit_lib.TrainConfig(seed=config.seed, **runs.section_dict(config.train))
  benchmark = runs.build_benchmark(config)
  if benchmark.scenario not in spec.scenarios:
    raise ValueError(f'{spec.name} does not apply to {benchmark.scenario}-incremental learning; '
                     f'it supports: {", ".join(spec.scenarios)}')
  context = algorithms.Context(tuple(benchmark.input_shape), benchmark.num_classes,
                               benchmark.num_tasks)
  model_config, optimizer, train_config = algorithms.adapt_regime(
      spec, runs.section_dict(config.model), optimizer, train_config)
  model = algorithms.adapt_model(spec, build_model(model_config, benchmark, config.seed, device),
                                 context)
  if device is not None:
    model = model.to(device)
  state = ts_lib.create_train_state(model, optimizer, num_classes=benchmark.num_classes,
                                    seed=config.seed)
  return dict(spec=spec, algorithm=algorithms.build(spec, context), benchmark=benchmark,
              model=model, train_state=state, train_config=train_config)


def run(config, workdir: str | None = None, extra_callbacks=(), device=None) -> fit_lib.FitResult:
  """Runs `config` on PyTorch; with `workdir`, writes `results.json` and the logs
  there (the fields of `jcl.experiment.run`'s, with `environment.backend`
  'torch'), and checkpoints to `workdir/checkpoints` (after each task and
  every `config.checkpoint.every_chunks` chunks) from which a rerun in the
  same workdir resumes."""
  t_start = time.perf_counter()
  parts = build(config, device)
  if workdir:
    os.makedirs(workdir, exist_ok=True)
  logger, cbs = runs.make_callbacks(config, workdir, extra_callbacks)
  checkpointer, checkpoint_cb = runs.make_checkpointing(config, workdir, checkpoint.Checkpointer)
  try:
    result = fit_lib.fit(parts['algorithm'], parts['train_state'], parts['benchmark'],
                         parts['train_config'], callbacks=cbs, checkpoint=checkpoint_cb)
  except fit_lib.NonFiniteLossError as err:
    if workdir:
      write_results(workdir, config, {
          'error': str(err),
          'accuracy_matrix': callbacks_lib.nan_to_none(err.context.accuracy_matrix.tolist()),
          'history': err.context.history})
    raise
  finally:
    logger.close()
    if checkpointer is not None:
      checkpointer.close()
  result.timings['wall_seconds'] = time.perf_counter() - t_start
  if workdir:
    write_results(workdir, config, {
        **result.to_json(), 'benchmark': parts['benchmark'].name,
        'scenario': parts['benchmark'].scenario, 'algorithm': parts['spec'].to_dict()})
    if runs.section_dict(config.get('log', {})).get('plots', True):
      runs.draw_plots(workdir)
  return result


def write_results(workdir: str, config, payload: Mapping[str, Any]) -> str:
  """Atomically writes `workdir/results.json` (`jcl.runs.write_results`) with
  the PyTorch environment."""
  return runs.write_results(workdir, config, payload, {
      'torch': torch.__version__, 'backend': 'torch', 'threads': torch.get_num_threads(),
      'python': platform.python_version()})

