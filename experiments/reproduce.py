"""Reproduces a config's published number over seeds, and checks it.

  python -m experiments.reproduce --config=configs/lamaml.py:lamaml --seeds=5 \
      --data_dir=../shared/data/mnist --check --workdir=/tmp/lamaml_repro

Runs the config once per seed (seeds `first_seed .. first_seed + seeds - 1`)
in one process, prints each seed's metric, BTI and wall-clock, then the
mean ± sample std (ddof=1) next to the config's `expected` entry:

  config.expected = dict(metric='acc', value=77.42, std=0.65, tolerance=2.0,
                         source='...', reference=dict(value=..., std=..., note=...))

`metric` is a key of the run's summary (`acc`, `bwt`, `forgetting`, ...),
reported in percent like `value`. With `--check` the script exits with
status 1 when `|mean - value| > tolerance` (a result too high fails as well as
one too low). `--expected` / `--tolerance` override the config's entry.

How the seeds run, `--mode`:

* 'auto' (default), 'vmap', 'sequential': the seeds are the replicas of one
  `jcl.replicas.run` (`config.num_seeds`). 'vmap' trains them as one
  batched program (a leading seed axis on states and data; on a GPU five
  seeds cost little more than one); 'sequential' compiles one program and
  runs it seed after seed, bit-identical to separate runs; 'auto' picks
  vmap on accelerators and sequential on a single CPU device (see
  `jcl.replicas`). A seed's wall-clock is its own training and evaluation
  time plus its share of the set-up (in vmap mode, the program's time / N).
* 'separate': `jcl.experiment.run` once per seed, each with its own
  `results.json` in `seed_N/` (for configs `jcl.replicas` cannot batch).

Compiled programs are reused across seeds and reruns through the run's
persistent compilation cache (`config.compilation_cache`: a user cache
folder by default, `--compilation_cache_dir` names another), so only the
first seed of the first run pays for XLA compilation. `--workdir` gets
`reproduce.json` (per-seed results, summary, check) and the runs'
`results.json` (no checkpoints or plots: the runs are timed).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Sequence

from absl import app
from absl import flags
import jax
import numpy as np

from jcl import cli
from jcl import runs

_CONFIG = cli.DEFINE_config()
_SEEDS = flags.DEFINE_integer('seeds', 5, 'Number of seeds.')
_FIRST_SEED = flags.DEFINE_integer('first_seed', 0, 'The first seed.')
_DATA_DIR = flags.DEFINE_string(
  'data_dir',
  None,
  "Folder of the dataset's IDX files (sets benchmark.source=idx and benchmark.path).",
)
_CHECK = flags.DEFINE_bool(
  'check',
  False,
  'Exit with status 1 when the mean misses the expected value by more than the tolerance.',
)
_EXPECTED = flags.DEFINE_float('expected', None, 'Override config.expected.value.')
_TOLERANCE = flags.DEFINE_float('tolerance', None, 'Override config.expected.tolerance.')
_WORKDIR = flags.DEFINE_string(
  'workdir', None, 'Where to write reproduce.json and per-seed results.'
)
_MODE = flags.DEFINE_enum(
  'mode',
  'auto',
  ['auto', 'vmap', 'sequential', 'separate'],
  'How the seeds run (see the module docstring).',
)
_CACHE = flags.DEFINE_string(
  'compilation_cache_dir',
  None,
  "Persistent JAX compilation cache (default: the config's, a user cache folder).",
)


def paper_bti(accuracy_matrix: np.ndarray) -> float:
  """BTI as GEM's / La-MAML's `metrics.py`: mean over all T tasks of
  `R[i, T-1] - R[i, i]` (the last task adds 0), a fraction."""
  r = np.asarray(accuracy_matrix)
  return float(np.mean(r[:, -1] - np.diag(r)))


def seed_record(
  seed: int,
  result,
  metric: str,
  wall_seconds: float,
  cpu_seconds: float = math.nan,
  timings: dict[str, float] | None = None,
) -> dict[str, Any]:
  """One seed's numbers, in percent and seconds (`cpu_seconds`: this
  process's CPU time, a steadier figure than wall-clock on a shared machine;
  `timings`: the seed's train/eval seconds when not `result.timings`)."""
  timings = timings or result.timings
  return {
    'seed': seed,
    metric: 100 * result.summary[metric],
    'bti': 100 * paper_bti(result.accuracy_matrix),
    'bwt': 100 * result.summary.get('bwt', math.nan),
    'learning_accuracy': 100 * result.summary.get('learning_accuracy', math.nan),
    'train_seconds': timings['train_seconds'],
    'eval_seconds': timings['eval_seconds'],
    'wall_seconds': wall_seconds,
    'cpu_seconds': cpu_seconds,
    'accuracy_matrix': np.asarray(result.accuracy_matrix).tolist(),
  }


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof=1; 0 for one value)."""
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def check(mean: float, expected: float, tolerance: float) -> bool:
  """True when `|mean - expected| <= tolerance`."""
  return abs(mean - expected) <= tolerance


def expected_entry(
  config, value: float | None = None, tolerance: float | None = None
) -> dict[str, Any]:
  """`config.expected` as a dict, with overrides; needs `value` and `tolerance`."""
  entry = dict(config.expected) if 'expected' in config else {}
  entry = {k: (dict(v) if hasattr(v, 'items') else v) for k, v in entry.items()}
  if value is not None:
    entry['value'] = value
  if tolerance is not None:
    entry['tolerance'] = tolerance
  entry.setdefault('metric', 'acc')
  for key, flag in (('value', 'expected'), ('tolerance', 'tolerance')):
    if entry.get(key) is None:
      raise ValueError(f'no expected {key}: set config.expected.{key} or --{flag}')
  return entry


def run_seeds(
  config, seeds: Sequence[int], metric: str = 'acc', workdir: str | None = None, log=print
) -> list[dict[str, Any]]:
  """Runs `config` once per seed (in this process) and returns the seeds' records."""
  from jcl import experiment

  records = []
  for seed in seeds:
    config.seed = seed
    t0, cpu0 = time.perf_counter(), time.process_time()
    result = experiment.run(config, os.path.join(workdir, f'seed_{seed}') if workdir else None)
    records.append(
      seed_record(seed, result, metric, time.perf_counter() - t0, time.process_time() - cpu0)
    )
    log(format_seed(records[-1], metric))
  return records


