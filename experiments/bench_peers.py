"""Speed and memory of the user's path, side by side with the floor and the peers.

One invocation measures, interleaved and in fresh processes (these machines
vary 2x from day to day, so only ratios measured together mean anything),
the rows of `configs/bench.py` (Permuted MNIST, 10 tasks x 60k real MNIST
images, MLP 784-256-256-10, SGD lr 0.01 momentum 0.9, one epoch a task):
`naive,10`, `naive,64`, `ewc,64` (lambda 1, full-data Fisher), `er,10`
(memory 500), `agem,10`, `derpp,10`. For each row and repeat:

* `jax`: the binary, `python -m experiments.train --config=configs/bench.py:ROW`;
  from its `results.json`: training samples/s (compilation excluded),
  evaluation samples/s (the accuracy matrix: every task's 10k test images
  before training and after each task), compilation, seconds from the
  process's start to the first chunk's results; from the OS: the process's
  wall time and peak resident memory;
* `floor` (Naive rows): the shortest JAX loop that does the job well, in a
  fresh process (the MLP as a list of `(w, b)`, `optax.sgd`, one jitted
  `lax.scan` over an epoch; `device`: the task's images on the device,
  `host`: each epoch shuffled on the host; the faster is the floor);
* `torch`: the binary with `--backend=torch` (`jcl.torch`);
* `avalanche`: `../shared/bench/avalanche/avalanche_bench.py` (avalanche-lib
  0.6.0) with evaluation on, in the environment that
  `SETUP_ONLY=1 bash ../shared/bench/avalanche/avalanche_bench.sh` makes;
  rows it has no strategy for (A-GEM, DER++), or every row when the
  environment is missing, print "not measured".

Then the quickstart (the README's first command's run): import seconds,
seconds to the first chunk, wall and peak memory. Printed: the best
samples/s of each, and the median over the repeats of each ratio measured
within one repeat (jax / floor, jax / avalanche, torch / avalanche, EWC /
Naive, evaluation jax / avalanche).

  python -m experiments.bench_peers                                  # ~25 min a repeat
  python -m experiments.bench_peers --rows=naive,64 --repeats=1 --tasks=2 --samples=6000
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
ROWS = ('naive,10', 'naive,64', 'ewc,64', 'er,10', 'agem,10', 'derpp,10')
# The peer script's configurations of our rows.
AVALANCHE_CONFIGS = {
  'naive,10': 'naive10',
  'naive,64': 'naive64',
  'ewc,64': 'ewc64',
  'er,10': 'replay10',
}
TEST_SAMPLES = 10000  # MNIST's test set, every task's evaluation split


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
# Processes.
# -----------------------------------------------------------------------------


def measured_process(cmd, **kwargs) -> tuple[subprocess.CompletedProcess, float, float]:
  """Runs `cmd`; `(completed, wall seconds, peak resident memory in MB)`."""
  with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, **kwargs)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0), err.seek(0)
    completed = subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())
  return completed, wall, usage.ru_maxrss / 1024  # ru_maxrss: kilobytes on Linux


def run_floor(variant, batch_size, args) -> dict:
  out, _, _ = measured_process(
    [
      sys.executable,
      '-m',
      'experiments.bench_peers',
      f'--floor={variant}',
      f'--rows=naive,{batch_size}',
      f'--tasks={args.tasks}',
      f'--samples={args.samples}',
      f'--mnist_dir={args.mnist_dir}',
    ],
    cwd=REPO,
  )
  if out.returncode:
    raise RuntimeError(f'floor {variant} failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def run_binary(row, args, workdir, backend='jax', config=None) -> dict:
  """The binary's run of `row` (or of `config`): its timings, wall and peak memory."""
  cmd = [sys.executable, '-m', 'experiments.train', f'--workdir={workdir}']
  if config:
    cmd.append(f'--config={config}')
  else:
    cmd += [
      f'--config=configs/bench.py:{row}',
      '--config.benchmark.source=idx',
      f'--config.benchmark.path={args.mnist_dir}',
      f'--config.benchmark.num_tasks={args.tasks}',
      f'--config.benchmark.samples_per_task={args.samples}',
      f'--backend={backend}',
    ]
  out, wall, peak = measured_process(cmd, cwd=REPO)
  if out.returncode:
    raise RuntimeError(f'{" ".join(cmd)} failed:\n{out.stderr[-3000:]}')
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  timings = results['timings']
  tasks = len(results['accuracy_matrix'])
  return {
    'samples_per_second': timings['train_samples_per_second'],
    'eval_samples_per_second': tasks * (tasks + 1) * TEST_SAMPLES / timings['eval_seconds'],
    **timings,
    'process_seconds': wall,
    'peak_mb': peak,
    'acc': results['summary'].get('acc'),
  }


