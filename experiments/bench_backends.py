"""Training throughput of the same run on both backends, in one process.

  python -m experiments.bench_backends                 # every row
  python -m experiments.bench_backends --rows=naive_mlp_10,er_mlp_64 --repeats=5

Each row builds one spec, one model and one stream of batches, gives the JAX
and PyTorch backends the same initial weights (converted), and times
training steps only (after a warm-up chunk, so compilation is excluded): JAX
runs a jitted `lax.scan` over a chunk of K steps (`jcl.train.run_chunk_fn`,
what `jcl.train.fit` runs) and, for comparison, the jitted step in a Python
loop; PyTorch loops over the same K batches (`jcl.torch.fit.run_chunk`). The
two are timed alternately `--repeats` times and the best of each is kept,
which damps the noise of a shared machine.
A La-MAML step is `glances` meta-updates of `B` inner steps each, hence its
far lower throughput on both backends.
Printed: samples/s of each backend and their ratio JAX / PyTorch.

Rows: Naive, EWC, ER (and La-MAML once `jcl.torch` has it) on the MLP
2x100 over 28x28x1 digits (the bundled MNIST sample) at batch sizes 10 and
64, and Naive on the reduced ResNet-18 (nf=20, 32x32x3 inputs) at batch
size 10. PyTorch runs on `--threads` threads (default: all cores), XLA on
its default thread pool (all cores).
"""

from __future__ import annotations

import os
import time

from absl import app
from absl import flags
import jax
import numpy as np
import torch

from jcl import algorithms as jax_algorithms
from jcl import models as jax_models
from jcl import specs
from jcl import train as jax_train
from jcl import train_state as jax_ts
from jcl.data import sources
from jcl.torch import algorithms as torch_algorithms
from jcl.torch import convert
from jcl.torch import fit as torch_fit
from jcl.torch import models as torch_models
from jcl.torch import train_state as torch_ts
from jcl.types import Batch

_ROWS = flags.DEFINE_list('rows', None, 'Rows to run (default: all), e.g. naive_mlp_10.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed chunks per backend (best kept).')
_STEPS = flags.DEFINE_integer(
  'steps', 100, 'Steps per timed chunk (ResNet rows: a fifth, La-MAML: a tenth).'
)
_THREADS = flags.DEFINE_integer('threads', None, 'PyTorch threads (default: os.cpu_count()).')

MLP = ('mlp', dict(widths=(100, 100)), (28, 28, 1))
RESNET = ('resnet18_reduced', dict(nf=20), (32, 32, 3))
ALGORITHMS = {
  'naive': specs.NaiveSpec(),
  'ewc': specs.EWCSpec(ewc_lambda=2.0),
  'er': specs.ERSpec(memory_size=200, replay_batch_size=10),
  'lamaml': specs.LaMAMLSpec(memory_size=200, replay_batch_size=10),
}


def rows() -> dict[str, tuple]:
  table = {}
  for algo in ('naive', 'ewc', 'er', 'lamaml'):
    for batch_size in (10, 64):
      table[f'{algo}_mlp_{batch_size}'] = (algo, MLP, batch_size)
  table['naive_resnet_10'] = ('naive', RESNET, 10)
  return table


def chunk(input_shape, batch_size: int, steps: int, num_classes: int = 10, seed: int = 0) -> Batch:
  """`[K, B, ...]` NumPy batches: MNIST-sample digits for 28x28x1, noise otherwise."""
  rng = np.random.default_rng(seed)
  n = steps * batch_size
  if tuple(input_shape) == (28, 28, 1):
    data = sources.load_mnist_sample()
    idx = rng.integers(0, len(data.y_train), n)
    x = (data.x_train[idx].astype(np.float32) / 255.0 - 0.1307) / 0.3081
    y = data.y_train[idx]
  else:
    x = rng.normal(size=(n, *input_shape)).astype(np.float32)
    y = rng.integers(0, num_classes, n)
  return Batch(
    x.reshape(steps, batch_size, *input_shape),
    y.reshape(steps, batch_size).astype(np.int32),
    np.zeros((steps, batch_size), np.int32),
    np.ones((steps, batch_size), np.float32),
  )


