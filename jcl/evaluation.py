"""Accuracy of a model on every task, with fixed-shape scanned eval chunks."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jcl import train_state as ts_lib
from jcl.algorithms import base
from jcl.types import Batch


@jax.jit
def count_correct(train_state: ts_lib.TrainState, chunk: Batch) -> tuple[jax.Array, jax.Array]:
  """`(correct, count)` over a chunk `[K, B, ...]` in evaluation mode.

  Predictions are the argmax over the output units allowed by the state's
  `class_mask` (class-incremental learning predicts among seen classes).
  """

  def body(carry, batch):
    logits, _ = ts_lib.apply_model(train_state, train_state.params, batch.x, batch.t, train=False)
    logits = base.masked_logits(logits, train_state.class_mask)
    correct = jnp.sum((jnp.argmax(logits, -1) == batch.y) * batch.mask)
    return (carry[0] + correct, carry[1] + jnp.sum(batch.mask)), None

  zero = jnp.zeros((), jnp.float32)
  return jax.lax.scan(body, (zero, zero), chunk)[0]


def split_accuracy(train_state: ts_lib.TrainState, split, *, batch_size: int = 1000,
                   chunk_steps: int = 10) -> float:
  """Accuracy (a fraction) on a `TaskSplit`."""
  from jcl.data import stream  # local: keeps this module importable without the data layer
  correct = total = 0.0
  for chunk in stream.eval_chunks(split, batch_size=batch_size, chunk_steps=chunk_steps):
    c, n = count_correct(train_state, Batch(*map(jnp.asarray, chunk)))
    correct += float(c)
    total += float(n)
  if total == 0:
    raise ValueError('cannot evaluate on an empty split')
  return correct / total


def evaluate_tasks(train_state: ts_lib.TrainState, splits, **kwargs) -> np.ndarray:
  """Accuracy on each split, `[len(splits)]`."""
  return np.array([split_accuracy(train_state, s, **kwargs) for s in splits])
