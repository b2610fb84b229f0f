"""The PyTorch executor of the walk (`jcl.loop.walk`), and `fit`.

The walk is the one of the JAX backend: the same chunks `[K, B, ...]` in
the same order (`np.random.default_rng([seed, task, epoch])`), the same
`end_task` data (subsampled with `[seed, task, 2^20]`), the same evaluation
of every task after each one, the same callbacks, checkpoints and
`FitResult`. Here the current task's training split is derived once, when
the task is placed (`Staged`: its inputs as one tensor, freed at the next
task; a cumulative split, Joint's, is derived chunk by chunk instead), and
each batch of a chunk is gathered from it and stepped in turn (all-padding
ones skipped), the states updated in place.

Dropout draws from torch's generator, seeded with `config.seed` for the
run, and denormal floats are flushed to zero as XLA does on the CPU
(`walk_environment`; the caller's generator state and mode are restored
afterwards). With a `checkpoint` (`jcl.callbacks.CheckpointCallback` over a
`jcl.torch.checkpoint.Checkpointer`) the run resumes from the newest
checkpoint exactly where it stopped, generator state included.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import torch

from jcl import callbacks as callbacks_lib
from jcl import loop
from jcl.data import stream
from jcl.data.benchmarks import Benchmark, TaskSplit
from jcl.loop import FitResult, NonFiniteLossError, TrainConfig, subsample, training_split
from jcl.torch import evaluation
from jcl.torch.algorithms.base import Algorithm
from jcl.torch.train_state import TrainState
from jcl.types import Batch

__all__ = [
  'FitResult',
  'NonFiniteLossError',
  'Staged',
  'TorchExecutor',
  'TrainConfig',
  'chunk_batches',
  'denormals_flushed',
  'fit',
  'run_chunk',
  'run_steps',
  'seeded',
  'subsample',
  'task_data',
  'training_split',
  'walk_environment',
]


def to_tensors(batch: Batch, device) -> Batch:
  return Batch(*(torch.from_numpy(np.asarray(a)).to(device) for a in batch))


def task_data(split: TaskSplit, batch_size: int, device=None) -> Batch:
  """A whole split as one padded chunk `[K, B, ...]` of tensors (for `end_task`)."""
  return to_tensors(stream.gather(split, stream.subset_index_chunk(len(split), batch_size)), device)


class Staged(NamedTuple):
  """A split's samples as tensors, rows `0..n-1`, then all-zero padding rows
  (label 0, task 0) from row `n` on, so that an `IndexChunk`'s padding index
  `n` reads a padding sample (the samples of `stream.gather`).

  Attributes:
    x: float32 `[n + padding, ...]` model inputs.
    y: int32 `[n + padding]` labels.
    t: int32 `[n + padding]` task ids.
    n: the split's length.
  """

  x: torch.Tensor
  y: torch.Tensor
  t: torch.Tensor
  n: int

  @classmethod
  def of(cls, split: TaskSplit, device, padding: int = 1) -> 'Staged':
    """`split`'s inputs derived once (`TaskSplit.inputs`), with `padding >= 1` zero rows."""
    n = len(split)
    rows = np.arange(n + padding)
    pad = lambda a: np.concatenate([np.asarray(a, np.int32), np.zeros(padding, np.int32)])
    return cls(
      *(torch.from_numpy(a).to(device) for a in (split.inputs(rows), pad(split.y), pad(split.t))),
      n,
    )

  def batches(self, chunk: stream.IndexChunk) -> Iterator[Batch]:
    """The batches `[B, ...]` of `chunk` with a real sample, in order."""
    device = self.x.device
    idx = torch.from_numpy(chunk.idx.astype(np.int64)).to(device)
    ys, ts, masks = self.y[idx], self.t[idx], torch.from_numpy(chunk.mask).to(device)
    for k in np.flatnonzero(chunk.mask.any(axis=1)).tolist():
      yield Batch(self.x.index_select(0, idx[k]), ys[k], ts[k], masks[k])

  def chunk(self, chunk: stream.IndexChunk) -> Batch:
    """All of `chunk` as one Batch `[K, B, ...]` (the rows of `stream.gather`);
    a view of `x` when the chunk is rows `0..n-1` in order, then padding."""
    k, b = chunk.idx.shape
    flat = chunk.idx.reshape(-1)
    device = self.x.device
    mask = torch.from_numpy(chunk.mask).to(device)
    if k * b <= len(self.x) and np.array_equal(flat, np.minimum(np.arange(k * b), self.n)):
      return Batch(
        self.x[: k * b].reshape(k, b, *self.x.shape[1:]),
        self.y[: k * b].reshape(k, b),
        self.t[: k * b].reshape(k, b),
        mask,
      )
    idx = torch.from_numpy(flat.astype(np.int64)).to(device)
    return Batch(
      self.x.index_select(0, idx).reshape(k, b, *self.x.shape[1:]),
      self.y[idx].reshape(k, b),
      self.t[idx].reshape(k, b),
      mask,
    )


