"""Accuracy of a PyTorch model on every task (`jcl.evaluation` for the PyTorch backend).

Predictions are the argmax (first maximum, as `jnp.argmax`) over the output
units of the state's `class_mask`; with a `[T, C]` task-class table, a second
count predicts among each sample's task classes (the task-incremental accuracy
of a class-incremental model).
"""

from __future__ import annotations

import numpy as np
import torch

from jcl.data import stream
from jcl.torch import train_state as ts_lib
from jcl.torch.algorithms.base import masked_logits


@torch.no_grad()
def split_accuracy(
  state: ts_lib.TrainState,
  split,
  *,
  batch_size: int = 1000,
  task_classes: torch.Tensor | None = None,
) -> tuple[float, float]:
  """`(accuracy, accuracy given the task)` (fractions) on a `TaskSplit`, eval mode."""
  device = state.device
  correct = correct_given_task = count = 0.0
  for chunk in stream.eval_chunks(split, batch_size=batch_size, chunk_steps=1):
    x, y, t, mask = (torch.from_numpy(a[0]).to(device) for a in chunk)
    logits, _ = ts_lib.apply_model(state, x, t, train=False)
    hit = lambda logits: float(torch.sum((torch.argmax(logits, -1) == y).float() * mask))
    correct += hit(masked_logits(logits, state.class_mask))
    if task_classes is not None:
      correct_given_task += hit(masked_logits(logits, task_classes[t.long()]))
    count += float(torch.sum(mask))
  if count == 0:
    raise ValueError('cannot evaluate on an empty split')
  return correct / count, correct_given_task / count


def evaluate_benchmark(
  state: ts_lib.TrainState, benchmark, split: str = 'test', batch_size: int = 1000
) -> tuple[np.ndarray, np.ndarray | None]:
  """Accuracy on every task of `benchmark` `[T]` (its 'test' or 'val' split),
  and for class-incremental streams the task-incremental accuracy."""
  splits = [task.val if split == 'val' else task.test for task in benchmark.tasks]
  if any(s is None for s in splits):
    raise ValueError("eval_split='val' needs a benchmark built with val_fraction > 0")
  table = (
    torch.as_tensor(benchmark.class_mask_table(), device=state.device)
    if benchmark.scenario == 'class'
    else None
  )
  pairs = np.array(
    [split_accuracy(state, s, batch_size=batch_size, task_classes=table) for s in splits]
  )
  return pairs[:, 0], (pairs[:, 1] if table is not None else None)