def run_avalanche(row, args, out_file) -> dict | None:
  python = os.path.join(AVALANCHE_ENV, 'venv', 'bin', 'python')
  if row not in AVALANCHE_CONFIGS or not os.path.exists(python):
    return None
  out, _, peak = measured_process(
    [
      python,
      '-W',
      'ignore',
      os.path.join(AVALANCHE, 'avalanche_bench.py'),
      '--configs',
      AVALANCHE_CONFIGS[row],
      '--eval',
      'on',
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
    ]
  )
  if out.returncode:
    raise RuntimeError(f'avalanche {row} failed:\n{out.stderr[-3000:]}')
  with open(out_file) as f:
    record = json.loads(f.read().strip().splitlines()[-1])
  # Avalanche evaluates the T tasks after each task (T^2 task evaluations).
  evals = args.tasks * args.tasks * TEST_SAMPLES
  return {
    'samples_per_second': record['samples_per_s'],
    'eval_samples_per_second': evals / max(record['eval_s'], 1e-9),
    'peak_mb': peak,
    'acc': record['final_avg_acc'],
    **record,
  }


def import_seconds() -> float:
  """Seconds to import what the binary imports before it trains, in a fresh
  process, minus a bare interpreter's start."""
  code = 'import jax, jcl.runs, jcl.experiment, jcl.callbacks, orbax.checkpoint'
  _, with_imports, _ = measured_process([sys.executable, '-c', code], cwd=REPO)
  _, bare, _ = measured_process([sys.executable, '-c', 'pass'], cwd=REPO)
  return with_imports - bare


# -----------------------------------------------------------------------------
# The table.
# -----------------------------------------------------------------------------


def _median(values):
  values = sorted(v for v in values if v is not None)
  if not values:
    return None
  mid = len(values) // 2
  return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _fmt(value, spec=',.0f', missing='not measured'):
  return missing if value is None else format(value, spec)


def measure_row(row, repeat, args, tmp) -> dict:
  batch = int(row.split(',')[1])
  name = row.replace(',', '_')
  m = {'jax': run_binary(row, args, os.path.join(tmp, f'jax_{name}_{repeat}'))}
  if row.startswith('naive,'):
    m['floor'] = max(
      (run_floor(v, batch, args) for v in ('device', 'host')),
      key=lambda f: f['samples_per_second'],
    )
  if 'torch' in args.backends:
    m['torch'] = run_binary(row, args, os.path.join(tmp, f'torch_{name}_{repeat}'), 'torch')
  m['avalanche'] = run_avalanche(row, args, os.path.join(tmp, f'aval_{name}_{repeat}.jsonl'))
  return m


def ratio(m, a, b, key='samples_per_second'):
  if m.get(a) is None or m.get(b) is None:
    return None
  return m[a][key] / m[b][key]


