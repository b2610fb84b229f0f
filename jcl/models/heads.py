"""Output heads shared by every model: single, multi-head and task-masked.

All models end with `TaskHead(..., name='head')`, which implements the three
usual output layouts of continual learning:

* `num_heads == 1, task_classes is None`: one Dense layer of `num_classes`
  units (class- and domain-incremental).
* `num_heads == H > 1`: multi-head task-incremental. ONE Dense layer of
  `H * num_classes` units whose output is reshaped to `[B, H, C]`; each sample
  reads the head of its task `t` (a gather, no per-sample branch).
* `task_classes` given: task-incremental on a single (or per-task) head by
  masking: logits outside the classes of the sample's task are set to
  `MASK_VALUE` (a large negative finite number, so softmax / cross-entropy and
  their gradients stay finite).

`mask_logits` is the same masking, exposed for losses (e.g. class-incremental
training that hides classes not seen yet).
"""

from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jcl.models import _checks
from jcl.models import initializers

# Value given to masked-out logits. Finite (never -inf) so that softmax,
# log-softmax and cross-entropy stay finite, yet small enough that a masked
# class gets exactly zero probability in float32.
MASK_VALUE = -1e9

TaskClasses = Optional[tuple[tuple[int, ...], ...]]


def _mask_value(dtype: Any) -> float:
  """`MASK_VALUE`, clipped so it stays finite in low-precision `dtype`."""
  return max(MASK_VALUE, float(jnp.finfo(dtype).min) / 2)


def mask_logits(logits: jax.Array, class_mask: jax.Array) -> jax.Array:
  """Sets the logits of masked-out classes to a large negative constant.

  Args:
    logits: `[B, C]` (or `[..., C]`) floating logits.
    class_mask: `[C]` or `[B, C]` boolean, True for the classes to keep
      (numeric 0/1 masks are accepted and cast to bool). Broadcast against
      `logits`.

  Returns:
    `[B, C]` logits equal to `logits` where `class_mask` is True and
    `MASK_VALUE` (-1e9; clipped to stay finite for float16) elsewhere.
  """
  logits = jnp.asarray(logits)
  class_mask = jnp.asarray(class_mask).astype(bool)
  fill = jnp.asarray(_mask_value(logits.dtype), logits.dtype)
  return jnp.where(class_mask, logits, fill)


def normalize_task_classes(task_classes: Any, num_classes: int, num_heads: int = 1) -> TaskClasses:
  """Validates `task_classes` and returns it as a tuple of tuples of ints.

  Args:
    task_classes: None, or a sequence over tasks of sequences of class ids
      (lists are accepted, e.g. from a config file).
    num_classes: number of classes `C` of each head; ids must be in [0, C).
    num_heads: number of heads `H`; when `H > 1`, `task_classes` must have
      exactly `H` entries (the classes to keep within each task's head).

  Returns:
    None, or the hashable `tuple[tuple[int, ...], ...]` form.

  Raises:
    ValueError: naming `task_classes` when it is malformed.
  """
  if task_classes is None:
    return None
  if (
    isinstance(task_classes, (str, bytes))
    or not isinstance(task_classes, Sequence)
    or not task_classes
  ):
    raise ValueError(
      'task_classes must be None or a non-empty sequence of '
      f'sequences of class ids, got {task_classes!r}.'
    )
  out = []
  for i, classes in enumerate(task_classes):
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or not classes:
      raise ValueError(
        f'task_classes[{i}] must be a non-empty sequence of class ids, got {classes!r}.'
      )
    for c in classes:
      if isinstance(c, bool) or not isinstance(c, numbers.Integral) or not 0 <= c < num_classes:
        raise ValueError(
          f'task_classes[{i}] holds {c!r}, not a class id in [0, num_classes={num_classes}).'
        )
    out.append(tuple(int(c) for c in classes))
  if num_heads > 1 and len(out) != num_heads:
    raise ValueError(
      f'task_classes has {len(out)} tasks but num_heads is '
      f'{num_heads}; with several heads they must be equal.'
    )
  return tuple(out)