def run_steps(algorithm: Algorithm, train_state: TrainState, algo_state: Any, batches):
  """`step` over `batches` (`Batch`es of tensors `[B, ...]`) in turn; returns
  the states and the mean metrics of the steps (`{}` without any)."""
  per_step = []
  for batch in batches:
    train_state, algo_state, metrics = algorithm.step(train_state, batch, algo_state)
    per_step.append(metrics)
  if not per_step:
    return train_state, algo_state, {}
  means = {
    name: float(torch.stack([m[name].float() for m in per_step]).mean()) for name in per_step[0]
  }
  return train_state, algo_state, means


def chunk_batches(chunk: Batch) -> Iterator[Batch]:
  """The batches `[B, ...]` of `chunk` (tensors `[K, B, ...]`) with a real sample, in order."""
  for k, real in enumerate((chunk.mask.sum(1) > 0).tolist()):
    if real:
      yield Batch(chunk.x[k], chunk.y[k], chunk.t[k], chunk.mask[k])


def run_chunk(algorithm: Algorithm, train_state: TrainState, algo_state: Any, chunk: Batch):
  """`step` over the K batches of `chunk` (tensors `[K, B, ...]`), skipping
  all-padding ones; returns the states and the mean metrics of the real steps."""
  return run_steps(algorithm, train_state, algo_state, chunk_batches(chunk))


@contextlib.contextmanager
def seeded(seed: int, device):
  """Torch's generator seeded with `seed` inside, restored to the caller's after."""
  devices = [] if torch.device(device).type == 'cpu' else [device]
  with torch.random.fork_rng(devices=devices):
    torch.manual_seed(seed)
    yield


@contextlib.contextmanager
def denormals_flushed():
  """Denormal floats flushed to zero inside (the CPU's flush-to-zero and
  denormals-are-zero modes, under which XLA runs on the CPU), the caller's
  mode after. Values that underflow into denormals (tiny probabilities,
  gradients, importances) otherwise make a CPU's matmuls several times slower."""
  flushing = float(torch.tensor(1e-38) * 0.5) == 0.0  # torch has no getter
  torch.set_flush_denormal(True)
  try:
    yield
  finally:
    torch.set_flush_denormal(flushing)


@contextlib.contextmanager
def walk_environment(seed: int, device):
  """What a walk runs under: `seeded(seed, device)` and `denormals_flushed()`."""
  with seeded(seed, device), denormals_flushed():
    yield


def refuse_data_parallel(config: TrainConfig) -> None:
  """A `ValueError` for `data_parallel` > 1: PyTorch runs train on one device."""
  wanted = getattr(config, 'data_parallel', 1)
  if wanted not in (0, 1):
    raise ValueError(
      f"train: invalid 'data_parallel': {wanted}; the torch backend trains on "
      "one device (splitting the batch over several is the JAX backend's, jcl.parallel)"
    )


