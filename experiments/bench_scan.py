"""Throughput of the scanned training loop against a per-batch Python loop.

Side by side in one run, on the same Permuted-MNIST stream (the
`../shared/bench/avalanche` protocol: MLP 784-256-256-10, SGD lr 0.01
momentum 0.9, one epoch per task), for each (algorithm, batch size):

* `scan`:    `jcl.train.run_chunk_fn`: K steps per jit-compiled `lax.scan`,
             host Python once per chunk (what `jcl.train.fit` runs);
* `python`:  the same jit-compiled `algorithm.step` called once per batch
             from a Python loop (what a PyTorch-style loop does).

It also measures the machine's float32 matmul FLOP/s and reports the share
of it the scanned loop reaches (training FLOPs ~ 6 x weights x samples).
Compilation is excluded (one warm-up chunk / step first); the timings cover
training only, best of `--repeats` interleaved runs (these 2-core machines
are noisy). The whole binary against a minimal JAX loop and Avalanche, side
by side, is `experiments/bench_peers.py`.

  python -m experiments.bench_scan                      # full
  python -m experiments.bench_scan --quick              # a few seconds
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jcl import algorithms
from jcl import models
from jcl import specs
from jcl import train as train_lib
from jcl import train_state as ts_lib
from jcl.data import benchmarks
from jcl.data import stream
from jcl.types import Batch

DEFAULT_MNIST = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'mnist')


def matmul_flops(n: int = 1024, repeats: int = 20, trials: int = 5) -> float:
  """Float32 FLOP/s of an n x n matmul on the default device (best of `trials`)."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = 0.0
  for _ in range(trials):
    t = time.perf_counter()
    for _ in range(repeats):
      out = f(a)
    out.block_until_ready()
    best = max(best, 2 * n**3 * repeats / (time.perf_counter() - t))
  return best


def make_state(seed: int = 0) -> ts_lib.TrainState:
  model = models.MLP(widths=(256, 256), num_classes=10)
  return ts_lib.create_train_state(
    model,
    specs.OptimizerSpec(learning_rate=0.01, momentum=0.9),
    jax.random.PRNGKey(seed),
    (28, 28, 1),
    10,
  )


def time_scan(algo, split, batch_size, chunk_steps) -> tuple[float, int]:
  state = make_state()
  algo_state = algo.init(state, jax.random.PRNGKey(1))
  state, algo_state = algo.begin_task(state, algo_state, 0)
  run = jax.jit(train_lib.run_chunk_fn(algo.step))
  chunks = [
    Batch(*map(jnp.asarray, c))
    for c in stream.epoch_chunks(
      split,
      batch_size=batch_size,
      chunk_steps=chunk_steps,
      rng=np.random.default_rng(0),
      drop_last=True,
    )
  ]
  warm = run(state, algo_state, chunks[0])
  jax.block_until_ready(warm)
  t = time.perf_counter()
  for chunk in chunks:
    state, algo_state, metrics, _ = run(state, algo_state, chunk)
    jax.device_get(metrics)  # what fit does per chunk
  jax.block_until_ready(state)
  return time.perf_counter() - t, int(sum(float(jnp.sum(c.mask)) for c in chunks))


def time_python(algo, split, batch_size) -> tuple[float, int]:
  state = make_state()
  algo_state = algo.init(state, jax.random.PRNGKey(1))
  state, algo_state = algo.begin_task(state, algo_state, 0)
  step = jax.jit(algo.step)
  n = stream.num_batches(len(split), batch_size, drop_last=True)
  order = np.random.default_rng(0).permutation(len(split))
  ones = np.ones((batch_size,), np.float32)

  def batch(i):
    idx = order[i * batch_size : (i + 1) * batch_size]
    return Batch(split.x[idx], split.y[idx], split.t[idx], ones)

  jax.block_until_ready(step(state, batch(0), algo_state))
  t = time.perf_counter()
  for i in range(n):
    state, algo_state, metrics = step(state, batch(i), algo_state)
    float(metrics['loss'])  # a per-step host read, as a Python loop logs its loss
  jax.block_until_ready(state)
  return time.perf_counter() - t, n * batch_size


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--mnist_dir', default=os.environ.get('JCL_MNIST_DIR', DEFAULT_MNIST))
  parser.add_argument('--samples', type=int, default=60000, help='training samples timed per run')
  parser.add_argument('--chunk_steps', type=int, default=200)
  parser.add_argument('--repeats', type=int, default=3, help='best of this many runs')
  parser.add_argument('--quick', action='store_true', help='6000 samples, for a smoke run')
  parser.add_argument('--json', default=None, help='also write the rows to this file')
  args = parser.parse_args()
  samples = 6000 if args.quick else args.samples
  if args.quick:
    args.repeats = 1

  source = dict(source='idx', path=args.mnist_dir) if os.path.isdir(args.mnist_dir) else {}
  bench = benchmarks.make_benchmark(
    'permuted_mnist', num_tasks=1, samples_per_task=samples, **source
  )
  split = bench.tasks[0].train
  flops = matmul_flops()
  weights = 784 * 256 + 256 * 256 + 256 * 10
  print(
    f'device: {jax.devices()[0].device_kind} ({jax.default_backend()}), data: '
    f'{"real MNIST" if source else "bundled sample"}, {len(split)} samples/run'
  )
  print(f'float32 matmul peak (1024^3): {flops / 1e9:.1f} GFLOP/s')
  header = (
    f'{"algorithm":10s} {"B":>4s} {"scan/s":>10s} {"python/s":>10s} {"scan/python":>11s} '
    f'{"% peak":>7s}'
  )
  print(header)
  rows = []
  for name, batch_size in (('naive', 10), ('naive', 64), ('ewc', 10), ('ewc', 64), ('si', 64)):
    algo = algorithms.build(specs.make_spec(name))
    if name == 'ewc':  # a non-zero penalty, as after the first task
      state = make_state()
      algo_state = algo.init(state, jax.random.PRNGKey(1))
      data = train_lib.task_data(train_lib.subsample(split, 1000, np.random.default_rng(0)), 250)
      _, algo_state = jax.jit(algo.end_task)(state, algo_state, data)
      algo = algo._replace(init=lambda s, r, a=algo_state: a)
    # Best of `repeats` runs of each, interleaved, so a burst of load on the
    # machine hits both loops alike.
    scan_rate = py_rate = 0.0
    for _ in range(args.repeats):
      t_scan, n_scan = time_scan(algo, split, batch_size, args.chunk_steps)
      t_py, n_py = time_python(algo, split, batch_size)
      scan_rate, py_rate = max(scan_rate, n_scan / t_scan), max(py_rate, n_py / t_py)
    peak = 100 * 6 * weights * scan_rate / flops
    row = dict(
      algorithm=name,
      batch_size=batch_size,
      scan_samples_per_s=scan_rate,
      python_samples_per_s=py_rate,
      scan_over_python=scan_rate / py_rate,
      percent_of_matmul_peak=peak,
    )
    rows.append(row)
    print(
      f'{name:10s} {batch_size:4d} {scan_rate:10.0f} {py_rate:10.0f} {scan_rate / py_rate:10.1f}x '
      f'{peak:6.1f}%'
    )
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'matmul_flops': flops, 'rows': rows}, f, indent=1)


if __name__ == '__main__':
  main()
