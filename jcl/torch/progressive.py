"""Progressive networks (Rusu et al. 2016) in PyTorch, as `jcl.models.progressive`.

One column per task; column k's layer i (1 <= i <= L, layer L its head)
reads its own previous layer and, through an adapter, the previous layers of
columns 0..k-1:

  'linear' (eq. 1):  a_i^(k) = W_i^(k) h_{i-1}^(k) + sum_{j<k} U_i^(k:j) h_{i-1}^(j)
  'mlp'    (eq. 2):  a_i^(k) = W_i^(k) h_{i-1}^(k)
                               + U_i^(k) f(V_i^(k) alpha_i^(k) [h_{i-1}^(0); ...; h_{i-1}^(k-1)])

Layer for layer the flax model: parameters `column_k.layers_i.own`,
`.lateral_j` (no bias), `.alpha`, `.V`, `.U` (no bias), so that
`jcl.torch.convert` moves them 1:1; a column's conv layers run in NCHW and
flatten in flax's (height, width, channel) order. Sample b reads the logits
of column `t[b]`; a batch runs columns 0..max(t) only (later columns have no
say in it). Initialization is flax's distribution: LeCun-normal kernels
(the linear adapter's `U^(k:j)` scaled by `1 / sqrt(k)`), zero biases,
`alpha ~ U[0, 0.1)`.
"""

from __future__ import annotations

import hashlib
import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jcl.torch import models as models_lib

ADAPTERS = ('linear', 'mlp')
ALPHA_INIT_SCALE = 0.1  # alpha starts at a small random value (paper, Sec. 2)


def generator_from_weights(module: nn.Module, salt: int = 0) -> torch.Generator:
  """A `torch.Generator` seeded by a digest of `module`'s parameters and `salt`.

  What an algorithm's `adapt_model` builds around a configured model is
  initialized from it: the configured model was initialized from the run's
  seed, so the same config and seed give the same new weights.
  """
  digest = hashlib.sha256(str(salt).encode())
  for name, value in module.state_dict().items():
    digest.update(name.encode())
    digest.update(np.ascontiguousarray(value.detach().cpu().numpy()).tobytes())
  return torch.Generator().manual_seed(int.from_bytes(digest.digest()[:8], 'little') >> 1)


