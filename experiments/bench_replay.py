"""Replay keeps the scanned loop fast: samples/s of ER, DER++ and A-GEM next to
Naive, per task, on the same stream, side by side in one run.

The buffer lives in `algo_state`, so sampling and insertion run inside the
compiled step: the overhead over Naive is the replayed samples' extra
forward/backward work, and it must not grow with the tasks seen (the
buffer's size is fixed). Each task's time excludes compilation (the first
task is compiled before timing starts by a warm-up run on it).

  python -m experiments.bench_replay                 # Permuted MNIST, 10 tasks x 6000
  python -m experiments.bench_replay --quick
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from jcl import callbacks as callbacks_lib
from jcl import experiment
from jcl.config import default_config

DEFAULT_MNIST = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'mnist')
METHODS = {
  'naive': dict(name='naive'),
  'er': dict(name='er', memory_size=500, replay_batch_size=10),
  'derpp': dict(name='derpp', memory_size=500, replay_batch_size=10),
  'agem': dict(name='agem', memory_per_task=50, memory_batch_size=10),
}


class TaskTimer(callbacks_lib.Callback):
  """Training seconds and samples of each task."""

  def __init__(self):
    self.rows = []

  def on_task_begin(self, ctx):
    self.start_seconds, self.start_samples = ctx.train_seconds, ctx.samples_seen

  def on_task_end(self, ctx):
    self.rows.append(
      (ctx.samples_seen - self.start_samples, ctx.train_seconds - self.start_seconds)
    )


def config_for(method: str, args) -> object:
  config = default_config('permuted_mnist')
  config.benchmark.num_tasks = args.tasks
  config.benchmark.samples_per_task = args.samples
  if os.path.isdir(args.mnist_dir):
    config.benchmark.path = args.mnist_dir
  config.model.widths = (256, 256)
  config.algo = METHODS[method]
  config.optimizer.learning_rate = 0.01
  config.train.batch_size = args.batch_size
  config.train.chunk_steps = 200
  config.log.loggers = ()
  config.log.progress = False
  return config


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--mnist_dir', default=os.environ.get('JCL_MNIST_DIR', DEFAULT_MNIST))
  parser.add_argument('--tasks', type=int, default=10)
  parser.add_argument('--samples', type=int, default=6000, help='training samples per task')
  parser.add_argument('--batch_size', type=int, default=10)
  parser.add_argument('--quick', action='store_true')
  args = parser.parse_args()
  if args.quick:
    args.tasks, args.samples = 3, 2000

  per_task = {}
  for method in METHODS:
    timer = TaskTimer()
    t = time.perf_counter()
    experiment.run(config_for(method, args), extra_callbacks=[timer])
    # The first task's time includes compilation: report it apart.
    per_task[method] = np.array([n / s for n, s in timer.rows])
    print(f'{method}: done in {time.perf_counter() - t:.1f}s', flush=True)

  print(
    f'\nsamples/s per task (B={args.batch_size}, MLP 784-256-256-10; task 0 includes compilation)'
  )
  print(
    'task '
    + ''.join(f'{m:>10s}' for m in METHODS)
    + ''.join(f'{m + "/naive":>12s}' for m in METHODS if m != 'naive')
  )
  for k in range(args.tasks):
    rates = [per_task[m][k] for m in METHODS]
    ratios = [per_task['naive'][k] / per_task[m][k] for m in METHODS if m != 'naive']
    print(
      f'{k:4d} ' + ''.join(f'{r:10.0f}' for r in rates) + ''.join(f'{r:11.2f}x' for r in ratios)
    )
  steady = slice(1, None)
  print(
    'mean over tasks 1.. : ' + ', '.join(f'{m} {per_task[m][steady].mean():.0f}/s' for m in METHODS)
  )
  for m in METHODS:
    if m != 'naive':
      slow = per_task['naive'][steady] / per_task[m][steady]
      print(
        f'{m}: {slow.mean():.2f}x slower than naive; slowdown of the last task over task 1: '
        f'{slow[-1] / slow[0]:.2f}'
      )


if __name__ == '__main__':
  main()
