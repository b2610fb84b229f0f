"""The PyTorch backend end to end against a hand-written PyTorch loop, in one process.

  python -m experiments.bench_torch --data=../shared/data/mnist
  python -m experiments.bench_torch --configs=naive,64 --configs=ewc,64 --tasks=2 --repeats=5

Each `--configs` entry is a protocol of `configs/bench.py` (`ALGORITHM,B`:
Permuted MNIST, MLP 784-256-256-10, SGD lr 0.01 momentum 0.9, one epoch a
task; naive, ewc with lambda 1 and the full-data Fisher, er with a memory of
500), run `--repeats` times two ways, alternately (which goes first
alternates too):

* jcl: the binary's path, `jcl.runs.run(config, workdir, backend='torch')`
  into a temporary workdir; training and evaluation samples/s are read from
  its results.json timings (training includes deriving each task's inputs
  and `end_task`; evaluation is the T + 1 evaluations of every task's test
  split, the first one of the untrained model);
* floor: a minimal hand-written loop of the same model on the same data:
  `nn.Sequential`, `torch.optim.SGD`, each task's inputs derived once through
  the data layer (`TaskSplit.x`) and batches indexed from them in the order
  of the jcl run; EWC adds its penalty to the loss and computes the exact
  empirical Fisher from one backward pass per batch (`(x^2).T @ delta^2`);
  ER samples 10 of a reservoir of 500 each step. Evaluation: the same T + 1
  evaluations, in batches of 1000.

Printed per protocol: the best samples/s of each way (training; its steps
alone, the upper quartile of the rates of its chunks of 500 steps; and
evaluation), the ratios jcl / floor (of the bests, and the median of the
per-repeat ratios) and the final average accuracy of each. On a shared
machine another process's burst slows whichever way runs then: compare the
ratios, over several repeats. PyTorch runs on `--threads` threads (default:
torch's own choice, as the binary).
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from configs import bench as bench_config
from jcl import callbacks
from jcl import runs
from jcl.run_spec import RunSpec

_CONFIGS = flags.DEFINE_multi_string(
  'configs', ['naive,64', 'ewc,64', 'er,10', 'naive,10'], 'Protocols `ALGORITHM,B`.'
)
_DATA = flags.DEFINE_string('data', '../shared/data/mnist', 'The MNIST IDX folder.')
_TASKS = flags.DEFINE_integer('tasks', 10, 'Tasks of Permuted MNIST.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Runs of each way (alternately).')
_THREADS = flags.DEFINE_integer('threads', None, "PyTorch threads (default: torch's).")
_OUT = flags.DEFINE_string('out', None, 'Appends one JSON line per protocol here.')

EWC_LAMBDA, MEMORY, REPLAY_BATCH, EVAL_BATCH, CHUNK_STEPS = 1.0, 500, 10, 1000, 500


def make_config(protocol: str):
  config = bench_config.get_config(protocol)
  config.benchmark.path = _DATA.value
  config.benchmark.num_tasks = _TASKS.value
  config.log.loggers = ('jsonl',)  # the binary's writers but the console
  return config


class ChunkClock(callbacks.Callback):
  """`(samples, seconds)` of each chunk of training steps: from the task's
  first step (its inputs derived) or the previous chunk's end to its end."""

  def __init__(self):
    self.chunks = []

  def on_task_begin(self, ctx):
    self._mark = time.perf_counter(), ctx.samples_seen

  def on_chunk_end(self, ctx):
    now, (then, seen) = time.perf_counter(), self._mark
    self.chunks.append((ctx.samples_seen - seen, now - then))
    self._mark = now, ctx.samples_seen


def run_jcl(protocol: str) -> dict:
  """The binary's torch path; its results.json timings."""
  clock = ChunkClock()
  with tempfile.TemporaryDirectory() as workdir:
    runs.run(make_config(protocol), workdir, backend='torch', extra_callbacks=[clock])
    with open(os.path.join(workdir, 'results.json')) as f:
      results = json.load(f)
  timings = results['timings']
  matrix = np.array(results['accuracy_matrix'], dtype=np.float64)
  return {
    'train_seconds': timings['train_seconds'],
    'chunks': clock.chunks,
    'eval_seconds': timings['eval_seconds'],
    'samples': timings['samples_seen'],
    'accuracy': float(np.mean(matrix[:, -1])),
  }


