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

import json
import os
import platform
import time
from typing import Any, Mapping

import numpy as np
import torch

from jcl import callbacks as callbacks_lib
from jcl import loggers as loggers_lib
from jcl import metrics as metrics_lib
from jcl import specs
from jcl.data import benchmarks as benchmarks_lib
from jcl.torch import algorithms
from jcl.torch import checkpoint
from jcl.torch import fit as fit_lib
from jcl.torch import models
from jcl.torch import train_state as ts_lib


def _to_dict(section: Any) -> dict[str, Any]:
  if section is None:
    return {}
  if hasattr(section, 'to_dict'):
    section = section.to_dict()
  return {k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(section).items()}


def build_benchmark(config) -> benchmarks_lib.Benchmark:
  kwargs = _to_dict(config.benchmark)
  name = kwargs.pop('name')
  kwargs.setdefault('seed', config.seed)
  return benchmarks_lib.make_benchmark(name, **kwargs)


def build_model(model_config: Mapping[str, Any], benchmark: benchmarks_lib.Benchmark,
                seed: int, device=None) -> torch.nn.Module:
  """The model of `model_config` with the output head the benchmark's scenario needs."""
  kwargs = _to_dict(model_config)
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
  spec = specs.spec_from_config(_to_dict(config.algo))
  optimizer = specs.OptimizerSpec(**_to_dict(config.optimizer))
  train_config = fit_lib.TrainConfig(seed=config.seed, **_to_dict(config.train))
  benchmark = build_benchmark(config)
  if benchmark.scenario not in spec.scenarios:
    raise ValueError(f'{spec.name} does not apply to {benchmark.scenario}-incremental learning; '
                     f'it supports: {", ".join(spec.scenarios)}')
  context = algorithms.Context(tuple(benchmark.input_shape), benchmark.num_classes,
                               benchmark.num_tasks)
  model_config, optimizer, train_config = algorithms.adapt_regime(
      spec, _to_dict(config.model), optimizer, train_config)
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
  log = _to_dict(config.get('log', {}))
  if workdir:
    os.makedirs(workdir, exist_ok=True)
  names = [n.strip() for entry in log.get('loggers', ('console',)) for n in entry.split(',')]
  logger = loggers_lib.make_loggers(
      [n for n in names if n and (workdir or n in ('console', 'wandb'))], workdir)
  cbs = [callbacks_lib.LoggingCallback(logger, every_chunks=log.get('every_chunks', 10)),
         callbacks_lib.ProgressCallback(enabled=log.get('progress', True)), *extra_callbacks]
  ckpt = _to_dict(config.get('checkpoint', {}))
  checkpointer = checkpoint_cb = None
  if workdir and ckpt.get('enabled', True):
    checkpointer = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                           max_to_keep=ckpt.get('max_to_keep', 3))
    checkpoint_cb = callbacks_lib.CheckpointCallback(
        checkpointer, every_chunks=ckpt.get('every_chunks', 0),
        run_record={'config': _config_json(config)})
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
    if log.get('plots', True):
      from jcl import plots
      try:
        plots.plot_results(workdir)
      except ImportError as err:
        print(f'plots skipped: {err}')
  return result


def _config_json(config) -> Any:
  if hasattr(config, 'to_json_best_effort'):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(dict(config), default=str))


def _json_default(value):
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  return str(value)


def write_results(workdir: str, config, payload: Mapping[str, Any]) -> str:
  """Atomically writes `workdir/results.json`."""
  path = os.path.join(workdir, 'results.json')
  document = {
      'config': _config_json(config),
      'environment': {'torch': torch.__version__, 'backend': 'torch',
                      'threads': torch.get_num_threads(), 'python': platform.python_version()},
      **payload,
  }
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(document, f, indent=1, default=_json_default)
  os.replace(tmp, path)
  return path


def format_summary(result: fit_lib.FitResult) -> str:
  """The accuracy matrix and headline metrics, in percent, for the console."""
  s = result.summary
  lines = ['accuracy matrix R[i, j] (%, task i after training task j):',
           metrics_lib.format_matrix(result.accuracy_matrix)]
  parts = [f'{k.upper()} {100 * s[k]:+.2f}' if k in ('bwt', 'fwt') else f'{k} {100 * s[k]:.2f}'
           for k in ('acc', 'bwt', 'fwt', 'forgetting') if k in s]
  lines.append(' | '.join(parts))
  t = result.timings
  lines.append(f"train {t['train_seconds']:.1f}s ({t['train_samples_per_second']:.0f} samples/s), "
               f"eval {t['eval_seconds']:.1f}s")
  return '\n'.join(lines)
