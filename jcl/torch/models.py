"""The models of `jcl.models` in PyTorch: MLP, CNN, reduced ResNet-18, heads.

Every model is called as `model(x, t, train=False, return_features=False)`
with `x` `[B, *input_shape]` float32 in the data layer's NHWC layout and `t`
`[B]` int 0-based task ids, and returns logits `[B, num_classes]`, or
`(logits, features)`; the same computation as the flax model, so that
`jcl.torch.convert` moves parameters between them and the outputs agree to
float32 rounding.

Module and parameter names follow the flax ones (`Dense_0`, `Conv_0`, `head`,
`conv1`, `bn1`, `layer1.0.shortcut_conv`, ...), weights in PyTorch's layout
(`Linear.weight` `[out, in]`, `Conv2d.weight` `[out, in, kh, kw]`).
Differences from a plain PyTorch network, all to match flax:

* the CNN flattens its conv output in NHWC order (height, width, channel);
* `BatchNorm` is flax's: batch variance `E[x^2] - E[x]^2` (biased) both to
  normalize and in the running average, `running = 0.9 running + 0.1 batch`,
  and the new statistics of a training-mode call are returned by
  `jcl.torch.train_state.apply_model` instead of being written in place;
* initialization is flax's (LeCun-normal kernels, truncated at 2 std, zero
  biases): the same distribution, not the same numbers (convert the flax
  parameters for that).

`flax_to_torch` / `torch_to_flax` (from `jcl.torch.convert`) move weights
between the two.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


MASK_VALUE = -1e9

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
  'relu': F.relu,
  'tanh': torch.tanh,
  'sigmoid': torch.sigmoid,
  'gelu': lambda x: F.gelu(x, approximate='tanh'),  # flax's nn.gelu default
  'elu': F.elu,
  'silu': F.silu,
  'leaky_relu': lambda x: F.leaky_relu(x, 0.01),
}

# ----------------------------------------------------------------------------- checks


def _positive_int(field: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
    raise ValueError(f'{field} must be a positive int, got {value!r}.')
  return int(value)


def _positive_ints(field: str, values: Any, allow_empty: bool = True) -> tuple[int, ...]:
  if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
    raise ValueError(f'{field} must be a sequence of positive ints, got {values!r}.')
  if not allow_empty and not values:
    raise ValueError(f'{field} must not be empty.')
  return tuple(_positive_int(field, v) for v in values)


def _rate(field: str, value: Any) -> float:
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
    raise ValueError(f'{field} must be a float in [0, 1), got {value!r}.')
  return float(value)


def _task_classes(task_classes, num_classes: int, num_heads: int):
  if task_classes is None:
    return None
  out = tuple(tuple(int(c) for c in classes) for classes in task_classes)
  if not out or any(
    not classes or min(classes) < 0 or max(classes) >= num_classes for classes in out
  ):
    raise ValueError(
      f'task_classes must be non-empty sequences of class ids in '
      f'[0, {num_classes}), got {task_classes!r}.'
    )
  if num_heads > 1 and len(out) != num_heads:
    raise ValueError(f'task_classes has {len(out)} tasks but num_heads is {num_heads}.')
  return out


# ----------------------------------------------------------------------------- init


def lecun_normal_(weight: torch.Tensor, fan_in: int, generator: torch.Generator | None = None):
  """flax's `lecun_normal`: a normal of variance `1 / fan_in` truncated at 2 std."""
  std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # the truncated normal's std correction
  with torch.no_grad():
    return nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std, generator=generator)


