"""Small convolutional network for 28x28 (MNIST-like) and 32x32 (CIFAR-like)."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from jcl.models import _checks
from jcl.models import conv
from jcl.models import heads
from jcl.models import initializers


class CNN(nn.Module):
  """`[Conv 3x3 (SAME), ReLU, MaxPool 2x2] * len(channels)`, Dense, ReLU, head.

  With the defaults: conv 32 -> pool -> conv 64 -> pool -> dense 256 -> head;
  a 28x28 input gives 7x7x64 = 3136 flattened units, a 32x32 input 4096.

  Parameters: `Conv_0 ... Conv_{K-1}`, `Dense_0`, `head`.

  Attributes:
    channels: output channels of the conv blocks.
    hidden: width of the dense layer before the head (feature size).
    num_classes: classes per head `C`.
    num_heads: number of task heads `H` (see `heads.TaskHead`).
    task_classes: optional per-task class ids for masking (see
      `heads.TaskHead`).
    dropout: dropout rate in [0, 1) applied to the flattened conv output and
      to the dense features, only when `train=True` (rng name 'dropout').
  """

  channels: Sequence[int] = (32, 64)
  hidden: int = 256
  num_classes: int = 10
  num_heads: int = 1
  task_classes: heads.TaskClasses = None
  dropout: float = 0.0

  def __post_init__(self):
    object.__setattr__(
      self, 'channels', _checks.check_positive_ints('channels', self.channels, allow_empty=False)
    )
    object.__setattr__(self, 'hidden', _checks.check_positive_int('hidden', self.hidden))
    heads.normalize_head_fields(self)
    object.__setattr__(self, 'dropout', _checks.check_rate('dropout', self.dropout))
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
      x: `[B, H, W, C]` float images (NHWC), e.g. `[B, 28, 28, 1]`.
      t: `[B]` int32 0-based task ids (only read by multi-head / masked heads).
      train: enables dropout (needs a 'dropout' rng when `dropout > 0`).
      return_features: also return the penultimate activations.

    Returns:
      logits `[B, num_classes]`, or `(logits, features)` with features
      `[B, hidden]`.
    """
    if x.ndim != 4:
      raise ValueError(f'CNN expects [B, H, W, C] inputs, got shape {x.shape}.')
    h = x
    for i, ch in enumerate(self.channels):
      h = nn.Conv(
        ch,
        (3, 3),
        padding='SAME',
        conv_general_dilated=conv.conv_general_dilated,
        kernel_init=initializers.CONV_KERNEL_INIT,
        bias_init=initializers.BIAS_INIT,
        name=f'Conv_{i}',
      )(h)
      h = nn.relu(h)
      h = nn.max_pool(h, (2, 2), strides=(2, 2))  # [B, H/2, W/2, ch]
    h = jnp.reshape(h, (h.shape[0], -1))  # [B, H' * W' * channels[-1]]
    if self.dropout > 0.0:
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.Dense(
      self.hidden,
      kernel_init=initializers.DENSE_KERNEL_INIT,
      bias_init=initializers.BIAS_INIT,
      name='Dense_0',
    )(h)
    h = nn.relu(h)  # [B, hidden]
    if self.dropout > 0.0:
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
    logits = heads.TaskHead(self.num_classes, self.num_heads, self.task_classes, name='head')(h, t)
    if return_features:
      return logits, h
    return logits
