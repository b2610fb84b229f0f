"""Reduced ResNet-18 of GEM / A-GEM / DER (Mammoth's `resnet18(n, nf=20)`).

Lopez-Paz & Ranzato (2017) shrink ResNet-18 by using `nf = 20` base filters
instead of 64: a 3x3 stride-1 stem with BatchNorm and no max-pool, four stages
of two `BasicBlock`s with widths `nf, 2nf, 4nf, 8nf` and strides `1, 2, 2, 2`,
global average pooling (`8 * nf = 160` features) and the head.

Layout and names follow the PyTorch reference so that a state dict maps one to
one: `conv1`, `bn1`, `layer{1..4}_{0,1}/{conv1,bn1,conv2,bn2,shortcut_conv,
shortcut_bn}`, `head` (PyTorch's `linear`). Convolutions have no bias and pad
by 1 on each side (PyTorch's `padding=1`, which differs from flax's 'SAME' for
stride 2).

BatchNorm uses `momentum=0.9` (PyTorch's 0.1) and `epsilon=1e-5`; statistics
live in `variables['batch_stats']`, are used when `train=False` and updated
when `train=True` with `mutable=['batch_stats']`. (Flax keeps the biased
batch variance in the running average where PyTorch keeps the unbiased one.)
"""

from __future__ import annotations

import functools
from typing import Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from jcl.models import _checks
from jcl.models import conv
from jcl.models import heads
from jcl.models import initializers

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

_Conv = functools.partial(
  nn.Conv,
  use_bias=False,
  conv_general_dilated=conv.conv_general_dilated,
  kernel_init=initializers.CONV_KERNEL_INIT,
)


def _batch_norm(train: bool, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=BN_MOMENTUM,
    epsilon=BN_EPSILON,
    scale_init=initializers.BN_SCALE_INIT,
    bias_init=initializers.BN_BIAS_INIT,
    name=name,
  )


class BasicBlock(nn.Module):
  """Two 3x3 conv + BN layers with an identity or 1x1 conv + BN shortcut.

  Attributes:
    planes: output channels.
    stride: stride of the first conv (and of the shortcut conv).
  """

  planes: int
  stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Maps `[B, H, W, C_in]` to `[B, ceil(H / s), ceil(W / s), planes]`."""
    out = _Conv(
      self.planes,
      (3, 3),
      strides=(self.stride, self.stride),
      padding=((1, 1), (1, 1)),
      name='conv1',
    )(x)
    out = nn.relu(_batch_norm(train, 'bn1')(out))
    out = _Conv(self.planes, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), name='conv2')(out)
    out = _batch_norm(train, 'bn2')(out)
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.planes:
      shortcut = _Conv(
        self.planes,
        (1, 1),
        strides=(self.stride, self.stride),
        padding='VALID',
        name='shortcut_conv',
      )(x)
      shortcut = _batch_norm(train, 'shortcut_bn')(shortcut)
    return nn.relu(out + shortcut)


class ResNet18Reduced(nn.Module):
  """Reduced ResNet-18: BasicBlocks [2, 2, 2, 2], widths nf..8nf (module doc).

  Attributes:
    nf: base number of filters (20 in GEM / A-GEM / DER; 64 = full width).
    num_classes: classes per head `C`.
    num_heads: number of task heads `H` (see `heads.TaskHead`).
    task_classes: optional per-task class ids for masking (see
      `heads.TaskHead`).
  """

  nf: int = 20
  num_classes: int = 10
  num_heads: int = 1
  task_classes: heads.TaskClasses = None

  def __post_init__(self):
    object.__setattr__(self, 'nf', _checks.check_positive_int('nf', self.nf))
    heads.normalize_head_fields(self)
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
      x: `[B, H, W, C]` float images (NHWC), e.g. `[B, 32, 32, 3]`.
      t: `[B]` int32 0-based task ids (only read by multi-head / masked heads).
      train: BatchNorm uses batch statistics and updates `batch_stats` (apply
        with `mutable=['batch_stats']`); otherwise running averages.
      return_features: also return the pooled features.

    Returns:
      logits `[B, num_classes]`, or `(logits, features)` with features
      `[B, 8 * nf]`.
    """
    if x.ndim != 4:
      raise ValueError(f'ResNet18Reduced expects [B, H, W, C] inputs, got shape {x.shape}.')
    nf = self.nf
    out = _Conv(nf, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), name='conv1')(x)
    out = nn.relu(_batch_norm(train, 'bn1')(out))  # [B, H, W, nf]
    for stage, (mult, stride) in enumerate(((1, 1), (2, 2), (4, 2), (8, 2))):
      for block in range(2):
        out = BasicBlock(nf * mult, stride if block == 0 else 1, name=f'layer{stage + 1}_{block}')(
          out, train
        )
    features = jnp.mean(out, axis=(1, 2))  # [B, 8 * nf]
    logits = heads.TaskHead(self.num_classes, self.num_heads, self.task_classes, name='head')(
      features, t
    )
    if return_features:
      return logits, features
    return logits
