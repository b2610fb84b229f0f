"""Accuracy of a model on every task, with fixed-shape scanned eval chunks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jcl import train_state as ts_lib
from jcl.algorithms import base
from jcl.types import Batch


@jax.jit
def count_correct(
  train_state: ts_lib.TrainState, chunk: Batch, task_classes: jax.Array | None = None
) -> jax.Array:
  """Correct predictions and sample count over a chunk `[K, B, ...]`, eval mode.

  Predictions are the argmax over the output units allowed by the state's
  `class_mask` (class-incremental learning predicts among seen classes).
  With `task_classes` (`[T, C]` bool), a second count predicts among the
  classes of each sample's task only: task-incremental accuracy of a
  class-incremental model, as Mammoth reports it.

  Returns:
    `[3]`: correct, correct given the task (0 without `task_classes`), count.
  """

  def body(carry, batch):
    logits, _ = ts_lib.apply_model(train_state, train_state.params, batch.x, batch.t, train=False)
    hit = lambda logits: jnp.sum((jnp.argmax(logits, -1) == batch.y) * batch.mask)
    correct = hit(base.masked_logits(logits, train_state.class_mask))
    correct_given_task = (
      hit(base.masked_logits(logits, task_classes[batch.t])) if task_classes is not None else 0.0
    )
    return carry + jnp.stack([correct, correct_given_task, jnp.sum(batch.mask)]), None

  return jax.lax.scan(body, jnp.zeros((3,), jnp.float32), chunk)[0]


def split_accuracy(
  train_state: ts_lib.TrainState,
  split,
  *,
  batch_size: int = 1000,
  chunk_steps: int = 10,
  task_classes=None,
) -> tuple[float, float]:
  """`(accuracy, accuracy given the task)` (fractions) on a `TaskSplit`."""
  from jcl.data import stream  # local: keeps this module importable without the data layer

  totals = np.zeros(3)
  # No more scanned batches than the split fills (no all-padding batches).
  chunk_steps = max(
    1, min(chunk_steps, stream.num_batches(len(split), batch_size, drop_last=False))
  )
  for chunk in stream.eval_chunks(split, batch_size=batch_size, chunk_steps=chunk_steps):
    totals += np.asarray(count_correct(train_state, Batch(*map(jnp.asarray, chunk)), task_classes))
  if totals[2] == 0:
    raise ValueError('cannot evaluate on an empty split')
  return totals[0] / totals[2], totals[1] / totals[2]


def evaluate_tasks(
  train_state: ts_lib.TrainState, splits, *, task_classes=None, **kwargs
) -> tuple[np.ndarray, np.ndarray | None]:
  """Accuracy on each split `[len(splits)]`, and with `task_classes` the
  task-incremental accuracy on each (else None)."""
  pairs = np.array(
    [split_accuracy(train_state, s, task_classes=task_classes, **kwargs) for s in splits]
  )
  return pairs[:, 0], (pairs[:, 1] if task_classes is not None else None)


def task_table(benchmark) -> jax.Array | None:
  """`[T, C]` bool, the output units of each task, for class-incremental
  streams (their task-IL accuracy); None otherwise."""
  return jnp.asarray(benchmark.class_mask_table()) if benchmark.scenario == 'class' else None


def eval_chunks(benchmark, task_id: int, config) -> list[Batch]:
  """Task `task_id`'s evaluation split (`config.eval_split`) as host chunks of
  up to 10 batches of `config.eval_batch_size`, no more than the split fills."""
  from jcl.data import stream

  split = getattr(benchmark.tasks[task_id], config.eval_split)
  if split is None:
    raise ValueError("eval_split='val' needs a benchmark built with val_fraction > 0")
  steps = min(10, stream.num_batches(len(split), config.eval_batch_size))
  return list(stream.eval_chunks(split, batch_size=config.eval_batch_size, chunk_steps=steps))


def accuracies(counts, size: int, given_task: bool, fetch=np.asarray):
  """`(accuracy [R, T], accuracy given the task [R, T] or None)` from per task
  lists of per-chunk `[R, 3]` counts (`count_correct`), summed in float64."""
  totals = np.array([np.sum(np.asarray(fetch(c), np.float64), axis=0) for c in counts])[:, :size]
  if np.any(totals[..., 2] == 0):
    raise ValueError('cannot evaluate on an empty split')
  acc = (totals[..., 0] / totals[..., 2]).T
  return acc, ((totals[..., 1] / totals[..., 2]).T if given_task else None)


def evaluate_benchmark(
  train_state: ts_lib.TrainState, benchmark, split: str = 'test', batch_size: int = 1000
) -> tuple[np.ndarray, np.ndarray | None]:
  """Accuracy on every task of `benchmark` `[T]` (its 'test' or 'val' split);
  for class-incremental streams also the task-incremental accuracy
  (prediction among the sample's task classes). Predictions choose among the
  units of the state's `class_mask`."""
  splits = [task.val if split == 'val' else task.test for task in benchmark.tasks]
  if any(s is None for s in splits):
    raise ValueError("eval_split='val' needs a benchmark built with val_fraction > 0")
  table = jnp.asarray(benchmark.class_mask_table()) if benchmark.scenario == 'class' else None
  return evaluate_tasks(train_state, splits, task_classes=table, batch_size=batch_size)
