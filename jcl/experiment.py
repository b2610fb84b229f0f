"""Builds a whole run from an ml_collections config and runs it.

A config has the sections `benchmark`, `model`, `algo`, `optimizer`, `train`
and `log` plus a `seed` (see `configs/quickstart.py`). `run(config, workdir)`
is what `experiments/train.py` calls; tests call it directly.
"""
from __future__ import annotations

import os
import platform
import time
from typing import Any, Mapping

import jax

from jcl import algorithms
from jcl import models
from jcl import runs
from jcl import specs
from jcl import train as train_lib
from jcl import train_state as ts_lib
from jcl.data import benchmarks as benchmarks_lib


def build_model(model_config: Mapping[str, Any], benchmark: benchmarks_lib.Benchmark):
  """The model of `model_config`, with the output head the benchmark's scenario needs."""
  kwargs = runs.section_dict(model_config)
  name = kwargs.pop('name')
  task_classes = None
  if benchmark.scenario == 'task' and benchmark.num_heads == 1:
    task_classes = tuple(tuple(int(c) for c in cls) for cls in benchmark.task_classes)
  return models.make_model(name, num_classes=benchmark.num_classes,
                           num_heads=benchmark.num_heads, task_classes=task_classes, **kwargs)


def build(config) -> dict[str, Any]:
  """Benchmark, algorithm, initial train state and loop config of `config`."""
  spec = specs.spec_from_config(runs.section_dict(config.algo))
  optimizer = specs.OptimizerSpec(**runs.section_dict(config.optimizer))
  train_config = train_lib.TrainConfig(seed=config.seed, **runs.section_dict(config.train))
  benchmark = runs.build_benchmark(config)
  if benchmark.scenario not in spec.scenarios:
    raise ValueError(f'{spec.name} does not apply to {benchmark.scenario}-incremental learning; '
                     f'it supports: {", ".join(spec.scenarios)}')
  context = algorithms.Context(tuple(benchmark.input_shape), benchmark.num_classes,
                               benchmark.num_tasks)
  model_config, optimizer, train_config = algorithms.adapt_regime(
      spec, runs.section_dict(config.model), optimizer, train_config)
  model = algorithms.adapt_model(spec, build_model(model_config, benchmark), context)
  init_rng, algo_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  state = ts_lib.create_train_state(model, optimizer, init_rng, benchmark.input_shape,
                                    benchmark.num_classes)
  return dict(spec=spec, algorithm=algorithms.build(spec, context), benchmark=benchmark, model=model,
              train_state=state, train_config=train_config, algo_rng=algo_rng)


def run(config, workdir: str | None = None, extra_callbacks=()) -> train_lib.FitResult:
  """Runs `config`; with `workdir`, writes `results.json` and the logs there.

  `results.json` holds the config, the accuracy matrix `R[i][j]` (task i after
  training task j, fractions), the summary metrics and the timings. If the
  run stops on a non-finite loss, what was measured so far is still written
  (with `"error"`), then the error is raised. With a workdir, checkpoints go
  to `workdir/checkpoints` (after each task and every
  `config.checkpoint.every_chunks` chunks) and a run started again in the
  same workdir resumes from the newest one, to the same final numbers.
  """
  t_start = time.perf_counter()
  parts = build(config)
  if workdir:
    os.makedirs(workdir, exist_ok=True)
  logger, cbs = runs.make_callbacks(config, workdir, extra_callbacks)
  checkpointer, checkpoint_cb = runs.make_checkpointing(config, workdir, _orbax_checkpointer)
  try:
    result = train_lib.fit(parts['algorithm'], parts['train_state'], parts['benchmark'],
                           parts['train_config'], callbacks=cbs, rng=parts['algo_rng'],
                           checkpoint=checkpoint_cb)
  except train_lib.NonFiniteLossError as err:
    if workdir:
      ctx = err.context
      write_results(workdir, config, {
          'error': str(err),
          'accuracy_matrix': train_lib._nan_to_none(ctx.accuracy_matrix.tolist()),
          'history': ctx.history})
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


def _orbax_checkpointer(directory: str, max_to_keep: int):
  from jcl import checkpoint  # Orbax, an optional dependency: imported when used
  return checkpoint.Checkpointer(directory, max_to_keep=max_to_keep)


def write_results(workdir: str, config, payload: Mapping[str, Any]) -> str:
  """Atomically writes `workdir/results.json` (`jcl.runs.write_results`) with
  the JAX environment."""
  return runs.write_results(workdir, config, payload, {
      'jax': jax.__version__, 'backend': jax.default_backend(),
      'python': platform.python_version()})