def _layer(
  kind: str, in_features: int, out_features: int, *, bias: bool = True, kernel_size: int = 3
) -> nn.Module:
  """A dense layer, or a SAME convolution of `kernel_size` (stride 1)."""
  if kind == 'dense':
    return nn.Linear(in_features, out_features, bias=bias)
  return nn.Conv2d(in_features, out_features, kernel_size, padding=kernel_size // 2, bias=bias)


def _init_layer(layer: nn.Module, generator: torch.Generator, scale: float = 1.0) -> None:
  """flax's LeCun-normal kernel (times `scale`) and zero bias, in place."""
  fan_in = math.prod(layer.weight.shape[1:])
  models_lib.lecun_normal_(layer.weight, fan_in, generator)
  with torch.no_grad():
    if scale != 1.0:
      layer.weight.mul_(scale)
    if layer.bias is not None:
      layer.bias.zero_()


class LateralLayer(nn.Module):
  """Layer i of column k before its activation: `W h^(k) + adapter(h^(<k))`.

  Args:
    kind: 'dense' or 'conv' (3x3 SAME; the MLP adapter's V is then 1x1).
    in_features: `n_{i-1}` (channels for 'conv').
    out_features: `n_i`.
    num_anterior: columns read through the adapter (k, or 0 for layer 1).
    adapter: 'linear' (eq. 1) or 'mlp' (eq. 2).
    activation: the MLP adapter's non-linearity (`jcl.torch.models.ACTIVATIONS`).
  """

  def __init__(
    self,
    kind: str,
    in_features: int,
    out_features: int,
    num_anterior: int = 0,
    adapter: str = 'linear',
    activation: str = 'relu',
  ):
    super().__init__()
    self.kind, self.adapter, self.num_anterior = kind, adapter, num_anterior
    self.activation = models_lib.ACTIVATIONS[activation]
    self.own = _layer(kind, in_features, out_features)
    if num_anterior and adapter == 'linear':
      for j in range(num_anterior):
        setattr(self, f'lateral_{j}', _layer(kind, in_features, out_features, bias=False))
    elif num_anterior:
      self.alpha = nn.Parameter(torch.zeros(()))
      self.V = _layer(kind, num_anterior * in_features, out_features, kernel_size=1)
      self.U = _layer(kind, out_features, out_features, bias=False)

  def reset_parameters(self, generator: torch.Generator) -> None:
    _init_layer(self.own, generator)
    if not self.num_anterior:
      return
    if self.adapter == 'linear':  # blocks of one fan-in-initialized kernel over k inputs
      for j in range(self.num_anterior):
        _init_layer(getattr(self, f'lateral_{j}'), generator, 1.0 / math.sqrt(self.num_anterior))
      return
    with torch.no_grad():
      self.alpha.copy_(ALPHA_INIT_SCALE * torch.rand((), generator=generator))
    _init_layer(self.V, generator)
    _init_layer(self.U, generator)

  def forward(self, own: torch.Tensor, anterior: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    """`own` and k anterior activations of the same shape (`[B, n]` or
    `[B, n, H, W]`) -> `[B, out]` (or `[B, out, H, W]`)."""
    out = self.own(own)
    if not anterior:
      return out
    if self.adapter == 'linear':  # eq. 1
      for j, h in enumerate(anterior):
        out = out + getattr(self, f'lateral_{j}')(h)
      return out
    stacked = torch.cat(tuple(anterior), dim=1)  # features / channels: [h^(0); ...; h^(k-1)]
    reduced = self.activation(self.V(self.alpha * stacked))
    return out + self.U(reduced)


class ProgressiveColumn(nn.Module):
  """One column: `layers_0 .. layers_L` (the last is its head).

  Args:
    kinds: 'dense' / 'conv' per layer.
    in_features, out_features: per layer, its input and output widths.
    index: the column's index k (its layers 1.. read k anterior columns).
    adapter, activation: as `LateralLayer`.
  """

  def __init__(
    self,
    kinds: Sequence[str],
    in_features: Sequence[int],
    out_features: Sequence[int],
    index: int,
    adapter: str = 'linear',
    activation: str = 'relu',
  ):
    super().__init__()
    self.num_layers = len(kinds)
    for i, kind in enumerate(kinds):
      setattr(
        self,
        f'layers_{i}',
        LateralLayer(
          kind, in_features[i], out_features[i], index if i > 0 else 0, adapter, activation
        ),
      )

  def layer(self, i: int) -> LateralLayer:
    return getattr(self, f'layers_{i}')


def _check(num_columns: int, num_classes: int, num_heads: int, adapter: str, task_classes):
  if not isinstance(num_columns, int) or isinstance(num_columns, bool) or num_columns < 1:
    raise ValueError(f'num_columns must be a positive int, got {num_columns!r}.')
  if num_heads not in (1, num_columns):
    raise ValueError(
      f'num_heads must be 1 (masked or shared head) or num_columns='
      f'{num_columns} (one head per column), got {num_heads}.'
    )
  if adapter not in ADAPTERS:
    raise ValueError(f'adapter must be one of {ADAPTERS}, got {adapter!r}.')
  if task_classes is None:
    return None
  table = np.zeros((len(task_classes), num_classes), bool)
  for k, classes in enumerate(task_classes):
    table[k, list(classes)] = True
  return torch.from_numpy(table)


class _Progressive(nn.Module):
  """The columns and the forward pass shared by `ProgressiveMLP` and `ProgressiveCNN`."""

  num_columns: int
  num_classes: int
  num_heads: int
  task_classes: tuple | None
  adapter: str
  dropout: float

  def _build(self, kinds, in_features, out_features, activation, task_classes, generator):
    table = _check(self.num_columns, self.num_classes, self.num_heads, self.adapter, task_classes)
    self.task_classes = None if task_classes is None else tuple(map(tuple, task_classes))
    if table is not None:
      self.register_buffer('class_table', table, persistent=False)
    for k in range(self.num_columns):
      setattr(
        self,
        f'column_{k}',
        ProgressiveColumn(kinds, in_features, out_features, k, self.adapter, activation),
      )
    self.reset_parameters(generator)

  def column(self, k: int) -> ProgressiveColumn:
    return getattr(self, f'column_{k}')

  def reset_parameters(self, generator: torch.Generator | None = None) -> None:
    """flax's initialization of every column, in order (in place)."""
    for k in range(self.num_columns):
      column = self.column(k)
      for i in range(column.num_layers):
        column.layer(i).reset_parameters(generator)

  def _drop(self, h: torch.Tensor, train: bool) -> torch.Tensor:
    return F.dropout(h, self.dropout, training=train) if self.dropout > 0 else h

  def _forward(self, x: torch.Tensor, t, post: Sequence[Callable], return_features: bool):
    """Runs columns 0..max(t) and reads column `t[b]` for sample b.

    Args:
      x: the input of layer 1 (the same for every column).
      t: `[B]` task ids.
      post: per hidden layer, what follows it (activation, pooling,
        flatten, dropout); its output is the next layer's input and lateral input.
    Returns:
      logits `[B, C]` (masked to the task's classes with `task_classes`), or
      `(logits, features)` with features the last hidden output of column `t[b]`.
    """
    if t is None:
      raise ValueError('A progressive network needs task ids t (it reads column t[b]), got t=None.')
    t = t.long().reshape(-1).clamp(0, self.num_columns - 1)  # [B]
    hidden, logits = [], []  # per column: its hidden layers' outputs, its logits
    for k in range(int(t.max()) + 1 if t.numel() else 1):
      column, h, outputs = self.column(k), x, []
      for i in range(len(post) + 1):
        h = column.layer(i)(h, [previous[i - 1] for previous in hidden] if i > 0 else [])
        if i < len(post):
          h = post[i](h)
          outputs.append(h)
      hidden.append(outputs)
      logits.append(h)
    rows = torch.arange(t.shape[0], device=t.device)
    selected = torch.stack(logits, dim=1)[rows, t]  # [B, C]
    if self.task_classes is not None:
      selected = models_lib.mask_logits(selected, self.class_table[t])
    if not return_features:
      return selected
    last = torch.stack([h[-1] if h else x for h in hidden], dim=1)  # [B, columns run, F]
    return selected, last[rows, t]


class ProgressiveMLP(_Progressive):
  """Progressive version of `MLP`: `num_columns` columns of `widths` hidden units.

  Args:
    input_shape: one example's shape (flattened).
    num_columns: columns T, one per task.
    widths, activation, dropout: as in `MLP`, per column.
    num_classes: classes of each column's head.
    num_heads: 1, or `num_columns` (multi-head: column k is task k's head).
    task_classes: per-task class ids to mask (single head).
    adapter: 'linear' (eq. 1) or 'mlp' (eq. 2).
    generator: seeds the initialization (None: torch's global generator).
  """

  def __init__(
    self,
    input_shape: Sequence[int],
    num_columns: int = 2,
    widths: Sequence[int] = (100, 100),
    num_classes: int = 10,
    num_heads: int = 1,
    task_classes=None,
    dropout: float = 0.0,
    activation: str = 'relu',
    adapter: str = 'linear',
    generator: torch.Generator | None = None,
  ):
    super().__init__()
    if activation not in models_lib.ACTIVATIONS:
      raise ValueError(
        f'activation must be one of {sorted(models_lib.ACTIVATIONS)}, got {activation!r}.'
      )
    self.num_columns, self.num_classes, self.num_heads = num_columns, num_classes, num_heads
    self.adapter, self.dropout, self.activation = adapter, float(dropout), activation
    self.widths = tuple(int(w) for w in widths)
    self._build(
      ('dense',) * (len(self.widths) + 1),
      (math.prod(input_shape), *self.widths),
      (*self.widths, num_classes),
      activation,
      task_classes,
      generator,
    )

  def forward(self, x, t=None, *, train: bool = False, return_features: bool = False):
    act = models_lib.ACTIVATIONS[self.activation]
    post = [lambda h: self._drop(act(h), train)] * len(self.widths)
    return self._forward(x.reshape(x.shape[0], -1), t, post, return_features)


class ProgressiveCNN(_Progressive):
  """Progressive version of `CNN`: per column `[Conv 3x3, ReLU, MaxPool 2x2]
  * len(channels)`, flatten, Dense `hidden`, ReLU, head; conv layers' adapters
  are convolutions (the MLP adapter's V 1x1), the dense layer's lateral input
  is the anterior columns' flattened conv output.

  Args:
    input_shape: `(H, W, C)` of one image (NHWC).
    num_columns, num_classes, num_heads, task_classes, adapter, generator:
      as in `ProgressiveMLP`.
    channels, hidden, dropout: as in `CNN`, per column.
  """

  def __init__(
    self,
    input_shape: Sequence[int],
    num_columns: int = 2,
    channels: Sequence[int] = (32, 64),
    hidden: int = 256,
    num_classes: int = 10,
    num_heads: int = 1,
    task_classes=None,
    dropout: float = 0.0,
    adapter: str = 'linear',
    generator: torch.Generator | None = None,
  ):
    super().__init__()
    if len(input_shape) != 3:
      raise ValueError(f'ProgressiveCNN expects an (H, W, C) input shape, got {input_shape}.')
    self.num_columns, self.num_classes, self.num_heads = num_columns, num_classes, num_heads
    self.adapter, self.dropout = adapter, float(dropout)
    self.channels, self.hidden = tuple(int(c) for c in channels), int(hidden)
    height, width, in_channels = input_shape
    for _ in self.channels:
      height, width = height // 2, width // 2
    flat = height * width * self.channels[-1]  # the dense layer reads the flattened conv output
    self._build(
      ('conv',) * len(self.channels) + ('dense', 'dense'),
      (in_channels, *self.channels[:-1], flat, self.hidden),
      (*self.channels, self.hidden, num_classes),
      'relu',
      task_classes,
      generator,
    )

  def forward(self, x, t=None, *, train: bool = False, return_features: bool = False):
    if x.ndim != 4:
      raise ValueError(f'ProgressiveCNN expects [B, H, W, C] inputs, got shape {tuple(x.shape)}.')

    def conv_block(h):
      return F.max_pool2d(F.relu(h), 2)

    def last_conv_block(h):
      h = conv_block(h).permute(0, 2, 3, 1)  # flax's (height, width, channel) order
      return self._drop(h.reshape(h.shape[0], -1), train)

    post = [conv_block] * (len(self.channels) - 1) + [
      last_conv_block,
      lambda h: self._drop(F.relu(h), train),
    ]
    return self._forward(x.permute(0, 3, 1, 2), t, post, return_features)


def progressive_version(
  model: nn.Module,
  input_shape: Sequence[int],
  num_columns: int,
  adapter: str = 'linear',
  generator: torch.Generator | None = None,
) -> _Progressive:
  """The progressive network with `num_columns` columns shaped like `model`
  (a `jcl.torch.models` MLP or CNN for inputs of `input_shape`), with its
  head layout; initialized from `generator`.

  Raises:
    ValueError: for any other model (e.g. a ResNet: its BatchNorm statistics
      and residual blocks have no column version here).
  """
  if not isinstance(model, (models_lib.MLP, models_lib.CNN)):
    raise ValueError(
      f'no progressive (column) version of {type(model).__name__}: PNN supports '
      f"the 'mlp' and 'cnn' models."
    )
  head = model.head
  common = dict(
    num_columns=num_columns,
    num_classes=head.num_classes,
    num_heads=head.num_heads,
    task_classes=head.task_classes,
    dropout=model.dropout,
    adapter=adapter,
    generator=generator,
  )
  if isinstance(model, models_lib.MLP):
    return ProgressiveMLP(input_shape, widths=model.widths, activation=model.activation, **common)
  return ProgressiveCNN(input_shape, channels=model.channels, hidden=model.hidden, **common)
