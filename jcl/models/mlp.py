"""Multi-layer perceptron (the usual model of Permuted / Split MNIST)."""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from jcl.models import _checks
from jcl.models import heads
from jcl.models import initializers

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  'relu': nn.relu,
  'tanh': jnp.tanh,
  'sigmoid': nn.sigmoid,
  'gelu': nn.gelu,
  'elu': nn.elu,
  'silu': nn.silu,
  'leaky_relu': nn.leaky_relu,
}


def check_activation(activation: str) -> str:
  """Returns `activation` if it names an entry of `ACTIVATIONS`."""
  if not isinstance(activation, str) or activation not in ACTIVATIONS:
    raise ValueError(f'activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}.')
  return activation


class MLP(nn.Module):
  """Fully-connected network: flatten, `[Dense, activation, Dropout] * L`, head.

  Parameters: `Dense_0 ... Dense_{L-1}` (hidden layers) and `head`.

  Attributes:
    widths: hidden layer widths (may be empty: a linear model on the flattened
      input).
    num_classes: classes per head `C`.
    num_heads: number of task heads `H` (see `heads.TaskHead`).
    task_classes: optional per-task class ids for masking (see
      `heads.TaskHead`).
    dropout: dropout rate in [0, 1) after each hidden activation, applied only
      when `train=True` (rng name 'dropout').
    activation: name of the hidden activation, a key of `ACTIVATIONS`.
  """

  widths: Sequence[int] = (100, 100)
  num_classes: int = 10
  num_heads: int = 1
  task_classes: heads.TaskClasses = None
  dropout: float = 0.0
  activation: str = 'relu'

  def __post_init__(self):
    object.__setattr__(self, 'widths', _checks.check_positive_ints('widths', self.widths))
    heads.normalize_head_fields(self)
    object.__setattr__(self, 'dropout', _checks.check_rate('dropout', self.dropout))
    check_activation(self.activation)
    super().__post_init__()

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    t: Optional[jax.Array] = None,
    *,
    train: bool = False,
    return_features: bool = False,
  ) -> Union[jax.Array, tuple[jax.Array, jax.Array]]:
    """Applies the network.

    Args:
      x: `[B, *input_shape]` float inputs (e.g. `[B, 28, 28, 1]` or `[B, D]`),
        flattened to `[B, D]`.
      t: `[B]` int32 0-based task ids (only read by multi-head / masked heads).
      train: enables dropout (needs a 'dropout' rng when `dropout > 0`).
      return_features: also return the penultimate activations.

    Returns:
      logits `[B, num_classes]`, or `(logits, features)` with features
      `[B, widths[-1]]` (the head's input; `[B, D]` when `widths` is empty).
    """
    act = ACTIVATIONS[self.activation]
    h = jnp.reshape(x, (x.shape[0], -1))  # [B, D]
    for i, width in enumerate(self.widths):
      h = nn.Dense(
        width,
        kernel_init=initializers.DENSE_KERNEL_INIT,
        bias_init=initializers.BIAS_INIT,
        name=f'Dense_{i}',
      )(h)
      h = act(h)  # [B, width]
      if self.dropout > 0.0:
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
    logits = heads.TaskHead(self.num_classes, self.num_heads, self.task_classes, name='head')(h, t)
    if return_features:
      return logits, h
    return logits
