"""N seeds as one program vs N separate runs: their time, side by side in one run.

For N in --seeds (1, 2, 5, 10), an MLP 2x100 at batch 10 on Permuted MNIST
(the config of `configs/<algo>.py:permuted_mnist`, --tasks tasks of
--samples_per_task samples), three ways, each a fresh process timed from
its start to its end (start-up, compilation, training, evaluation), in wall
seconds and in CPU seconds (user + system, less distorted on a shared machine):

  vmap      `jcl.replicas.run` with mode='vmap': one `jit(vmap(scan(step)))`.
  default   `jcl.replicas.run` with mode='auto': what the runner picks on this
            backend (vmap on GPU/TPU, sequential on a single CPU device).
  separate  N runs of the binary `python -m experiments.train --config.seed=s`.

  python -m experiments.bench_seeds                      # N = 1, 2, 5, 10
  python -m experiments.bench_seeds --seeds=1,5 --tasks=2 --samples_per_task=500

The claims it checks: on CPU the default is never slower than separate runs
(it saves their start-up and compilation); on a GPU, 5 vmapped seeds cost at
most 1.5x one seed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def settings(args) -> dict[str, object]:
  """Config values shared by every way of running (no files written)."""
  values = {
    'benchmark.num_tasks': args.tasks,
    'benchmark.samples_per_task': args.samples_per_task,
    'train.batch_size': 10,
    'log.progress': False,
    'log.loggers': 'console',
    'log.plots': False,
    'checkpoint.enabled': False,
  }
  if args.mnist_dir:
    values['benchmark.path'] = args.mnist_dir
  return values


def overrides(args) -> list[str]:
  """`settings` as the binary's command-line flags."""
  return [f'--config=configs/{args.algo}.py:permuted_mnist'] + [
    f'--config.{path}={value}' for path, value in settings(args).items()
  ]


def timed(command: list[str]) -> tuple[float, float, str]:
  """`(wall seconds, CPU seconds (user + system), stdout)` of a child process."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.perf_counter()
  out = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
  wall = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if out.returncode != 0:
    raise RuntimeError(f'{" ".join(command)} failed:\n{out.stderr[-3000:]}')
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return wall, cpu, out.stdout


def replicas_run(args, num_seeds: int, mode: str) -> tuple[float, float, dict]:
  wall, cpu, stdout = timed(
    [
      sys.executable,
      '-m',
      'experiments.bench_seeds',
      '--worker',
      f'--num_seeds={num_seeds}',
      f'--mode={mode}',
      *_passthrough(args),
    ]
  )
  return wall, cpu, json.loads(stdout.rsplit('RESULT ', 1)[1])


def separate_runs(args, num_seeds: int) -> tuple[float, float]:
  wall = cpu = 0.0
  for seed in range(num_seeds):
    run_wall, run_cpu, _ = timed(
      [sys.executable, '-m', 'experiments.train', *overrides(args), f'--config.seed={seed}']
    )
    wall, cpu = wall + run_wall, cpu + run_cpu
  return wall, cpu


def _passthrough(args) -> list[str]:
  return [
    f'--algo={args.algo}',
    f'--tasks={args.tasks}',
    f'--samples_per_task={args.samples_per_task}',
  ] + ([f'--mnist_dir={args.mnist_dir}'] if args.mnist_dir else [])


def worker(args) -> None:
  """One `replicas.run` in this process; prints its facts as JSON."""
  import importlib
  import jax
  from jcl import replicas

  config = importlib.import_module(f'configs.{args.algo}').get_config('permuted_mnist')
  for path, value in settings(args).items():
    section, field = path.split('.')
    config[section][field] = (value,) if path == 'log.loggers' else value
  config.num_seeds = args.num_seeds
  config.replicas = dict(mode=args.mode)
  result = replicas.run(config)
  print(
    'RESULT '
    + json.dumps(
      {
        'mode': result.mode,
        'backend': jax.default_backend(),
        'devices': jax.device_count(),
        'acc': [s['acc'] for s in result.summaries],
        'timings': result.timings,
      }
    )
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--seeds', default='1,2,5,10', help='values of N, comma-separated')
  parser.add_argument('--algo', default='naive', help='configs/<algo>.py')
  parser.add_argument('--tasks', type=int, default=5)
  parser.add_argument('--samples_per_task', type=int, default=1000)
  parser.add_argument('--mnist_dir', default='', help='IDX folder (default: the bundled sample)')
  parser.add_argument('--out', default='', help='also write the table as JSON here')
  parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--num_seeds', type=int, default=1, help=argparse.SUPPRESS)
  parser.add_argument('--mode', default='auto', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    return worker(args)

  print(
    f'{args.algo}, MLP 2x100, batch 10, Permuted MNIST {args.tasks} tasks x '
    f'{args.samples_per_task} samples; seconds of whole processes, wall (CPU: user + system)'
  )
  print(
    f'{"N":>3} {"vmap":>14} {"default":>20} {"separate":>14} {"default/separate":>17} '
    f'{"vmap N/vmap 1":>14}'
  )
  rows, vmap_one = [], None
  for n in [int(v) for v in args.seeds.split(',')]:
    vmap_wall, vmap_cpu, vmap_facts = replicas_run(args, n, 'vmap')
    default_wall, default_cpu, default_facts = replicas_run(args, n, 'auto')
    separate_wall, separate_cpu = separate_runs(args, n)
    if n == 1:
      vmap_one = (vmap_wall, vmap_cpu)
    scale = f'{vmap_wall / vmap_one[0]:.2f} ({vmap_cpu / vmap_one[1]:.2f})' if vmap_one else ''
    cell = lambda wall, cpu: f'{wall:.1f} ({cpu:.1f})'
    print(
      f'{n:>3} {cell(vmap_wall, vmap_cpu):>14} '
      f'{cell(default_wall, default_cpu) + " " + default_facts["mode"][:3]:>20} '
      f'{cell(separate_wall, separate_cpu):>14} '
      f'{f"{default_wall / separate_wall:.2f} ({default_cpu / separate_cpu:.2f})":>17} '
      f'{scale:>14}',
      flush=True,
    )
    rows.append(
      {
        'n': n,
        'vmap_seconds': vmap_wall,
        'vmap_cpu_seconds': vmap_cpu,
        'default_seconds': default_wall,
        'default_cpu_seconds': default_cpu,
        'default_mode': default_facts['mode'],
        'separate_seconds': separate_wall,
        'separate_cpu_seconds': separate_cpu,
        'backend': default_facts['backend'],
        'devices': default_facts['devices'],
        'vmap_inner': vmap_facts['timings'],
        'default_inner': default_facts['timings'],
        'acc_vmap': vmap_facts['acc'],
        'acc_default': default_facts['acc'],
      }
    )
  gap = max(abs(a - b) for r in rows for a, b in zip(r['acc_vmap'], r['acc_default']))
  print(f'ACC of every seed, vmap vs default: max difference {gap:.2g}')
  for unit, key in (('wall', 'seconds'), ('CPU', 'cpu_seconds')):
    slower = [r['n'] for r in rows if r['default_' + key] > r['separate_' + key]]
    print(
      f'default never slower than separate runs ({unit}): '
      + ('yes' if not slower else f'NO (N={slower})')
    )
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(rows, f, indent=1)


if __name__ == '__main__':
  main()
