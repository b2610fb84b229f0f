"""The PyTorch executor of the walk (`jcl.loop.walk`), and `fit`.

The walk is the one of the JAX backend: the same chunks `[K, B, ...]` in
the same order (`np.random.default_rng([seed, task, epoch])`), the same
`end_task` data (subsampled with `[seed, task, 2^20]`), the same evaluation
of every task after each one, the same callbacks, checkpoints and
`FitResult`. Here a chunk is gathered on the host and its batches are
stepped one by one (all-padding ones skipped), the states updated in place.

Dropout draws from torch's generator, seeded with `config.seed` for the
run (`seeded`; the caller's generator state is restored afterwards). With a
`checkpoint` (`jcl.callbacks.CheckpointCallback` over a
`jcl.torch.checkpoint.Checkpointer`) the run resumes from the newest
checkpoint exactly where it stopped, generator state included.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Sequence

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
  'TorchExecutor',
  'TrainConfig',
  'fit',
  'seeded',
  'subsample',
  'task_data',
  'training_split',
]


def to_tensors(batch: Batch, device) -> Batch:
  return Batch(*(torch.from_numpy(np.asarray(a)).to(device) for a in batch))


def task_data(split: TaskSplit, batch_size: int, device=None) -> Batch:
  """A whole split as one padded chunk `[K, B, ...]` of tensors (for `end_task`)."""
  return to_tensors(stream.gather(split, stream.subset_index_chunk(len(split), batch_size)), device)


def run_chunk(algorithm: Algorithm, train_state: TrainState, algo_state: Any, chunk: Batch):
  """`step` over the K batches of `chunk` (tensors `[K, B, ...]`), skipping
  all-padding ones; returns the states and the mean metrics of the real steps."""
  valid = (chunk.mask.sum(1) > 0).tolist()
  per_step = []
  for k, real in enumerate(valid):
    if real:
      batch = Batch(chunk.x[k], chunk.y[k], chunk.t[k], chunk.mask[k])
      train_state, algo_state, metrics = algorithm.step(train_state, batch, algo_state)
      per_step.append(metrics)
  if not per_step:
    return train_state, algo_state, {}
  means = {
    name: float(torch.stack([m[name].float() for m in per_step]).mean()) for name in per_step[0]
  }
  return train_state, algo_state, means


@contextlib.contextmanager
def seeded(seed: int, device):
  """Torch's generator seeded with `seed` inside, restored to the caller's after."""
  devices = [] if torch.device(device).type == 'cpu' else [device]
  with torch.random.fork_rng(devices=devices):
    torch.manual_seed(seed)
    yield


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
    self._split: TaskSplit | None = None

  def place_task(self, task_id: int, splits: Sequence[TaskSplit]) -> None:
    del task_id
    self._split = splits[0]

  def begin_task(self, states, task_id: int, class_mask: np.ndarray):
    train_state, algo_state = states
    train_state.class_mask = torch.as_tensor(class_mask, dtype=torch.bool, device=self.device)
    return self.algorithm.begin_task(train_state, algo_state, task_id)

  def run_chunk(self, states, chunks):
    (chunk,) = chunks
    train_state, algo_state, means = run_chunk(
      self.algorithm, *states, to_tensors(stream.gather(self._split, chunk), self.device)
    )
    return (train_state, algo_state), (means, train_state.step)

  def chunk_result(self, pending) -> loop.ChunkResult:
    means, step = pending
    return loop.ChunkResult([means], [int(step)])

  def end_task(self, states, splits, chunks):
    data = None
    if chunks is not None:
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
  with seeded(config.seed, train_state.device):
    if algo_state is None:
      algo_state = algorithm.init(train_state)
    ctx = loop.walk(executor, stream_, callbacks, train_state, algo_state)
  return FitResult.from_context(ctx)