def init_weights(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
  """flax's initialization of every layer of `model` (in place)."""
  for module in model.modules():
    if isinstance(module, (nn.Linear, TaskHead)):
      lecun_normal_(module.weight, module.weight.shape[1], generator)
      nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
      lecun_normal_(module.weight, math.prod(module.weight.shape[1:]), generator)
      if module.bias is not None:
        nn.init.zeros_(module.bias)
  return model


# ----------------------------------------------------------------------------- layers


def mask_logits(logits: torch.Tensor, class_mask: torch.Tensor) -> torch.Tensor:
  """`MASK_VALUE` where `class_mask` (`[C]` or `[B, C]` bool) is False."""
  return torch.where(class_mask.bool(), logits, torch.full_like(logits, MASK_VALUE))


class TaskHead(nn.Module):
  """The last layer: single head, multi-head (by task id) or task-masked.

  `weight` `[H * C, F]`, `bias` `[H * C]`; with `H > 1` each sample reads the
  `C` units of its task's head; with `task_classes` the logits outside the
  sample's task classes are `MASK_VALUE` (see `jcl.models.heads`).
  """

  def __init__(
    self, in_features: int, num_classes: int = 10, num_heads: int = 1, task_classes=None
  ):
    super().__init__()
    self.num_classes = _positive_int('num_classes', num_classes)
    self.num_heads = _positive_int('num_heads', num_heads)
    self.task_classes = _task_classes(task_classes, self.num_classes, self.num_heads)
    self.weight = nn.Parameter(torch.empty(num_heads * num_classes, in_features))
    self.bias = nn.Parameter(torch.zeros(num_heads * num_classes))
    if self.task_classes is not None:
      table = np.zeros((len(self.task_classes), num_classes), bool)
      for k, classes in enumerate(self.task_classes):
        table[k, list(classes)] = True
      self.register_buffer('class_table', torch.from_numpy(table), persistent=False)

  @property
  def needs_task_ids(self) -> bool:
    return self.num_heads > 1 or self.task_classes is not None

  def linear(self, features: torch.Tensor) -> torch.Tensor:
    """The outputs of every head, `[B, H * C]`, before any selection or mask."""
    return F.linear(features, self.weight, self.bias)

  def forward(self, features: torch.Tensor, t: Optional[torch.Tensor] = None) -> torch.Tensor:
    logits = self.linear(features)  # [B, H * C]
    if not self.needs_task_ids:
      return logits
    if t is None:
      raise ValueError('This head needs task ids t (num_heads > 1 or task_classes set).')
    t = t.long().reshape(-1)
    if self.num_heads > 1:
      per_head = logits.reshape(logits.shape[0], self.num_heads, self.num_classes)
      logits = per_head[
        torch.arange(logits.shape[0], device=logits.device), t.clamp(0, self.num_heads - 1)
      ]  # [B, C]
    if self.task_classes is not None:
      rows = self.class_table[t.clamp(0, self.class_table.shape[0] - 1)]  # [B, C]
      logits = mask_logits(logits, rows)
    return logits


class BatchNorm(nn.Module):
  """flax's `nn.BatchNorm` over the channel axis 1 of `[B, C, H, W]` (see module doc).

  Parameters `weight` (flax's `scale`) and `bias`; buffers `running_mean`,
  `running_var` (flax's `batch_stats` `mean`, `var`). A training-mode call
  leaves the buffers alone and keeps the updated statistics in
  `self.new_stats` for the caller.
  """

  def __init__(self, num_features: int, momentum: float = 0.9, eps: float = 1e-5):
    super().__init__()
    self.momentum, self.eps = momentum, eps
    self.weight = nn.Parameter(torch.ones(num_features))
    self.bias = nn.Parameter(torch.zeros(num_features))
    self.register_buffer('running_mean', torch.zeros(num_features))
    self.register_buffer('running_var', torch.ones(num_features))
    self.new_stats: tuple[torch.Tensor, torch.Tensor] | None = None

  def forward(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
    if train:
      dims = (0, 2, 3)
      mean = x.mean(dims)
      var = torch.clamp((x * x).mean(dims) - mean * mean, min=0.0)
      keep, new = self.momentum, 1.0 - self.momentum
      self.new_stats = (
        keep * self.running_mean + new * mean.detach(),
        keep * self.running_var + new * var.detach(),
      )
    else:
      mean, var = self.running_mean, self.running_var
    scale = torch.rsqrt(var + self.eps) * self.weight
    return (x - mean[:, None, None]) * scale[:, None, None] + self.bias[:, None, None]


# ----------------------------------------------------------------------------- models


class MLP(nn.Module):
  """Flatten, `[Linear, activation, Dropout] * L`, head (`jcl.models.MLP`).

  Args:
    input_shape: one example's shape, e.g. `(28, 28, 1)` (flattened).
    widths, num_classes, num_heads, task_classes, dropout, activation: as in
      `jcl.models.MLP`.
  """

  def __init__(
    self,
    input_shape: Sequence[int],
    widths: Sequence[int] = (100, 100),
    num_classes: int = 10,
    num_heads: int = 1,
    task_classes=None,
    dropout: float = 0.0,
    activation: str = 'relu',
  ):
    super().__init__()
    self.widths = _positive_ints('widths', widths)
    self.dropout = _rate('dropout', dropout)
    if activation not in ACTIVATIONS:
      raise ValueError(f'activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}.')
    self.activation = activation
    fan_in = math.prod(input_shape)
    for i, width in enumerate(self.widths):
      setattr(self, f'Dense_{i}', nn.Linear(fan_in, width))
      fan_in = width
    self.head = TaskHead(fan_in, num_classes, num_heads, task_classes)
    init_weights(self)

  def forward(self, x, t=None, *, train: bool = False, return_features: bool = False):
    act = ACTIVATIONS[self.activation]
    h = x.reshape(x.shape[0], -1)  # [B, D]
    for i in range(len(self.widths)):
      h = act(getattr(self, f'Dense_{i}')(h))
      if self.dropout > 0:
        h = F.dropout(h, self.dropout, training=train)
    logits = self.head(h, t)
    return (logits, h) if return_features else logits


class CNN(nn.Module):
  """`[Conv 3x3 SAME, ReLU, MaxPool 2x2] * K`, Linear, ReLU, head (`jcl.models.CNN`).

  Args:
    input_shape: `(H, W, C)` of one image (NHWC).
    channels, hidden, num_classes, num_heads, task_classes, dropout: as in
      `jcl.models.CNN`.
  """

  def __init__(
    self,
    input_shape: Sequence[int],
    channels: Sequence[int] = (32, 64),
    hidden: int = 256,
    num_classes: int = 10,
    num_heads: int = 1,
    task_classes=None,
    dropout: float = 0.0,
  ):
    super().__init__()
    if len(input_shape) != 3:
      raise ValueError(f'CNN expects an (H, W, C) input shape, got {input_shape}.')
    self.channels = _positive_ints('channels', channels, allow_empty=False)
    self.hidden = _positive_int('hidden', hidden)
    self.dropout = _rate('dropout', dropout)
    height, width, in_channels = input_shape
    for i, ch in enumerate(self.channels):
      setattr(self, f'Conv_{i}', nn.Conv2d(in_channels, ch, 3, padding=1))
      in_channels, height, width = ch, height // 2, width // 2
    self.Dense_0 = nn.Linear(height * width * in_channels, self.hidden)
    self.head = TaskHead(self.hidden, num_classes, num_heads, task_classes)
    init_weights(self)

  def forward(self, x, t=None, *, train: bool = False, return_features: bool = False):
    if x.ndim != 4:
      raise ValueError(f'CNN expects [B, H, W, C] inputs, got shape {tuple(x.shape)}.')
    h = x.permute(0, 3, 1, 2)  # NCHW
    for i in range(len(self.channels)):
      h = F.max_pool2d(F.relu(getattr(self, f'Conv_{i}')(h)), 2)
    h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)  # flax's (h, w, c) order
    if self.dropout > 0:
      h = F.dropout(h, self.dropout, training=train)
    h = F.relu(self.Dense_0(h))
    if self.dropout > 0:
      h = F.dropout(h, self.dropout, training=train)
    logits = self.head(h, t)
    return (logits, h) if return_features else logits


class BasicBlock(nn.Module):
  """Two 3x3 conv + BN layers with an identity or 1x1 conv + BN shortcut."""

  def __init__(self, in_planes: int, planes: int, stride: int = 1):
    super().__init__()
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, padding=1, bias=False)
    self.bn1 = BatchNorm(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=1, bias=False)
    self.bn2 = BatchNorm(planes)
    self.has_shortcut = stride != 1 or in_planes != planes
    if self.has_shortcut:
      self.shortcut_conv = nn.Conv2d(in_planes, planes, 1, stride, bias=False)
      self.shortcut_bn = BatchNorm(planes)

  def forward(self, x, train: bool = False):
    out = F.relu(self.bn1(self.conv1(x), train))
    out = self.bn2(self.conv2(out), train)
    shortcut = self.shortcut_bn(self.shortcut_conv(x), train) if self.has_shortcut else x
    return F.relu(out + shortcut)