def run_replicas(
  config,
  seeds: Sequence[int],
  metric: str = 'acc',
  mode: str = 'auto',
  workdir: str | None = None,
  log=print,
) -> list[dict[str, Any]]:
  """Runs the seeds (consecutive) as the replicas of one `jcl.replicas.run`
  and returns the seeds' records; the set-up time is shared among them."""
  from jcl import replicas

  if list(seeds) != list(range(seeds[0], seeds[0] + len(seeds))):
    raise ValueError(f'replica modes run consecutive seeds, got {list(seeds)}')
  config.seed, config.num_seeds, config.grid = seeds[0], len(seeds), ''
  t0, cpu0 = time.perf_counter(), time.process_time()
  result = replicas.run(config, workdir, mode=mode)
  wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
  own = [t['train_seconds'] + t['eval_seconds'] for t in result.replica_timings]
  setup = (wall - sum(own)) / len(seeds)
  records = []
  for index, replica in enumerate(result.replicas):
    records.append(
      seed_record(
        replica.seed,
        result.fit_result(index),
        metric,
        own[index] + setup,
        cpu / len(seeds),
        timings=result.replica_timings[index],
      )
    )
    log(format_seed(records[-1], metric) + f'  [{result.mode}]')
  return records


def format_seed(record: dict[str, Any], metric: str) -> str:
  return (
    f'seed {record["seed"]}: {metric} {record[metric]:.2f}  BTI {record["bti"]:+.2f}  '
    f'train {record["train_seconds"]:.1f}s  eval {record["eval_seconds"]:.1f}s  '
    f'total {record["wall_seconds"]:.1f}s (CPU {record["cpu_seconds"]:.1f}s)'
  )


