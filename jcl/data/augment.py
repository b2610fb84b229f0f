"""Training-time image augmentation: the spec, and its semantics in NumPy.

jcl augments inside the compiled training step, on the model's inputs
(`jcl.augment` on JAX, `jcl.torch.augment` on PyTorch; the train state
carries the `Augmentation`): every training forward pass sees freshly
augmented inputs, current samples and replayed ones alike, while replay
buffers keep the inputs as they came (as Mammoth does). Evaluation and the
importance passes of `end_task` never augment. This module is the backend-free
part: parsing a spec, and the transform given its random draws.

A spec is None, '' or 'none' (off), or ops separated by commas, applied in
the order written:

  crop:P     pad every side with P pixels of the fill value, then take the
             H x W window at offset `(dy, dx)` drawn uniformly from
             `[0, 2P]^2` (torchvision's `RandomCrop(H, padding=P)`)
  flip[:Q]   mirror left-right with probability Q (default 0.5;
             `RandomHorizontalFlip`)

and 'crop_flip' is 'crop:4,flip' (Mammoth's Seq-CIFAR-10 and
Seq-TinyImageNet). Python callers may also give ops as tuples,
`(('crop', 4), ('flip',))`. For one image `x [H, W, C]` with draws
`(dy, dx)` and `f`:

  crop:  out[i, j] = x[i + dy - P, j + dx - P], the fill value outside x
  flip:  out[i, j] = x[i, W - 1 - j] if f else x[i, j]

The fill is per channel: the model input of a black stored pixel (`fill_of`),
so padding in the normalized inputs is Mammoth's black padding before
normalization; 0 where the inputs are not standardized.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import numpy as np

OPS = ('crop', 'flip')
PRESETS = {'crop_flip': 'crop:4,flip'}
FLIP_PROBABILITY = 0.5


class Op(NamedTuple):
  """One op: its name and parameter (crop: padding P; flip: probability Q)."""

  name: str
  value: float

  def __str__(self) -> str:
    value = int(self.value) if self.name == 'crop' else self.value
    return f'{self.name}:{value:g}' if isinstance(value, float) else f'{self.name}:{value}'


def _number(op: str, text: Any) -> float:
  try:
    return float(text)
  except (TypeError, ValueError):
    raise ValueError(f'{op}: parameter must be a number, got {text!r}') from None


def _op(name: str, params: Sequence[Any]) -> Op:
  name = str(name).strip().lower()
  if name not in OPS:
    raise ValueError(f'unknown op {name!r}; known: {", ".join(OPS)} (or {", ".join(PRESETS)})')
  if len(params) > 1:
    raise ValueError(f'{name} takes one parameter, got {list(params)}')
  if name == 'crop':
    if not params:
      raise ValueError('crop needs its padding, e.g. crop:4')
    value = _number('crop', params[0])
    if value != int(value) or value < 0:
      raise ValueError(f'crop padding must be an integer >= 0, got {params[0]!r}')
    return Op('crop', int(value))
  value = _number('flip', params[0]) if params else FLIP_PROBABILITY
  if not 0.0 <= value <= 1.0:
    raise ValueError(f'flip probability must be in [0, 1], got {params[0]!r}')
  return Op('flip', value)


def parse(spec: Any) -> tuple[Op, ...]:
  """The ops of `spec` (see the module docstring); `()` when off.

  >>> parse('crop_flip')
  (Op(name='crop', value=4), Op(name='flip', value=0.5))
  >>> parse((('flip', 0.25),))
  (Op(name='flip', value=0.25),)

  Raises:
    ValueError: an unknown op, a bad parameter or an op given twice (named).
  """
  if spec is None:
    return ()
  if isinstance(spec, str):
    text = PRESETS.get(spec.strip().lower(), spec)
    if text.strip().lower() in ('', 'none'):
      return ()
    entries = [tuple(part.split(':')) for part in text.split(',') if part.strip()]
  elif isinstance(spec, (tuple, list)):
    entries = [
      tuple(e.split(':')) if isinstance(e, str) else tuple(e) if isinstance(e, (tuple, list)) else e
      for e in spec
    ]
  else:
    raise ValueError(f"must be an op string such as 'crop:4,flip', or None, got {spec!r}")
  ops = []
  for entry in entries:
    if not isinstance(entry, tuple) or not entry:
      raise ValueError(f'an op must be a name with its parameter, got {entry!r}')
    ops.append(_op(entry[0], entry[1:]))
  names = [op.name for op in ops]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise ValueError(f'op(s) {repeated} given more than once')
  return tuple(ops)


def canonical(spec: Any) -> str | None:
  """The canonical string of `spec` (`'crop:4,flip:0.5'`), None when off.

  >>> canonical('crop_flip'), canonical(''), canonical('flip')
  ('crop:4,flip:0.5', None, 'flip:0.5')
  """
  ops = parse(spec)
  return ','.join(str(op) for op in ops) if ops else None


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """What a train state augments with (hashable: a static field of a jitted state).

  Attributes:
    ops: the ops, in order.
    fill: the crop's fill value per channel (or one value for all).
  """

  ops: tuple[Op, ...]
  fill: tuple[float, ...] = (0.0,)

  def __post_init__(self):
    object.__setattr__(self, 'ops', tuple(Op(*op) for op in self.ops))
    object.__setattr__(self, 'fill', tuple(float(v) for v in np.ravel(self.fill)))

  def __str__(self) -> str:
    return ','.join(str(op) for op in self.ops)

  def fill_array(self, channels: int) -> np.ndarray:
    """float32 `[C]`."""
    return np.broadcast_to(np.asarray(self.fill, np.float32), (channels,)).copy()


def make(spec: Any, fill: Any = 0.0) -> Augmentation | None:
  """The `Augmentation` of `spec` with `fill` (a number or `[C]`); None when off."""
  ops = parse(spec)
  return Augmentation(ops, tuple(np.ravel(np.asarray(fill, np.float64)))) if ops else None


def fill_of(view) -> np.ndarray:
  """float32 `[C]`: the model input of a black (0) stored pixel through the
  `jcl.data.views.InputView` `view`, the crop's fill."""
  return view.normalize(np.zeros((1, len(view.mean)), np.float32))[0]