def task_class_table(task_classes: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
  """Builds the `[T, C]` boolean table: `table[t, c]` iff class c is in task t.

  Args:
    task_classes: sequence over `T` tasks of class ids in `[0, num_classes)`.
    num_classes: number of classes `C`.

  Returns:
    `[T, C]` bool NumPy array (a constant when used inside a traced function).
  """
  table = np.zeros((len(task_classes), num_classes), dtype=bool)
  for i, classes in enumerate(task_classes):
    table[i, list(classes)] = True
  return table


def check_head_config(
  num_classes: int, num_heads: int, task_classes: Any
) -> tuple[int, int, TaskClasses]:
  """Validates the three head fields; returns them normalized.

  Raises:
    ValueError: naming the offending field.
  """
  num_classes = _checks.check_positive_int('num_classes', num_classes)
  num_heads = _checks.check_positive_int('num_heads', num_heads)
  task_classes = normalize_task_classes(task_classes, num_classes, num_heads)
  return num_classes, num_heads, task_classes


def normalize_head_fields(module: nn.Module) -> None:
  """Validates and normalizes a module's `num_classes`, `num_heads` and
  `task_classes` fields in place (call from `__post_init__`, before
  `super().__post_init__()`).

  Raises:
    ValueError: naming the offending field.
  """
  values = check_head_config(module.num_classes, module.num_heads, module.task_classes)
  for field, value in zip(('num_classes', 'num_heads', 'task_classes'), values):
    object.__setattr__(module, field, value)


class TaskHead(nn.Module):
  """Final layer of every model: single head, multi-head, or task-masked.

  Parameters: `kernel` `[F, num_heads * num_classes]` and `bias`
  `[num_heads * num_classes]` (the layout of one `nn.Dense`).

  Attributes:
    num_classes: number of classes `C` per head.
    num_heads: number of heads `H` (1 = a single shared head).
    task_classes: optional per-task class ids (tuple of tuples; lists are
      normalized). When given, logits of classes outside the sample's task are
      set to `MASK_VALUE`. With `H > 1` it must have `H` entries.
  """

  num_classes: int = 10
  num_heads: int = 1
  task_classes: TaskClasses = None

  def __post_init__(self):
    normalize_head_fields(self)
    super().__post_init__()

  @property
  def needs_task_ids(self) -> bool:
    """Whether the head reads `t` (multi-head or masked)."""
    return self.num_heads > 1 or self.task_classes is not None

  @nn.compact
  def __call__(self, features: jax.Array, t: Optional[jax.Array] = None) -> jax.Array:
    """Computes the logits of each sample's head.

    Args:
      features: `[B, F]` penultimate activations.
      t: `[B]` int 0-based task ids; required when `num_heads > 1` or
        `task_classes` is set, ignored otherwise. Ids outside `[0, num_heads)`
        with several heads give NaN logits (JAX's out-of-bounds gather fill),
        which makes such bugs visible; for the mask table, out-of-range ids
        are clamped (JAX's indexing rule).

    Returns:
      `[B, num_classes]` logits.
    """
    h, c = self.num_heads, self.num_classes
    kernel = self.param('kernel', initializers.DENSE_KERNEL_INIT, (features.shape[-1], h * c))
    bias = self.param('bias', initializers.BIAS_INIT, (h * c,))
    logits = jnp.dot(features, kernel) + bias  # [B, H * C]
    if self.needs_task_ids:
      if t is None:
        raise ValueError(
          'This head needs task ids t (num_heads > 1 or task_classes set), got t=None.'
        )
      t = jnp.asarray(t).astype(jnp.int32).reshape(-1)  # [B]
    if h > 1:
      per_head = logits.reshape(logits.shape[:-1] + (h, c))  # [B, H, C]
      logits = jnp.take_along_axis(per_head, t[:, None, None], axis=1)[:, 0]  # [B, C]
    if self.task_classes is not None:
      table = jnp.asarray(task_class_table(self.task_classes, c))  # [T, C]
      logits = mask_logits(logits, table[t])  # [B, C]
    return logits
