"""The backend-free parts of an experiment run, shared by `jcl.experiment`
(JAX) and `jcl.torch.experiment` (PyTorch).

From an ml_collections config: its sections as plain dicts, the benchmark,
the logging and checkpoint callbacks; after the run: `results.json`, the
plots and the console summary. Imports neither JAX nor PyTorch.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping

import numpy as np

from jcl import callbacks as callbacks_lib
from jcl import loggers as loggers_lib
from jcl import metrics as metrics_lib
from jcl.data import benchmarks as benchmarks_lib


def section_dict(section: Any) -> dict[str, Any]:
  """A config section as a plain dict (lists as tuples); None -> {}."""
  if section is None:
    return {}
  if hasattr(section, 'to_dict'):
    section = section.to_dict()
  return {k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(section).items()}


def build_benchmark(config) -> benchmarks_lib.Benchmark:
  """The stream of `config.benchmark` (seeded by `config.seed` unless it sets one)."""
  kwargs = section_dict(config.benchmark)
  name = kwargs.pop('name')
  kwargs.setdefault('seed', config.seed)
  return benchmarks_lib.make_benchmark(name, **kwargs)


def make_callbacks(config, workdir: str | None, extra_callbacks=()) -> tuple[Any, list]:
  """`(logger, callbacks)`: the loggers of `config.log` (file loggers only with
  a workdir), the logging and progress callbacks, then `extra_callbacks`.
  Close the logger when the run ends."""
  log = section_dict(config.get('log', {}))
  # `--config.log.loggers=console,tensorboard` arrives as one comma-joined
  # entry. Without a workdir, the loggers that write files are left out.
  names = [n.strip() for entry in log.get('loggers', ('console',)) for n in entry.split(',')]
  logger = loggers_lib.make_loggers(
      [n for n in names if n and (workdir or n in ('console', 'wandb'))], workdir)
  return logger, [callbacks_lib.LoggingCallback(logger, every_chunks=log.get('every_chunks', 10)),
                  callbacks_lib.ProgressCallback(enabled=log.get('progress', True)),
                  *extra_callbacks]


def make_checkpointing(config, workdir: str | None, checkpointer_class: Callable[..., Any]):
  """`(checkpointer, CheckpointCallback)` writing to `workdir/checkpoints` as
  `config.checkpoint` says (`enabled`, `every_chunks`, `max_to_keep`), with
  the config as the run record; `(None, None)` without a workdir or when
  disabled. `checkpointer_class` is the backend's `Checkpointer`."""
  ckpt = section_dict(config.get('checkpoint', {}))
  if not workdir or not ckpt.get('enabled', True):
    return None, None
  checkpointer = checkpointer_class(os.path.join(workdir, 'checkpoints'),
                                    max_to_keep=ckpt.get('max_to_keep', 3))
  return checkpointer, callbacks_lib.CheckpointCallback(
      checkpointer, every_chunks=ckpt.get('every_chunks', 0),
      run_record={'config': config_json(config)})


def json_default(value):
  """JSON for NumPy scalars and arrays and dataclasses; `str` otherwise."""
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  if dataclasses.is_dataclass(value):
    return dataclasses.asdict(value)
  return str(value)


def config_json(config) -> Any:
  """The config as JSON-able data (what `results.json` and checkpoints record)."""
  if hasattr(config, 'to_json_best_effort'):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(dict(config), default=json_default))


def write_results(workdir: str, config, payload: Mapping[str, Any],
                  environment: Mapping[str, Any]) -> str:
  """Atomically writes `workdir/results.json` (a crash never leaves half a
  file): the config, the backend's `environment`, then `payload`."""
  path = os.path.join(workdir, 'results.json')
  document = {'config': config_json(config), 'environment': dict(environment), **payload}
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(document, f, indent=1, default=json_default)
  os.replace(tmp, path)
  return path


def draw_plots(workdir: str) -> list[str]:
  """The accuracy-matrix heatmap and per-task curves as PNGs in `workdir`
  (skipped, with a message, when matplotlib is not installed)."""
  from jcl import plots
  try:
    return plots.plot_results(workdir)
  except ImportError as err:
    print(f'plots skipped: {err}')
    return []


def format_summary(result) -> str:
  """The accuracy matrix and headline metrics of a `FitResult`, in percent,
  for the console."""
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
