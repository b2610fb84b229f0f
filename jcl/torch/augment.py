"""Training-time image augmentation on the PyTorch backend.

The ops of `jcl.data.augment` (random crop with padding, horizontal flip),
the same transform as `jcl.augment` given the same draws; the draws come
from the state's `RandomSource` (`TrainState.step_key(AUGMENT_SALT)`, op i
from `fold_in(key, i)`), so they are the backend's own. A train state with
an `augment` field has its inputs augmented by every training-mode
`jcl.torch.train_state.apply_model`.
"""

from __future__ import annotations

from typing import Any

import torch

from jcl.data.augment import Augmentation

# The salt of the augmentation's step key (`jcl.augment.AUGMENT_SALT`).
AUGMENT_SALT = 0x617567


def draw(aug: Augmentation, rng: Any, key: Any, batch_size: int) -> dict[str, torch.Tensor]:
  """A batch's draws from the `RandomSource` `rng`: `{'crop': int64 [B, 2], 'flip': bool [B]}`."""
  draws = {}
  for i, op in enumerate(aug.ops):
    k = rng.fold_in(key, i)
    if op.name == 'crop':
      maxval = torch.full((batch_size, 2), 2 * int(op.value) + 1, dtype=torch.int64)
      draws['crop'] = rng.randint(k, maxval)
    else:
      draws['flip'] = rng.bits31(k, batch_size).double() < op.value * 2.0**31
  return draws


def apply(aug: Augmentation, x: torch.Tensor, draws: dict[str, torch.Tensor]) -> torch.Tensor:
  """`x [B, H, W, C]` through the ops in order with per-sample `draws`: `[B, H, W, C]`."""
  b, h, w, c = x.shape
  for op in aug.ops:
    if op.name == 'crop':
      p = int(op.value)
      fill = torch.as_tensor(aug.fill_array(c), dtype=x.dtype, device=x.device)
      canvas = fill.expand(b, h + 2 * p, w + 2 * p, c).clone()
      canvas[:, p : p + h, p : p + w] = x
      offsets = torch.as_tensor(draws['crop'], device=x.device).long()
      rows = offsets[:, 0, None] + torch.arange(h, device=x.device)  # [B, H]
      cols = offsets[:, 1, None] + torch.arange(w, device=x.device)  # [B, W]
      batch = torch.arange(b, device=x.device)[:, None, None]
      x = canvas[batch, rows[:, :, None], cols[:, None, :]]
    else:
      flips = torch.as_tensor(draws['flip'], device=x.device).bool()
      x = torch.where(flips[:, None, None, None], torch.flip(x, dims=(2,)), x)
  return x


def augment(aug: Augmentation | None, rng: Any, key: Any, x: torch.Tensor) -> torch.Tensor:
  """`x [B, H, W, C]` augmented with draws from `rng` at `key` (unchanged without `aug`)."""
  if aug is None or not aug.ops:
    return x
  if x.dim() != 4:
    raise ValueError(f'augmentation needs image batches [B, H, W, C], got shape {tuple(x.shape)}')
  return apply(aug, x, draw(aug, rng, key, x.shape[0]))


def training_inputs(state, x: torch.Tensor) -> torch.Tensor:
  """The inputs a training forward pass of `state`'s step sees (`x` without augmentation)."""
  if state.augment is None:
    return x
  return augment(state.augment, state.rng, state.step_key(AUGMENT_SALT), x)