def summarize(records: Sequence[dict[str, Any]], expected: dict[str, Any]) -> dict[str, Any]:
  """Mean ± std of every per-seed number and the check against `expected`."""
  metric = expected['metric']
  summary = {}
  for key in (
    metric,
    'bti',
    'bwt',
    'learning_accuracy',
    'train_seconds',
    'eval_seconds',
    'wall_seconds',
    'cpu_seconds',
  ):
    summary[key] = dict(zip(('mean', 'std'), mean_std([r[key] for r in records])))
  mean = summary[metric]['mean']
  summary['check'] = {
    'expected': expected['value'],
    'tolerance': expected['tolerance'],
    'difference': mean - expected['value'],
    'passed': check(mean, expected['value'], expected['tolerance']),
  }
  return summary


def format_report(summary: dict[str, Any], expected: dict[str, Any], num_seeds: int) -> str:
  """The summary next to the expected value, the reference, BTI and timings."""
  metric = expected['metric']
  m, c = summary[metric], summary['check']
  paper = f'{expected["value"]:.2f}' + (f' ± {expected["std"]:.2f}' if expected.get('std') else '')
  source = expected.get('source', 'config.expected')
  lines = [
    f'{metric}: {m["mean"]:.2f} ± {m["std"]:.2f} over {num_seeds} seeds  |  '
    f'expected {paper} ({source}), tolerance {c["tolerance"]:.2f}: '
    f'difference {c["difference"]:+.2f} -> {"PASS" if c["passed"] else "FAIL"}'
  ]
  reference = expected.get('reference')
  if reference:
    lines.append(
      f'reference: {reference.get("value", math.nan):.2f} ± '
      f'{reference.get("std", math.nan):.2f} ({reference.get("note", "")})'
    )
  b = summary['bti']
  lines.append(
    f'BTI {b["mean"]:+.2f} ± {b["std"]:.2f}'
    + (f'  (expected {expected["bti"]:+.2f})' if expected.get('bti') is not None else '')
  )
  t = {
    k: summary[k]['mean'] for k in ('train_seconds', 'eval_seconds', 'wall_seconds', 'cpu_seconds')
  }
  lines.append(
    f'per run: train {t["train_seconds"]:.1f}s, eval {t["eval_seconds"]:.1f}s, '
    f'total {t["wall_seconds"]:.1f}s, CPU {t["cpu_seconds"]:.1f}s '
    f'(mean over seeds; compilation is in the first seed, or shared)'
  )
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  runs.quiet_unless_asked()
  config = _CONFIG.value
  expected = expected_entry(config, _EXPECTED.value, _TOLERANCE.value)
  if _DATA_DIR.value:
    config.benchmark.source = 'idx'
    config.benchmark.path = _DATA_DIR.value
  config.log.progress = False
  config.log.loggers = ()  # the per-seed lines below are the log
  config.log.plots = False  # timed runs: no checkpoints, no figures
  config.checkpoint.enabled = False
  if _CACHE.value:
    config.compilation_cache = _CACHE.value
  seeds = list(range(_FIRST_SEED.value, _FIRST_SEED.value + _SEEDS.value))
  if _MODE.value == 'separate':
    records = run_seeds(config, seeds, expected['metric'], _WORKDIR.value)
  else:
    records = run_replicas(config, seeds, expected['metric'], _MODE.value, _WORKDIR.value)
  summary = summarize(records, expected)
  print(format_report(summary, expected, len(seeds)))
  if _WORKDIR.value:
    os.makedirs(_WORKDIR.value, exist_ok=True)
    path = os.path.join(_WORKDIR.value, 'reproduce.json')
    with open(path, 'w') as f:
      json.dump(
        {
          'config': json.loads(config.to_json_best_effort()),
          'expected': expected,
          'seeds': records,
          'summary': summary,
          'environment': {
            'jax': jax.__version__,
            'backend': jax.default_backend(),
            'python': sys.version.split()[0],
          },
        },
        f,
        indent=1,
      )
    print(f'written to {path}')
  if _CHECK.value and not summary['check']['passed']:
    return 1
  return 0


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  runs.document_verbosity()
  app.run(main)
