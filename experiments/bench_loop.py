"""The binary end to end against a minimal hand-written JAX loop, side by side.

On the protocol of `configs/bench.py` (Permuted MNIST, 10 tasks x 60k real
MNIST images, MLP 784-256-256-10, SGD lr 0.01 momentum 0.9, one epoch a
task), for each batch size, in one run and interleaved (these machines vary
2x from day to day, so only ratios measured together mean anything):

* `binary`: `python -m experiments.train --config=configs/bench.py:naive,B`,
  a fresh process; its `train_samples_per_second` from `results.json`
  (training time without compilation, which is reported apart, as are
  evaluation, checkpoints and the whole wall-clock);
* `floor`: the same model trained by the shortest JAX loop that does the
  job well, in a fresh process: the MLP as a list of `(w, b)`, `optax.sgd`,
  one jit-compiled `lax.scan` over every step of an epoch. Two variants,
  the faster one is the floor: `device` (the task's images on the device,
  each step gathers its batch) and `host` (each epoch shuffled on the host,
  moved to the device, then scanned). Compilation is excluded the same way
  (a warm-up call first);
* `ewc` (with `--ewc`): the binary with EWC (lambda 1, the empirical Fisher
  on all 60k samples after every task), against Naive's binary run;
* `avalanche`: `../shared/bench/avalanche/avalanche_bench.py` in its own
  environment, when that has been set up (`SETUP_ONLY=1 bash
  ../shared/bench/avalanche/avalanche_bench.sh`), else left out.

Prints, per batch size, the samples/s of each and `binary / floor` (the
median over the repeats of the ratio measured within one repeat).

  python -m experiments.bench_loop                        # full: ~3 min a repeat
  python -m experiments.bench_loop --tasks=2 --samples=6000 --repeats=1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MNIST = os.path.join(REPO, '..', 'shared', 'data', 'mnist')
AVALANCHE = os.path.join(REPO, '..', 'shared', 'bench', 'avalanche')
AVALANCHE_ENV = os.environ.get('AVALANCHE_WORK', '/var/tmp/jcl-avalanche-bench')


# -----------------------------------------------------------------------------
# The floor: a minimal JAX loop (run in its own process with --floor).
# -----------------------------------------------------------------------------


def floor(variant: str, batch_size: int, tasks: int, samples: int, mnist_dir: str) -> dict:
  """Trains the protocol with a minimal loop; `{'samples_per_second', ...}`."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from jcl.data import benchmarks

  bench = benchmarks.make_benchmark(
    'permuted_mnist', num_tasks=tasks, samples_per_task=samples, source='idx', path=mnist_dir
  )
  train = [(t.train.x.reshape(len(t.train.x), -1), t.train.y) for t in bench.tasks]

  def init(key):
    sizes, params = [784, 256, 256, 10], []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
      w = jax.random.normal(jax.random.fold_in(key, i), (n_in, n_out)) * np.sqrt(1.0 / n_in)
      params.append((w, jnp.zeros(n_out)))
    return params

  def loss_fn(params, x, y):
    for w, b in params[:-1]:
      x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return optax.softmax_cross_entropy_with_integer_labels(x @ w + b, y).mean()

  tx = optax.sgd(0.01, momentum=0.9)

  def step(carry, batch):
    params, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  @jax.jit
  def epoch_on_device(params, opt_state, x, y, order):  # order [steps, B]
    return jax.lax.scan(lambda c, idx: step(c, (x[idx], y[idx])), (params, opt_state), order)

  @jax.jit
  def epoch_of_batches(params, opt_state, xb, yb):  # [steps, B, 784], [steps, B]
    return jax.lax.scan(step, (params, opt_state), (xb, yb))

  def run_task(params, x, y, rng):
    opt_state = tx.init(params)
    steps = len(y) // batch_size
    order = rng.permutation(len(y))[: steps * batch_size].reshape(steps, batch_size)
    if variant == 'device':
      (params, _), losses = epoch_on_device(
        params, opt_state, jax.device_put(x), jax.device_put(y), jax.device_put(order)
      )
    else:
      (params, _), losses = epoch_of_batches(
        params, opt_state, jax.device_put(x[order]), jax.device_put(y[order])
      )
    float(losses[-1])  # the loss reaches the host, as a loop logs it
    return params, steps * batch_size

  params = init(jax.random.PRNGKey(0))
  jax.block_until_ready(run_task(params, *train[0], np.random.default_rng(0)))  # compiles
  seconds, seen = 0.0, 0
  for task, (x, y) in enumerate(train):
    t0 = time.perf_counter()
    params, n = run_task(params, x, y, np.random.default_rng([0, task]))
    jax.block_until_ready(params)
    seconds += time.perf_counter() - t0
    seen += n
  return {'samples_per_second': seen / seconds, 'train_seconds': seconds, 'samples': seen}