class TorchExecutor:
  """Runs one replica's walk on PyTorch (see `jcl.loop.Executor`)."""

  num_replicas = 1
  asynchronous = False
  compile_seconds = 0.0

  def __init__(self, algorithm: Algorithm, benchmark: Benchmark, config: TrainConfig, device):
    self.algorithm, self.benchmark, self.config, self.device = (
      algorithm,
      benchmark,
      config,
      device,
    )
    refuse_data_parallel(config)
    self._split: TaskSplit | None = None
    self._staged: Staged | None = None

  def place_task(self, task_id: int, splits: Sequence[TaskSplit]) -> None:
    self._split = splits[0]
    self._staged = None  # the previous task's inputs go before this task's are derived
    if self._split is self.benchmark.tasks[task_id].train:
      # One task's inputs, derived once. Padding rows up to whole `end_task`
      # batches: its data is then a view.
      padding = -len(self._split) % self.config.end_task_batch_size or 1
      self._staged = Staged.of(self._split, self.device, padding)
    # Else a cumulative split (Joint's), whose inputs grow with the task:
    # each chunk derives its own rows only.

  def begin_task(self, states, task_id: int, class_mask: np.ndarray):
    train_state, algo_state = states
    train_state.class_mask = torch.as_tensor(class_mask, dtype=torch.bool, device=self.device)
    return self.algorithm.begin_task(train_state, algo_state, task_id)

  def run_chunk(self, states, chunks):
    (chunk,) = chunks
    if self._staged is not None:
      batches = self._staged.batches(chunk)
    else:
      batches = chunk_batches(to_tensors(stream.gather(self._split, chunk), self.device))
    train_state, algo_state, means = run_steps(self.algorithm, *states, batches)
    return (train_state, algo_state), (means, train_state.step)

  def chunk_result(self, pending) -> loop.ChunkResult:
    means, step = pending
    return loop.ChunkResult([means], [int(step)])

  def end_task(self, states, splits, chunks):
    data = None
    if chunks is not None:
      if self._staged is not None and splits[0] is self._split:
        data = self._staged.chunk(chunks[0])
      else:
        data = to_tensors(stream.gather(splits[0], chunks[0]), self.device)
    return self.algorithm.end_task(*states, data)

  def evaluate(self, states, class_mask):
    train_state = states[0]
    if class_mask is not None:
      train_state = train_state.replace(
        class_mask=torch.as_tensor(class_mask, dtype=torch.bool, device=self.device)
      )
    accuracy, given_task = evaluation.evaluate_benchmark(
      train_state, self.benchmark, self.config.eval_split, self.config.eval_batch_size
    )
    return accuracy[None], None if given_task is None else given_task[None]


def fit(
  algorithm: Algorithm,
  train_state: TrainState,
  benchmark: Benchmark,
  config: TrainConfig | None = None,
  *,
  algo_state: Any = None,
  callbacks: Sequence[callbacks_lib.Callback] = (),
  cumulative_data: bool | None = None,
  evaluate: bool = True,
  checkpoint: callbacks_lib.CheckpointCallback | None = None,
) -> FitResult:
  """Trains `algorithm` on every task of `benchmark` in order (`jcl.train.fit`'s contract).

  Args:
    algorithm: a `jcl.torch.algorithms.Algorithm`.
    train_state: the initial `jcl.torch.train_state.TrainState` (updated in place).
    benchmark: a `jcl.data.Benchmark`.
    config: the loop's `TrainConfig` (the same class as `jcl.train`'s).
    algo_state: the algorithm's initial state (default `algorithm.init`).
    callbacks: `jcl.callbacks.Callback`s called at fit/task/epoch/chunk boundaries,
      after the evaluation and before the checkpoint.
    cumulative_data: train task k on tasks 0..k (default: the spec's, True for Joint).
    evaluate: fill the accuracy matrix (an `EvaluationCallback` first).
    checkpoint: a `CheckpointCallback` over a `jcl.torch.checkpoint.Checkpointer`,
      run last. When its directory holds a checkpoint, `fit` resumes from the
      newest readable one exactly where it stopped.

  Raises:
    NonFiniteLossError: a chunk produced a NaN/inf metric (the context so far
      is in the exception's `context`).
  """
  config = config or TrainConfig()
  stream_ = loop.Stream.single(benchmark, config, algorithm.spec)
  if cumulative_data is not None:
    stream_ = dataclasses.replace(stream_, cumulative_data=cumulative_data)
  callbacks = callbacks_lib.in_run_order(callbacks, evaluate=evaluate, checkpoint=checkpoint)
  executor = TorchExecutor(algorithm, benchmark, config, train_state.device)
  with walk_environment(config.seed, train_state.device):
    if algo_state is None:
      algo_state = algorithm.init(train_state)
    ctx = loop.walk(executor, stream_, callbacks, train_state, algo_state)
  return FitResult.from_context(ctx)