def report(rows, args, quickstart) -> None:
  print(
    f'\nPermuted MNIST {args.tasks} x {args.samples}, MLP 784-256-256-10, SGD 0.01 m 0.9, one '
    f'epoch a task; {args.repeats} interleaved repeat(s); samples/s: the best; ratios: the '
    'median of the ratios measured within each repeat'
  )
  head = (
    f'{"row":>9} {"jax":>9} {"floor":>9} {"jax/fl":>6} {"torch":>9} {"aval":>9} '
    f'{"jax/av":>6} {"tor/av":>6} {"eval jax":>9} {"eval av":>9} {"ev j/a":>6} '
    f'{"RSS MB":>7} {"av MB":>6} {"acc":>5} {"av acc":>6}'
  )
  print(head)
  for row, ms in rows.items():
    best = lambda who, key='samples_per_second': max(
      (m[who][key] for m in ms if m.get(who)), default=None
    )
    med = lambda a, b, key='samples_per_second': _median([ratio(m, a, b, key) for m in ms])
    last = ms[-1]
    print(
      f'{row:>9} {_fmt(best("jax")):>9} {_fmt(best("floor"), missing="-"):>9} '
      f'{_fmt(med("jax", "floor"), ".2f", "-"):>6} {_fmt(best("torch"), missing="-"):>9} '
      f'{_fmt(best("avalanche"), missing="n/m"):>9} {_fmt(med("jax", "avalanche"), ".1f", "-"):>6} '
      f'{_fmt(med("torch", "avalanche"), ".2f", "-"):>6} '
      f'{_fmt(best("jax", "eval_samples_per_second")):>9} '
      f'{_fmt(best("avalanche", "eval_samples_per_second"), missing="n/m"):>9} '
      f'{_fmt(med("jax", "avalanche", "eval_samples_per_second"), ".1f", "-"):>6} '
      f'{last["jax"]["peak_mb"]:7.0f} '
      f'{_fmt(last["avalanche"] and last["avalanche"]["peak_mb"], ".0f", "-"):>6} '
      f'{last["jax"]["acc"] * 100:5.1f} '
      f'{_fmt(last["avalanche"] and last["avalanche"]["acc"] * 100, ".1f", "-"):>6}'
    )
  if 'ewc,64' in rows and 'naive,64' in rows:
    per_repeat = [
      e['jax']['samples_per_second'] / n['jax']['samples_per_second']
      for e, n in zip(rows['ewc,64'], rows['naive,64'])
    ]
    print(f'EWC / Naive end to end at B=64 (jax, training samples/s): {_median(per_repeat):.3f}')
  missing = [r for r in rows if all(m['avalanche'] is None for m in rows[r])]
  if missing:
    print(
      f'not measured (n/m): Avalanche on {", ".join(missing)} '
      + (
        '(its environment is missing: SETUP_ONLY=1 bash '
        '../shared/bench/avalanche/avalanche_bench.sh)'
        if not os.path.exists(os.path.join(AVALANCHE_ENV, 'venv', 'bin', 'python'))
        else '(the peer script has no such strategy)'
      )
    )
  if quickstart:
    q = quickstart
    print(
      f'quickstart (configs/quickstart.py, bundled sample): import {q["import_seconds"]:.2f} s, '
      f'first chunk at {q["first_chunk_seconds"]:.2f} s, compile {q["compile_seconds"]:.2f} s, '
      f'train {q["train_seconds"]:.2f} s, eval {q["eval_seconds"]:.2f} s, '
      f'wall {q["process_seconds"]:.2f} s, peak {q["peak_mb"]:.0f} MB'
    )


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--mnist_dir', default=os.environ.get('JCL_MNIST_DIR', DEFAULT_MNIST))
  parser.add_argument('--tasks', type=int, default=10)
  parser.add_argument('--samples', type=int, default=60000, help='training samples per task')
  parser.add_argument('--rows', default=';'.join(ROWS), help='ALGO,B rows separated by ;')
  parser.add_argument('--backends', default='jax,torch')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--no_quickstart', action='store_true')
  parser.add_argument('--json', default=None, help='also write every measurement here')
  parser.add_argument('--floor', default=None, help=argparse.SUPPRESS)  # a floor process
  args = parser.parse_args()
  args.mnist_dir = os.path.abspath(args.mnist_dir)
  rows = [r.strip() for r in args.rows.split(';') if r.strip()]
  if args.floor:
    batch = int(rows[0].split(',')[1])
    print(json.dumps(floor(args.floor, batch, args.tasks, args.samples, args.mnist_dir)))
    return

  measured = {row: [] for row in rows}
  quickstart = None
  with tempfile.TemporaryDirectory(prefix='jcl_bench_peers_') as tmp:
    for repeat in range(args.repeats):
      for row in rows:
        m = measure_row(row, repeat, args, tmp)
        measured[row].append(m)
        print(
          f'repeat {repeat} {row}: '
          + ', '.join(
            f'{who} {m[who]["samples_per_second"]:,.0f}'
            for who in ('jax', 'floor', 'torch', 'avalanche')
            if m.get(who)
          )
          + ' samples/s',
          flush=True,
        )
    if not args.no_quickstart:
      quickstart = run_binary(
        None, args, os.path.join(tmp, 'quickstart'), config='configs/quickstart.py'
      )
      quickstart['import_seconds'] = import_seconds()
  report(measured, args, quickstart)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'rows': measured, 'quickstart': quickstart, 'args': vars(args)}, f, indent=1)


if __name__ == '__main__':
  main()