# -----------------------------------------------------------------------------
# The rows.
# -----------------------------------------------------------------------------


def run_floor(variant, batch_size, args) -> dict:
  out = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.bench_loop',
      f'--floor={variant}',
      f'--batch_sizes={batch_size}',
      f'--tasks={args.tasks}',
      f'--samples={args.samples}',
      f'--mnist_dir={args.mnist_dir}',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    check=False,
  )
  if out.returncode:
    raise RuntimeError(f'floor {variant} failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def run_binary(algorithm, batch_size, args, workdir) -> dict:
  t0 = time.perf_counter()
  out = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.train',
      f'--config=configs/bench.py:{algorithm},{batch_size}',
      f'--workdir={workdir}',
      '--config.benchmark.source=idx',
      f'--config.benchmark.path={args.mnist_dir}',
      f'--config.benchmark.num_tasks={args.tasks}',
      f'--config.benchmark.samples_per_task={args.samples}',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    check=False,
  )
  wall = time.perf_counter() - t0
  if out.returncode:
    raise RuntimeError(f'binary failed:\n{out.stderr[-3000:]}')
  with open(os.path.join(workdir, 'results.json')) as f:
    timings = json.load(f)['timings']
  return {
    'samples_per_second': timings['train_samples_per_second'],
    **timings,
    'process_seconds': wall,
  }


