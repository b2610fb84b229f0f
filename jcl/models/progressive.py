"""Progressive networks (Rusu et al. 2016): one column per task, lateral
connections from the columns of earlier tasks.

Column k's layer i (1 <= i <= L, layer L being the column's head) reads its own
previous layer and, through an adapter, the previous layers of columns 0..k-1:

  'linear' (eq. 1):  a_i^(k) = W_i^(k) h_{i-1}^(k) + sum_{j<k} U_i^(k:j) h_{i-1}^(j)
  'mlp'    (eq. 2):  a_i^(k) = W_i^(k) h_{i-1}^(k)
                               + U_i^(k) f(V_i^(k) alpha_i^(k) h_{i-1}^(<k))

and `h_i^(k) = f(a_i^(k))` (the head's `a_L^(k)` are the logits). Layer 1 reads
the input, as in the paper (the input is the same for every column, so it has
no lateral term). The linear adapter has one kernel `U^(k:j)` per anterior
column, initialised as the blocks of one fan-in-initialised kernel over all k
inputs. In the MLP adapter, `h^(<k) = [h^(0); ...; h^(k-1)]` is the
concatenation of the anterior columns' activations, `alpha` a learned scalar
initialised small and `V` projects onto `n_i` units (a 1x1 convolution in
conv layers), so the adapter's size grows linearly with k. (Sec. 2 says "a
projection onto an n_i dimensional subspace" while eq. 2 gives V `n_{i-1}`
rows; they agree for equal widths, and `n_i` keeps the CNN's flatten -> dense
adapter small.)

Fixed shapes: all `num_columns` columns exist from the start; sample b reads
the logits of column `t[b]`, which depend on columns `0..t[b]` only, and a
batch runs the columns up to its largest task id. Parameters live under
`column_k/` (its layers, its adapters and its head), the key by which
`jcl.algorithms.pnn` freezes. Column heads: with `num_heads == num_columns`
(multi-head), column k's head is task k's head; with one head and
`task_classes`, the selected column's logits outside the sample's classes are
masked, as `heads.TaskHead` does.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from jcl.models import _checks
from jcl.models import conv
from jcl.models import heads
from jcl.models import initializers
from jcl.models.cnn import CNN
from jcl.models.mlp import ACTIVATIONS
from jcl.models.mlp import check_activation
from jcl.models.mlp import MLP

ADAPTERS = ('linear', 'mlp')
# The adapter's scale `alpha` starts at a small random value (paper, Sec. 2).
ALPHA_INIT = nn.initializers.uniform(scale=0.1)


def _scaled(init: Callable, factor: float) -> Callable:
  return lambda key, shape, dtype=jnp.float32: factor * init(key, shape, dtype)


def _layer(
  kind: str,
  features: int,
  name: str,
  *,
  use_bias: bool = True,
  kernel_size: int = 3,
  init_scale: float = 1.0,
) -> nn.Module:
  """A dense layer, or a SAME convolution of `kernel_size`; `init_scale`
  multiplies the initial kernel."""
  kernel_init = initializers.DENSE_KERNEL_INIT if kind == 'dense' else initializers.CONV_KERNEL_INIT
  if init_scale != 1.0:
    kernel_init = _scaled(kernel_init, init_scale)
  if kind == 'dense':
    return nn.Dense(
      features,
      use_bias=use_bias,
      kernel_init=kernel_init,
      bias_init=initializers.BIAS_INIT,
      name=name,
    )
  return nn.Conv(
    features,
    (kernel_size, kernel_size),
    padding='SAME',
    use_bias=use_bias,
    conv_general_dilated=conv.conv_general_dilated,
    kernel_init=kernel_init,
    bias_init=initializers.BIAS_INIT,
    name=name,
  )


class LateralLayer(nn.Module):
  """Layer i of one column, before its activation: `W h^(k) + adapter(h^(<k))`.

  Parameters: `own` (W and its bias); with k anterior columns,
  `lateral_0 .. lateral_{k-1}` (the linear adapter's `U^(k:j)`, each
  initialised as a block of one kernel over the k inputs: the fan-in
  initialisation scaled by `1/sqrt(k)`) or `alpha`, `V` and `U` (the MLP
  adapter).

  Attributes:
    features: output units (channels for 'conv').
    kind: 'dense' or 'conv' (3x3 SAME; the MLP adapter's V is then 1x1).
    adapter: 'linear' (eq. 1) or 'mlp' (eq. 2).
    activation: name of the MLP adapter's non-linearity (`ACTIVATIONS`).
  """

  features: int
  kind: str = 'dense'
  adapter: str = 'linear'
  activation: str = 'relu'

  @nn.compact
  def __call__(self, own: jax.Array, anterior: Sequence[jax.Array] = ()) -> jax.Array:
    """`own` `[B, ..., n_{i-1}]` and k anterior activations of the same shape
    -> `[B, ..., features]`."""
    out = _layer(self.kind, self.features, 'own')(own)
    if not anterior:
      return out
    if self.adapter == 'linear':  # eq. 1: sum_j U^(k:j) h^(j)
      scale = 1.0 / math.sqrt(len(anterior))
      for j, h in enumerate(anterior):
        out = out + _layer(
          self.kind, self.features, f'lateral_{j}', use_bias=False, init_scale=scale
        )(h)
      return out
    stacked = jnp.concatenate(tuple(anterior), axis=-1)  # [B, ..., k * n_{i-1}]
    alpha = self.param('alpha', ALPHA_INIT, ())
    reduced = _layer(self.kind, self.features, 'V', kernel_size=1)(alpha * stacked)
    reduced = ACTIVATIONS[self.activation](reduced)  # [B, ..., n_i]
    return out + _layer(self.kind, self.features, 'U', use_bias=False)(reduced)


class ProgressiveColumn(nn.Module):
  """One column: its layers `layers_0 .. layers_L` (the last is its head).

  Attributes:
    kinds: 'dense' / 'conv' per layer.
    features: output units per layer (the head's = classes).
    adapter: 'linear' or 'mlp'.
    activation: the adapters' non-linearity.
  """

  kinds: tuple[str, ...]
  features: tuple[int, ...]
  adapter: str = 'linear'
  activation: str = 'relu'

  def setup(self):
    self.layers = [
      LateralLayer(f, kind, self.adapter, self.activation)
      for kind, f in zip(self.kinds, self.features)
    ]

  def __call__(self, i: int, own: jax.Array, anterior: Sequence[jax.Array]) -> jax.Array:
    return self.layers[i](own, tuple(anterior))


def _check_columns(module: nn.Module) -> None:
  """Validates the fields every progressive model shares (in place)."""
  object.__setattr__(
    module, 'num_columns', _checks.check_positive_int('num_columns', module.num_columns)
  )
  heads.normalize_head_fields(module)
  if module.num_heads not in (1, module.num_columns):
    raise ValueError(
      f'num_heads must be 1 (masked or shared head) or num_columns='
      f'{module.num_columns} (one head per column), got {module.num_heads}.'
    )
  if module.adapter not in ADAPTERS:
    raise ValueError(f'adapter must be one of {ADAPTERS}, got {module.adapter!r}.')
  object.__setattr__(module, 'dropout', _checks.check_rate('dropout', module.dropout))


def progressive_forward(
  module: nn.Module,
  x: jax.Array,
  t: Optional[jax.Array],
  *,
  kinds: Sequence[str],
  features: Sequence[int],
  post: Sequence[Callable[[jax.Array], jax.Array]],
  activation: str,
  return_features: bool,
):
  """Runs the columns one after the other and reads column `t[b]` for sample b.

  Column k runs only when some sample reads a column >= k (`k <= max(t)`, a
  `cond`; under `vmap` both branches run): a batch of task k costs k + 1
  columns, not `num_columns`. Skipped columns give zeros, which only later
  (also skipped) columns read.

  Args:
    module: the (compact) model; columns are created in it as `column_k`.
    x: `[B, ...]` input of layer 1 (the same for every column).
    t: `[B]` int task ids.
    kinds, features: per layer of a column, the head last.
    post: per hidden layer, what follows it (activation, pooling, flatten,
      dropout); its output is the next layer's input and lateral input.
    activation: the MLP adapters' non-linearity.
  Returns:
    logits `[B, C]` (or `(logits, features [B, F])`): the head of column
    `t[b]`, masked to the task's classes when `task_classes` is set.
  """
  if t is None:
    raise ValueError('A progressive network needs task ids t (it reads column t[b]), got t=None.')
  t = jnp.asarray(t).astype(jnp.int32).reshape(-1)  # [B]

  def run_column(k):
    def run(mdl, h, anterior):
      """Column k on input `h`; `anterior[j][i]` is column j's output of
      hidden layer i. Returns its hidden layers' outputs and its logits."""
      del mdl
      column = ProgressiveColumn(
        tuple(kinds), tuple(features), module.adapter, activation, name=f'column_{k}'
      )
      hidden = []
      for i in range(len(post) + 1):
        lateral = [outputs[i - 1] for outputs in anterior] if i > 0 else []
        h = column(i, h, lateral)
        if i < len(post):
          h = post[i](h)
          hidden.append(h)
      return hidden, h

    return run

  def skip(mdl, h, anterior):
    del mdl, h
    return jax.tree.map(jnp.zeros_like, (anterior[0], logits[0]))

  hidden, logits = [], []  # per column: its hidden layers' outputs, its logits [B, C]
  for k in range(module.num_columns):
    if k == 0 or module.is_initializing():
      out = run_column(k)(module, x, hidden)
    else:
      out = nn.cond(k <= jnp.max(t), run_column(k), skip, module, x, hidden)
    hidden.append(out[0])
    logits.append(out[1])
  selected = jnp.take_along_axis(jnp.stack(logits, axis=1), t[:, None, None], axis=1)[:, 0]
  if module.task_classes is not None:
    table = jnp.asarray(heads.task_class_table(module.task_classes, module.num_classes))
    selected = heads.mask_logits(selected, table[t])  # [B, C]
  if not return_features:
    return selected
  last = jnp.stack([h[-1] if h else x for h in hidden], axis=1)  # [B, T, F]
  return selected, jnp.take_along_axis(last, t[:, None, None], axis=1)[:, 0]


class ProgressiveMLP(nn.Module):
  """Progressive version of `MLP`: `num_columns` columns of `widths` hidden units.

  Parameters: `column_0 ... column_{T-1}`, each with `layers_0 .. layers_L`
  (`layers_L` its head) holding `own` and, for i >= 1 and k >= 1, the adapter.

  Attributes:
    num_columns: columns T, one per task.
    widths, activation, dropout: as in `MLP`, per column.
    num_classes: classes of each column's head.
    num_heads: 1, or `num_columns` (multi-head: column k is task k's head).
    task_classes: per-task class ids to mask (single head).
    adapter: 'linear' (eq. 1) or 'mlp' (eq. 2).
  """

  num_columns: int = 2
  widths: Sequence[int] = (100, 100)
  num_classes: int = 10
  num_heads: int = 1
  task_classes: heads.TaskClasses = None
  dropout: float = 0.0
  activation: str = 'relu'
  adapter: str = 'linear'

  def __post_init__(self):
    object.__setattr__(self, 'widths', _checks.check_positive_ints('widths', self.widths))
    check_activation(self.activation)
    _check_columns(self)
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
    """`x` `[B, ...]` (flattened), `t` `[B]` -> logits `[B, C]` of column `t`
    (and its last hidden activations `[B, widths[-1]]`)."""
    act = ACTIVATIONS[self.activation]

    def hidden(h):
      h = act(h)
      return nn.Dropout(self.dropout, deterministic=not train)(h) if self.dropout > 0 else h

    n = len(self.widths)
    return progressive_forward(
      self,
      jnp.reshape(x, (x.shape[0], -1)),
      t,
      kinds=('dense',) * (n + 1),
      features=(*self.widths, self.num_classes),
      post=(hidden,) * n,
      activation=self.activation,
      return_features=return_features,
    )


class ProgressiveCNN(nn.Module):
  """Progressive version of `CNN`: per column `[Conv 3x3, ReLU, MaxPool 2x2]
  * len(channels)`, flatten, Dense `hidden`, ReLU, head.

  Conv layers' adapters are convolutions (the MLP adapter's V a 1x1 one, as
  in the paper); the dense layer's lateral input is the anterior columns'
  flattened conv output.

  Attributes:
    num_columns, num_classes, num_heads, task_classes, adapter: as in
      `ProgressiveMLP`.
    channels, hidden, dropout: as in `CNN`, per column.
  """

  num_columns: int = 2
  channels: Sequence[int] = (32, 64)
  hidden: int = 256
  num_classes: int = 10
  num_heads: int = 1
  task_classes: heads.TaskClasses = None
  dropout: float = 0.0
  adapter: str = 'linear'

  def __post_init__(self):
    object.__setattr__(
      self, 'channels', _checks.check_positive_ints('channels', self.channels, allow_empty=False)
    )
    object.__setattr__(self, 'hidden', _checks.check_positive_int('hidden', self.hidden))
    _check_columns(self)
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
    """`x` `[B, H, W, C]`, `t` `[B]` -> logits `[B, C]` of column `t` (and its
    dense features `[B, hidden]`)."""
    if x.ndim != 4:
      raise ValueError(f'ProgressiveCNN expects [B, H, W, C] inputs, got shape {x.shape}.')

    def drop(h):
      return nn.Dropout(self.dropout, deterministic=not train)(h) if self.dropout > 0 else h

    def conv_block(h):
      return nn.max_pool(nn.relu(h), (2, 2), strides=(2, 2))

    def last_conv_block(h):
      h = conv_block(h)
      return drop(jnp.reshape(h, (h.shape[0], -1)))

    k = len(self.channels)
    post = (conv_block,) * (k - 1) + (last_conv_block, lambda h: drop(nn.relu(h)))
    return progressive_forward(
      self,
      x,
      t,
      kinds=('conv',) * k + ('dense', 'dense'),
      features=(*self.channels, self.hidden, self.num_classes),
      post=post,
      activation='relu',
      return_features=return_features,
    )


def progressive_version(model: nn.Module, num_columns: int, adapter: str = 'linear') -> nn.Module:
  """The progressive network with `num_columns` columns shaped like `model`
  (an `MLP` or a `CNN`), with its head layout.

  Raises:
    ValueError: for any other model (e.g. a ResNet: its BatchNorm statistics
      and residual blocks have no column version here).
  """
  if not isinstance(model, (MLP, CNN)):
    raise ValueError(
      f'no progressive (column) version of {type(model).__name__}: PNN supports '
      f"the 'mlp' and 'cnn' models."
    )
  common = dict(
    num_columns=num_columns,
    num_classes=model.num_classes,
    num_heads=model.num_heads,
    task_classes=model.task_classes,
    dropout=model.dropout,
    adapter=adapter,
  )
  if isinstance(model, MLP):
    return ProgressiveMLP(widths=model.widths, activation=model.activation, **common)
  return ProgressiveCNN(channels=model.channels, hidden=model.hidden, **common)
