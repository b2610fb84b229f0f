"""Training-time image augmentation in JAX: jit-able, vmappable, per-sample keys.

The ops and their semantics are `jcl.data.augment`'s (random crop with
padding, horizontal flip). A train state with an `augment` field
(`jcl.train_state.create_train_state(..., augment=...)`) has its inputs
augmented by every training-mode forward pass (`jcl.train_state.apply_model`
with `train=True`), from a key derived from the pass's own key:

  key_b = split(fold_in(rng, AUGMENT_SALT), B)[b]     (sample b)
  op i of sample b draws from fold_in(key_b, i)

so a step's draws depend only on the seed, the step and the batch row, and
a replayed sample is augmented afresh at every replay while the buffer
keeps its inputs as they came.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jcl.data.augment import Augmentation, canonical, make, parse  # noqa: F401  (re-exported)

# Folded into a forward pass's key to make the augmentation's key (its
# dropout keeps the key itself).
AUGMENT_SALT = 0x617567


def crop(image: jax.Array, offset: jax.Array, padding: int, fill: jax.Array) -> jax.Array:
  """`image [H, W, C]` padded with `padding` pixels of `fill [C]` on every
  side, then the H x W window at `offset [2]` (int, in `[0, 2 * padding]`):
  `out[i, j] = image[i + dy - padding, j + dx - padding]`, `fill` outside."""
  h, w, c = image.shape
  canvas = jnp.broadcast_to(fill.astype(image.dtype), (h + 2 * padding, w + 2 * padding, c))
  canvas = jax.lax.dynamic_update_slice(canvas, image, (padding, padding, 0))
  return jax.lax.dynamic_slice(canvas, (offset[0], offset[1], 0), (h, w, c))


def flip(image: jax.Array, flipped: jax.Array) -> jax.Array:
  """`image [H, W, C]` mirrored left-right when `flipped` (bool scalar)."""
  return jnp.where(flipped, image[:, ::-1], image)


def draw_one(aug: Augmentation, key: jax.Array) -> dict[str, jax.Array]:
  """One sample's draws: `{'crop': int32 [2], 'flip': bool []}` (the ops present)."""
  draws = {}
  for i, op in enumerate(aug.ops):
    k = jax.random.fold_in(key, i)
    if op.name == 'crop':
      draws['crop'] = jax.random.randint(k, (2,), 0, 2 * int(op.value) + 1, jnp.int32)
    else:
      draws['flip'] = jax.random.uniform(k) < op.value
  return draws


def draw(aug: Augmentation, key: jax.Array, batch_size: int) -> dict[str, jax.Array]:
  """A batch's draws from `key`, one key per sample: `{'crop': [B, 2], 'flip': [B]}`."""
  return jax.vmap(lambda k: draw_one(aug, k))(jax.random.split(key, batch_size))


def apply_one(aug: Augmentation, image: jax.Array, draws: dict[str, jax.Array]) -> jax.Array:
  """`image [H, W, C]` through the ops in order, with `draws` (`draw_one`'s)."""
  fill = jnp.broadcast_to(jnp.asarray(aug.fill, jnp.float32), (image.shape[-1],))
  for op in aug.ops:
    if op.name == 'crop':
      image = crop(image, draws['crop'], int(op.value), fill)
    else:
      image = flip(image, draws['flip'])
  return image


def apply(aug: Augmentation, x: jax.Array, draws: dict[str, jax.Array]) -> jax.Array:
  """`x [B, H, W, C]` through the ops with per-sample `draws` (`draw`'s): `[B, H, W, C]`."""
  return jax.vmap(lambda image, d: apply_one(aug, image, d))(x, draws)


def augment(aug: Augmentation | None, key: jax.Array, x: jax.Array) -> jax.Array:
  """`x [B, H, W, C]` augmented with per-sample keys from `key` (unchanged when
  `aug` is None). A padding row (mask 0, all zeros) stays a harmless row the
  losses ignore (zeros, or the fill value where the crop shows padding)."""
  if aug is None or not aug.ops:
    return x
  if x.ndim != 4:
    raise ValueError(f'augmentation needs image batches [B, H, W, C], got shape {x.shape}')
  return apply(aug, x, draw(aug, key, x.shape[0]))


def training_inputs(aug: Augmentation | None, x: jax.Array, rng: jax.Array | None) -> jax.Array:
  """The inputs a training forward pass with key `rng` sees: `x` augmented with
  `fold_in(rng, AUGMENT_SALT)`, or `x` itself without `aug`."""
  if aug is None:
    return x
  if rng is None:
    raise ValueError(
      'a train state with augmentation needs a key in every training forward pass '
      '(apply_model(..., train=True, rng=key))'
    )
  return augment(aug, jax.random.fold_in(rng, AUGMENT_SALT), x)