def bench_row(algo: str, model, batch_size: int, steps: int, repeats: int):
  """Samples/s of one row: `{'jax': scanned chunk, 'jax_loop': jitted step in a
  Python loop, 'torch': PyTorch}`."""
  name, fields, input_shape = model
  spec = ALGORITHMS[algo]
  num_classes, num_tasks = 10, 5
  optimizer = specs.OptimizerSpec(learning_rate=0.01)
  flax_model = jax_models.make_model(name, num_classes=num_classes, **fields)
  jstate = jax_ts.create_train_state(
    flax_model, optimizer, jax.random.PRNGKey(0), input_shape, num_classes
  )
  jalgo = jax_algorithms.build(spec, jax_algorithms.Context(input_shape, num_classes, num_tasks))
  jalgo_state = jalgo.init(jstate, jax.random.PRNGKey(1))
  jstate, jalgo_state = jalgo.begin_task(jstate, jalgo_state, 0)
  run_chunk = jax.jit(jax_train.run_chunk_fn(jalgo.step))
  jax_step = jax.jit(jalgo.step)

  tmodel = torch_models.make_model(name, input_shape, num_classes=num_classes, **fields)
  tmodel.load_state_dict(convert.flax_to_torch({'params': jstate.params, **jstate.model_state}))
  tstate = torch_ts.create_train_state(tmodel, optimizer, num_classes=num_classes, seed=0)
  talgo = torch_algorithms.build(
    spec, torch_algorithms.Context(input_shape, num_classes, num_tasks)
  )
  talgo_state = talgo.init(tstate)
  tstate, talgo_state = talgo.begin_task(tstate, talgo_state, 0)

  data = chunk(input_shape, batch_size, steps)
  jax_chunk = Batch(*map(jax.numpy.asarray, data))
  torch_chunk = torch_fit.to_tensors(data, tstate.device)

  def run_jax():
    nonlocal jstate, jalgo_state
    jstate, jalgo_state, metrics, _ = run_chunk(jstate, jalgo_state, jax_chunk)
    jax.block_until_ready((jstate, metrics))

  jax_batches = [Batch(*(a[k] for a in jax_chunk)) for k in range(steps)]

  def run_jax_loop():
    nonlocal jstate, jalgo_state
    for batch in jax_batches:
      jstate, jalgo_state, metrics = jax_step(jstate, batch, jalgo_state)
    jax.block_until_ready((jstate, metrics))

  def run_torch():
    nonlocal tstate, talgo_state
    tstate, talgo_state, _ = torch_fit.run_chunk(talgo, tstate, talgo_state, torch_chunk)

  runs = {'jax': run_jax, 'jax_loop': run_jax_loop, 'torch': run_torch}
  for fn in runs.values():  # compile / warm up
    fn()
  best = {name: np.inf for name in runs}
  for _ in range(repeats):
    for name, fn in runs.items():
      t0 = time.perf_counter()
      fn()
      best[name] = min(best[name], time.perf_counter() - t0)
  return {name: steps * batch_size / seconds for name, seconds in best.items()}


def main(argv):
  del argv
  threads = _THREADS.value or os.cpu_count()
  torch.set_num_threads(threads)
  available = rows()
  selected = _ROWS.value or list(available)
  print(
    f'PyTorch {torch.__version__} on {threads} threads; JAX {jax.__version__} '
    f'({jax.default_backend()}); {os.cpu_count()} cores; '
    f'load average at start {os.getloadavg()[0]:.1f}'
  )
  print(
    '| row | algorithm | model | B | JAX samples/s (scan) | JAX, step loop | PyTorch '
    'samples/s | JAX scan / PyTorch |'
  )
  print('|---|---|---|---|---|---|---|---|')
  for row in selected:
    algo, model, batch_size = available[row]
    if algo not in torch_algorithms.names():
      print(f'| {row} | {algo} | {model[0]} | {batch_size} | - | - | - | no PyTorch {algo} yet |')
      continue
    steps = _STEPS.value // (10 if algo == 'lamaml' else 5 if model[0] != 'mlp' else 1)
    steps = max(steps, 2)
    with torch_fit.denormals_flushed():  # as in a walk (and as XLA on the CPU)
      sps = bench_row(algo, model, batch_size, steps, _REPEATS.value)
    print(
      f'| {row} | {algo} | {model[0]} | {batch_size} | {sps["jax"]:,.0f} | '
      f'{sps["jax_loop"]:,.0f} | {sps["torch"]:,.0f} | {sps["jax"] / sps["torch"]:.2f} |',
      flush=True,
    )
  print(f'load average at end {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
  app.run(main)
