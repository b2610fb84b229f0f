"""Accuracy of a model on every task, with fixed-shape scanned chunks of staged splits."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jcl import inputs
from jcl import parallel
from jcl import train_state as ts_lib
from jcl.algorithms import base
from jcl.data import stream
from jcl.types import Batch


@functools.partial(jax.jit, static_argnames='mesh')
def count_correct(
  train_state: ts_lib.TrainState,
  data: Batch,
  idx: jax.Array,
  mask: jax.Array,
  task_classes: jax.Array | None = None,
  mesh: jax.sharding.Mesh | None = None,
) -> jax.Array:
  """Correct predictions and sample count over the rows `idx [K, B]` (with
  `mask`) of a split staged on the device (`data`, `jcl.inputs.stage`), eval mode.

  Predictions are the argmax over the output units allowed by the state's
  `class_mask` (class-incremental learning predicts among seen classes).
  With `task_classes` (`[T, C]` bool), a second count predicts among the
  classes of each sample's task only: task-incremental accuracy of a
  class-incremental model, as Mammoth reports it. With a `mesh`, each
  batch is split over its 'data' axis (`jcl.parallel`).

  Returns:
    `[3]`: correct, correct given the task (0 without `task_classes`), count.
  """

  def body(carry, rows_and_mask):
    batch = parallel.shard_batch(inputs.take_rows(data, *rows_and_mask), mesh)
    logits, _ = ts_lib.apply_model(train_state, train_state.params, batch.x, batch.t, train=False)
    hit = lambda logits: jnp.sum((jnp.argmax(logits, -1) == batch.y) * batch.mask)
    correct = hit(base.masked_logits(logits, train_state.class_mask))
    correct_given_task = (
      hit(base.masked_logits(logits, task_classes[batch.t])) if task_classes is not None else 0.0
    )
    return carry + jnp.stack([correct, correct_given_task, jnp.sum(batch.mask)]), None

  return jax.lax.scan(body, jnp.zeros((3,), jnp.float32), (idx, mask))[0]


def task_table(benchmark) -> jax.Array | None:
  """`[T, C]` bool, the output units of each task, for class-incremental
  streams (their task-IL accuracy); None otherwise."""
  return jnp.asarray(benchmark.class_mask_table()) if benchmark.scenario == 'class' else None


def eval_index_chunks(
  benchmark, task_id: int, split: str = 'test', batch_size: int = 1000
) -> tuple[Any, list[stream.IndexChunk]]:
  """Task `task_id`'s evaluation split ('test' or 'val') and its rows in
  order as index chunks of up to 10 batches of `batch_size`, no more than
  the split fills."""
  samples = getattr(benchmark.tasks[task_id], split)
  if samples is None:
    raise ValueError("eval_split='val' needs a benchmark built with val_fraction > 0")
  steps = min(10, stream.num_batches(len(samples), batch_size))
  chunks = stream.epoch_index_chunks(
    len(samples), batch_size=batch_size, chunk_steps=steps, rng=None
  )
  return samples, list(chunks)


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
  table = task_table(benchmark)
  counts = []
  for task in range(benchmark.num_tasks):
    samples, chunks = eval_index_chunks(benchmark, task, split, batch_size)
    source = jax.device_put(inputs.stored_images(samples.images, samples.view))
    data = inputs.stage_split(samples, source)
    counts.append([count_correct(train_state, data, c.idx, c.mask, table)[None] for c in chunks])
  accuracy, given_task = accuracies(counts, 1, table is not None)
  return accuracy[0], None if given_task is None else given_task[0]
