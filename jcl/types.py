"""Framework-free containers shared by the data layer and both backends.

Imports nothing but the standard library, so `jcl.data` (NumPy) and the
JAX/PyTorch backends can all use the same names.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Batch(NamedTuple):
  """One mini-batch, or a stack of them (a chunk) with leading axes `[K, B]`.

  Attributes:
    x: inputs, `[B, *input_shape]` float32 (a chunk: `[K, B, *input_shape]`).
    y: integer labels, `[B]` int32.
    t: 0-based task ids, `[B]` int32.
    mask: `[B]` float32, 1 for a real sample and 0 for padding. A batch whose
      mask is all 0 is a padding step: the training loop skips it.
  """

  x: Any
  y: Any
  t: Any
  mask: Any


class Context(NamedTuple):
  """What an algorithm may need to know of the stream to size its state (both
  backends: `jcl.algorithms.Context` and `jcl.torch.algorithms.Context` are this).

  Attributes:
    input_shape: one example's shape, e.g. `(28, 28, 1)`.
    num_classes: width of the model output.
    num_tasks: tasks in the stream (per-task memories are sized by it).
  """

  input_shape: tuple[int, ...]
  num_classes: int
  num_tasks: int

  @classmethod
  def of(cls, benchmark: Any, num_tasks: int | None = None) -> 'Context':
    """The context of a `jcl.data.Benchmark` (`num_tasks`: a capacity of more tasks)."""
    return cls(
      tuple(benchmark.input_shape),
      benchmark.num_classes,
      benchmark.num_tasks if num_tasks is None else num_tasks,
    )
