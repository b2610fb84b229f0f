"""The loop contract shared by both backends, free of JAX and PyTorch.

`jcl.train.fit` (JAX) and `jcl.torch.fit.fit` (PyTorch) walk a stream the
same way: the same `TrainConfig`, the same training data per task
(`training_split`, `subsample`), the same `FitResult` and its JSON, the same
`NonFiniteLossError`. Both modules re-export these names.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jcl.callbacks import nan_to_none
from jcl.data.benchmarks import Benchmark, TaskSplit, joint_task


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or infinite loss."""


@dataclasses.dataclass
class TrainConfig:
  """How `fit` walks the stream.

  Attributes:
    epochs: epochs per task (1 = single pass, online CL).
    batch_size: training batch size B.
    chunk_steps: batches per scanned chunk K (host Python runs once per chunk).
    drop_last: drop the last partial batch instead of padding it.
    eval_batch_size: evaluation batch size.
    eval_split: 'test' or 'val' (validation held out from the training set).
    end_task_batch_size: batch size of the task data handed to `end_task`.
    importance_samples: at most this many samples of the task go to
      `end_task` (e.g. for the Fisher), chosen with the seed; None = all.
    seed: data order (epochs are shuffled with `(seed, task, epoch)`).
    mask_unseen_classes: class-incremental training masks the output units
      of classes not seen yet (the common protocol); False trains on all
      units, as Mammoth and the DER paper do. Prediction always chooses
      among the classes seen so far.
  """
  epochs: int = 1
  batch_size: int = 10
  chunk_steps: int = 100
  drop_last: bool = False
  eval_batch_size: int = 1000
  eval_split: str = 'test'
  end_task_batch_size: int = 256
  importance_samples: int | None = None
  seed: int = 0
  mask_unseen_classes: bool = True

  def __post_init__(self):
    for name in ('epochs', 'batch_size', 'chunk_steps', 'eval_batch_size', 'end_task_batch_size'):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f'train: invalid {name!r}: must be an integer >= 1, got {value!r}')
    if self.eval_split not in ('test', 'val'):
      raise ValueError(f"train: invalid 'eval_split': must be 'test' or 'val', got {self.eval_split!r}")
    if self.importance_samples is not None and self.importance_samples < 1:
      raise ValueError("train: invalid 'importance_samples': must be None or >= 1")


@dataclasses.dataclass
class FitResult:
  """What `fit` returns on either backend (the states are the backend's own)."""
  train_state: Any
  algo_state: Any
  accuracy_matrix: np.ndarray    # R[i, j]: accuracy on task i after training task j (fractions)
  initial_accuracy: np.ndarray   # [T] accuracy of the untrained model
  summary: dict[str, float]      # ACC, BWT, FWT, forgetting, ... (fractions)
  history: list[dict[str, Any]]  # per-chunk mean metrics
  timings: dict[str, float]
  # Class-incremental runs: the same matrix with predictions restricted to
  # each sample's task classes (task-incremental accuracy); else None.
  task_il_accuracy_matrix: np.ndarray | None = None

  def to_json(self) -> dict[str, Any]:
    extra = {}
    if self.task_il_accuracy_matrix is not None:
      extra['task_il_accuracy_matrix'] = nan_to_none(self.task_il_accuracy_matrix.tolist())
    return {
        **extra,
        'accuracy_matrix': nan_to_none(self.accuracy_matrix.tolist()),
        'initial_accuracy': self.initial_accuracy.tolist(),
        'summary': self.summary,
        'timings': self.timings,
        'history': self.history,
    }


def training_split(benchmark: Benchmark, task_id: int, cumulative: bool) -> TaskSplit:
  """The data task `task_id` trains on: its own, or tasks 0..k for Joint."""
  return joint_task(benchmark, task_id) if cumulative else benchmark.tasks[task_id].train


def subsample(split: TaskSplit, max_samples: int | None, rng: np.random.Generator) -> TaskSplit:
  if max_samples is None or len(split) <= max_samples:
    return split
  idx = np.sort(rng.choice(len(split), max_samples, replace=False))
  return TaskSplit(x=split.x[idx], y=split.y[idx], t=split.t[idx])