def run_avalanche(batch_size, args, out_file) -> dict | None:
  python = os.path.join(AVALANCHE_ENV, 'venv', 'bin', 'python')
  if not os.path.exists(python):
    return None
  subprocess.run(
    [
      python,
      '-W',
      'ignore',
      os.path.join(AVALANCHE, 'avalanche_bench.py'),
      '--configs',
      f'naive{batch_size}',
      '--eval',
      'off',
      '--tasks',
      str(args.tasks),
      '--n-train',
      str(args.samples),
      '--threads',
      '2',
      '--data',
      args.mnist_dir,
      '--out',
      out_file,
    ],
    check=True,
    capture_output=True,
  )
  with open(out_file) as f:
    return json.loads(f.read().strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--mnist_dir', default=os.environ.get('JCL_MNIST_DIR', DEFAULT_MNIST))
  parser.add_argument('--tasks', type=int, default=10)
  parser.add_argument('--samples', type=int, default=60000, help='training samples per task')
  parser.add_argument('--batch_sizes', default='10,64')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument(
    '--ewc', action='store_true', help='also the binary with EWC (full-data Fisher), against Naive'
  )
  parser.add_argument('--json', default=None, help='also write every measurement here')
  parser.add_argument('--floor', default=None, help=argparse.SUPPRESS)  # a floor process
  args = parser.parse_args()
  args.mnist_dir = os.path.abspath(args.mnist_dir)
  batch_sizes = [int(b) for b in args.batch_sizes.split(',')]
  if args.floor:
    print(json.dumps(floor(args.floor, batch_sizes[0], args.tasks, args.samples, args.mnist_dir)))
    return

  rows = {b: [] for b in batch_sizes}
  with tempfile.TemporaryDirectory(prefix='jcl_bench_loop_') as tmp:
    for repeat in range(args.repeats):
      for b in batch_sizes:
        measured = {
          'floor_device': run_floor('device', b, args),
          'floor_host': run_floor('host', b, args),
          'binary': run_binary('naive', b, args, os.path.join(tmp, f'run_{repeat}_{b}')),
        }
        if args.ewc:
          measured['binary_ewc'] = run_binary(
            'ewc', b, args, os.path.join(tmp, f'ewc_{repeat}_{b}')
          )
          measured['ewc_over_naive'] = (
            measured['binary_ewc']['samples_per_second'] / measured['binary']['samples_per_second']
          )
        aval = run_avalanche(b, args, os.path.join(tmp, f'avalanche_{repeat}_{b}.jsonl'))
        if aval:
          measured['avalanche'] = aval
        best_floor = max(
          measured['floor_device']['samples_per_second'],
          measured['floor_host']['samples_per_second'],
        )
        measured['binary_over_floor'] = measured['binary']['samples_per_second'] / best_floor
        rows[b].append(measured)
        rate = lambda key: measured[key]['samples_per_second']
        print(
          f'repeat {repeat} B={b}: floor device {rate("floor_device"):,.0f} '
          f'host {rate("floor_host"):,.0f}, binary {rate("binary"):,.0f} samples/s -> '
          f'{measured["binary_over_floor"]:.3f}'
          + (
            f'; EWC {rate("binary_ewc"):,.0f} samples/s, EWC/Naive {measured["ewc_over_naive"]:.3f}'
            if args.ewc
            else ''
          ),
          flush=True,
        )

  import numpy as np

  print(
    f'\nPermuted MNIST {args.tasks} x {args.samples}, MLP 784-256-256-10, SGD 0.01 m 0.9, '
    f'{args.repeats} interleaved repeats (best samples/s; ratio: median of per-repeat ratios)'
  )
  print(
    f'{"B":>4} {"floor dev":>10} {"floor host":>10} {"binary":>10} {"binary/floor":>12} '
    f'{"avalanche":>10} {"binary/aval":>11} {"compile s":>9} {"eval s":>7} {"wall s":>7}'
  )
  for b, measured in rows.items():
    best = lambda key: max(m[key]['samples_per_second'] for m in measured)
    ratio = float(np.median([m['binary_over_floor'] for m in measured]))
    aval = [m['avalanche']['samples_per_s'] for m in measured if 'avalanche' in m]
    aval_ratio = (
      float(
        np.median(
          [
            m['binary']['samples_per_second'] / m['avalanche']['samples_per_s']
            for m in measured
            if 'avalanche' in m
          ]
        )
      )
      if aval
      else None
    )
    last = measured[-1]['binary']
    print(
      f'{b:4d} {best("floor_device"):10,.0f} {best("floor_host"):10,.0f} {best("binary"):10,.0f} '
      f'{ratio:12.3f} {(f"{max(aval):,.0f}" if aval else "-"):>10} '
      f'{(f"{aval_ratio:.1f}x" if aval_ratio else "-"):>11} {last["compile_seconds"]:9.1f} '
      f'{last["eval_seconds"]:7.1f} {last["process_seconds"]:7.1f}'
    )
  if args.ewc:
    for b, measured in rows.items():
      ratio = float(np.median([m['ewc_over_naive'] for m in measured]))
      best = max(m['binary_ewc']['samples_per_second'] for m in measured)
      print(
        f'EWC (lambda 1, full-data empirical Fisher) B={b}: {best:,.0f} samples/s, '
        f'EWC / Naive {ratio:.3f} (median of per-repeat ratios)'
      )
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({str(b): m for b, m in rows.items()}, f, indent=1)


if __name__ == '__main__':
  main()