def for_benchmark(spec: Any, benchmark) -> Augmentation | None:
  """The `Augmentation` of `spec` for `benchmark`'s inputs (fill: `fill_of` the
  first task's view); None when off.

  Raises:
    ValueError: the benchmark's inputs are not images `[H, W, C]`.
  """
  ops = parse(spec)
  if not ops:
    return None
  shape = tuple(benchmark.input_shape)
  if len(shape) != 3:
    raise ValueError(
      f"train: invalid 'augment': crop and flip need image inputs [H, W, C], "
      f'the benchmark has inputs of shape {shape}'
    )
  view = getattr(benchmark.tasks[0].train, 'view', None)
  fill = fill_of(view) if view is not None else np.zeros(shape[-1], np.float32)
  return Augmentation(ops, tuple(fill.tolist()))


def draw_numpy(aug: Augmentation, rng: np.random.Generator, batch_size: int) -> dict[str, Any]:
  """Draws for a batch from a NumPy generator: `{'crop': int [B, 2], 'flip': bool [B]}`
  (the ops present)."""
  draws = {}
  for op in aug.ops:
    if op.name == 'crop':
      draws['crop'] = rng.integers(0, 2 * int(op.value) + 1, (batch_size, 2))
    else:
      draws['flip'] = rng.random(batch_size) < op.value
  return draws


def apply_numpy(aug: Augmentation, x: np.ndarray, draws: dict[str, Any]) -> np.ndarray:
  """The reference transform: `x [B, H, W, C]` with `draws` (as `draw_numpy`'s)
  -> `[B, H, W, C]`, the ops in order (module docstring)."""
  x = np.asarray(x)
  for op in aug.ops:
    if op.name == 'crop':
      p = int(op.value)
      b, h, w, c = x.shape
      canvas = np.empty((b, h + 2 * p, w + 2 * p, c), x.dtype)
      canvas[...] = aug.fill_array(c).astype(x.dtype)
      canvas[:, p : p + h, p : p + w] = x
      offsets = np.asarray(draws['crop'])
      x = np.stack(
        [canvas[i, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)]
      ).reshape(x.shape)
    else:
      flips = np.asarray(draws['flip'], bool)
      x = np.where(flips[:, None, None, None], x[:, :, ::-1], x)
  return x