# ----------------------------------------------------------------------------- the floor


def floor_model(seed: int) -> nn.Sequential:
  torch.manual_seed(seed)
  return nn.Sequential(
    nn.Flatten(),
    nn.Linear(784, 256),
    nn.ReLU(),
    nn.Linear(256, 256),
    nn.ReLU(),
    nn.Linear(256, 10),
  )


def floor_fisher(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, batch: int = 256):
  """The empirical diagonal Fisher `1/N sum_n (d log p(y_n | x_n) / d theta)^2`,
  by layer: `(x^2).T @ delta^2` from one backward pass per batch."""
  sums = [torch.zeros_like(p) for p in model.parameters()]
  for begin in range(0, len(x), batch):
    h, inputs, outputs = x[begin : begin + batch].flatten(1), [], []
    for m in model:
      if isinstance(m, nn.Linear):
        inputs.append(h)
      h = m(h)
      if isinstance(m, nn.Linear):
        outputs.append(h)
    log_p = torch.log_softmax(h, -1).gather(1, y[begin : begin + batch, None]).sum()
    deltas = torch.autograd.grad(log_p, outputs)
    with torch.no_grad():
      for i, (a, d) in enumerate(zip(inputs, deltas)):
        sums[2 * i] += torch.square(d).T @ torch.square(a)
        sums[2 * i + 1] += torch.square(d).sum(0)
  return [s / len(x) for s in sums]


@torch.no_grad()
def floor_evaluate(model: nn.Module, benchmark) -> np.ndarray:
  """Accuracy on every task's test split (inputs derived for this evaluation)."""
  accuracies = []
  for task in benchmark.tasks:
    x, y = torch.from_numpy(task.test.x), torch.from_numpy(task.test.y).long()
    correct = 0
    for begin in range(0, len(x), EVAL_BATCH):
      logits = model(x[begin : begin + EVAL_BATCH])
      correct += int((logits.argmax(1) == y[begin : begin + EVAL_BATCH]).sum())
    accuracies.append(correct / len(x))
  return np.array(accuracies)


def run_floor(protocol: str, benchmark) -> dict:
  """The hand-written loop of `protocol` (see the module docstring)."""
  algorithm, batch_size = protocol.split(',')
  batch_size = int(batch_size)
  seed = 0
  model = floor_model(seed)
  params = list(model.parameters())
  optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
  importance = [torch.zeros_like(p) for p in params]
  anchor = [p.detach().clone() for p in params]
  memory_x = torch.zeros(MEMORY, 28, 28, 1)
  memory_y = torch.zeros(MEMORY, dtype=torch.int64)
  seen, reservoir = 0, np.random.default_rng(seed)
  train_seconds, eval_seconds, chunks = 0.0, 0.0, []
  samples = 0

  t0 = time.perf_counter()
  floor_evaluate(model, benchmark)
  eval_seconds += time.perf_counter() - t0
  for task in benchmark.tasks:
    t0 = time.perf_counter()
    split = task.train
    x, y = torch.from_numpy(split.x), torch.from_numpy(split.y).long()
    order = torch.from_numpy(np.random.default_rng([seed, task.id, 0]).permutation(len(x)))
    batches = order.split(batch_size)
    mark = time.perf_counter(), samples
    for step, idx in enumerate(batches):
      xb, yb = x[idx], y[idx]
      if algorithm == 'er' and seen:
        pick = torch.randint(min(seen, MEMORY), (REPLAY_BATCH,))
        inputs, labels = torch.cat([xb, memory_x[pick]]), torch.cat([yb, memory_y[pick]])
      else:
        inputs, labels = xb, yb
      loss = F.cross_entropy(model(inputs), labels)
      if algorithm == 'ewc' and task.id:
        penalty = sum(
          torch.sum(f * torch.square(p - a)) for f, p, a in zip(importance, params, anchor)
        )
        loss = loss + EWC_LAMBDA / 2 * penalty
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()
      if algorithm == 'er':  # reservoir sampling
        slots = np.arange(seen, seen + len(idx))
        slots = np.where(slots < MEMORY, slots, reservoir.integers(0, slots + 1))
        keep = np.flatnonzero(slots < MEMORY)
        memory_x[slots[keep]], memory_y[slots[keep]] = xb[keep], yb[keep]
        seen += len(idx)
      samples += len(idx)
      if (step + 1) % CHUNK_STEPS == 0 or step + 1 == len(batches):
        now, (then, before) = time.perf_counter(), mark
        chunks.append((samples - before, now - then))
        mark = now, samples
    if algorithm == 'ewc':  # separate penalties summed: one quadratic
      fisher = floor_fisher(model, x, y)
      with torch.no_grad():
        for f, p, i, a in zip(fisher, params, importance, anchor):
          total = i + f
          a.copy_(torch.where(total > 0, (i * a + f * p) / total.clamp_min(1e-30), p))
          i.copy_(total)
    train_seconds += time.perf_counter() - t0
    t0 = time.perf_counter()
    accuracy = floor_evaluate(model, benchmark)
    eval_seconds += time.perf_counter() - t0
  return {
    'train_seconds': train_seconds,
    'chunks': chunks,
    'eval_seconds': eval_seconds,
    'samples': samples,
    'accuracy': float(np.mean(accuracy)),
  }