class ResNet18Reduced(nn.Module):
  """Reduced ResNet-18 of GEM / A-GEM / DER (`jcl.models.ResNet18Reduced`).

  Args:
    input_shape: `(H, W, C)` of one image (NHWC).
    nf, num_classes, num_heads, task_classes: as in `jcl.models.ResNet18Reduced`.
  """

  def __init__(
    self,
    input_shape: Sequence[int],
    nf: int = 20,
    num_classes: int = 10,
    num_heads: int = 1,
    task_classes=None,
  ):
    super().__init__()
    self.nf = _positive_int('nf', nf)
    in_channels = input_shape[-1]
    self.conv1 = nn.Conv2d(in_channels, nf, 3, 1, padding=1, bias=False)
    self.bn1 = BatchNorm(nf)
    in_planes = nf
    for stage, (mult, stride) in enumerate(((1, 1), (2, 2), (4, 2), (8, 2))):
      blocks = []
      for block in range(2):
        blocks.append(BasicBlock(in_planes, nf * mult, stride if block == 0 else 1))
        in_planes = nf * mult
      setattr(self, f'layer{stage + 1}', nn.Sequential(*blocks))
    self.head = TaskHead(8 * nf, num_classes, num_heads, task_classes)
    init_weights(self)

  def forward(self, x, t=None, *, train: bool = False, return_features: bool = False):
    if x.ndim != 4:
      raise ValueError(f'ResNet18Reduced expects [B, H, W, C] inputs, got {tuple(x.shape)}.')
    out = F.relu(self.bn1(self.conv1(x.permute(0, 3, 1, 2)), train))
    for stage in range(1, 5):
      for block in getattr(self, f'layer{stage}'):
        out = block(out, train)
    features = out.mean((2, 3))  # [B, 8 nf]
    logits = self.head(features, t)
    return (logits, features) if return_features else logits


_REGISTRY: dict[str, type[nn.Module]] = {
  'mlp': MLP,
  'cnn': CNN,
  'resnet18_reduced': ResNet18Reduced,
}


def model_names() -> tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def make_model(
  name: str, input_shape: Sequence[int], *, seed: int | None = None, **kwargs: Any
) -> nn.Module:
  """The PyTorch counterpart of `jcl.models.make_model(name, **kwargs)`.

  Args:
    name: 'mlp', 'cnn' or 'resnet18_reduced'.
    input_shape: one example's shape (PyTorch layers are sized up front).
    seed: seeds the initialization (None: torch's global generator).
    **kwargs: the flax model's fields (`widths`, `num_classes`, ...).
  """
  if name not in _REGISTRY:
    raise ValueError(f'Unknown model {name!r}; valid names: {", ".join(model_names())}.')
  kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()}
  model = _REGISTRY[name](tuple(input_shape), **kwargs)
  if seed is not None:
    init_weights(model, torch.Generator().manual_seed(int(seed)))
  return model