# ----------------------------------------------------------------------------- the table


def summarize(protocol: str, records: dict[str, list[dict]], eval_samples: int) -> dict:
  """Samples/s of each run: training (all of it, and its steps alone: the
  upper quartile of the chunks' rates, which a burst of another process's
  work on a shared machine moves less) and evaluation; per way the best run,
  and the ratios jcl / floor."""

  def rates(way, what):
    if what == 'train':
      return np.array([r['samples'] / r['train_seconds'] for r in records[way]])
    if what == 'steps':
      return np.array([np.percentile([n / t for n, t in r['chunks']], 75) for r in records[way]])
    return np.array([eval_samples / r['eval_seconds'] for r in records[way]])

  out = {'protocol': protocol, 'threads': torch.get_num_threads(), 'tasks': _TASKS.value}
  for what in ('train', 'steps', 'eval'):
    jcl, floor = rates('jcl', what), rates('floor', what)
    out[what] = {
      'jcl': jcl.round(0).tolist(),
      'floor': floor.round(0).tolist(),
      'ratio_of_best': float(jcl.max() / floor.max()),
      'median_ratio': float(np.median(jcl / floor)),
    }
  out['accuracy'] = {way: records[way][-1]['accuracy'] for way in records}
  return out


def main(argv):
  del argv
  if _THREADS.value:
    torch.set_num_threads(_THREADS.value)
  runs.quiet_unless_asked()
  print(
    f'PyTorch {torch.__version__} on {torch.get_num_threads()} threads, {os.cpu_count()} cores, '
    f'{_TASKS.value} tasks, {_REPEATS.value} repeats; load average {os.getloadavg()[0]:.1f}'
  )
  print(
    '| protocol | train samples/s jcl, floor (best) | jcl / floor (best, median) '
    '| steps alone: jcl, floor | jcl / floor | eval samples/s jcl, floor | jcl / floor '
    '| accuracy jcl, floor |'
  )
  print('|---|---|---|---|---|---|---|---|')
  for protocol in _CONFIGS.value:
    benchmark = RunSpec.from_config(make_config(protocol)).build_benchmark()
    eval_samples = (len(benchmark.tasks) + 1) * sum(len(t.test) for t in benchmark.tasks)
    records = {'jcl': [], 'floor': []}
    for repeat in range(_REPEATS.value):  # who goes first alternates
      for way in ('jcl', 'floor')[:: 1 if repeat % 2 == 0 else -1]:
        run = run_jcl(protocol) if way == 'jcl' else run_floor(protocol, benchmark)
        records[way].append(run)
    row = summarize(protocol, records, eval_samples)
    cells = []
    for what in ('train', 'steps', 'eval'):
      r = row[what]
      cells += [
        f'{max(r["jcl"]):,.0f}, {max(r["floor"]):,.0f}',
        f'{r["ratio_of_best"]:.2f}, {r["median_ratio"]:.2f}',
      ]
    accuracy = f'{row["accuracy"]["jcl"]:.4f}, {row["accuracy"]["floor"]:.4f}'
    print(f'| {protocol} | ' + ' | '.join(cells) + f' | {accuracy} |', flush=True)
    if _OUT.value:
      with open(_OUT.value, 'a') as f:
        f.write(json.dumps(row) + '\n')
  print(f'load average at end {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
  app.run(main)
