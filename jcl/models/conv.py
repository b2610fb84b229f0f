"""A 2-D convolution whose gradients are canonical convolutions.

XLA:CPU runs a convolution fast when its operands are laid out as
`NHWC x HWIO -> NHWC`. For a jitted step it rewrites the two gradient
convolutions of `lax.conv_general_dilated` (kernel gradient: batch and
features swapped; input gradient: kernel in/out swapped) into that form, but
not inside the body of a while loop (`lax.scan`), where they run several
times slower (dims `f01b_i01o->01bf` and `b01f_01oi->b01f` in the compiled
HLO). `conv_general_dilated` below has the same forward pass and a custom
VJP that computes both gradients as canonical convolutions of explicitly
transposed operands, so a scanned training chunk runs them at full speed.
Pass it to `flax.linen.Conv(conv_general_dilated=...)`.

Gradients (stride s, explicit padding `(lo, hi)` per spatial axis):

  dL/dx = conv(dilate_s(g), flip(w)^T_{io}),  padding `(k-1-lo, ...)`
  dL/dw = conv(x^T_{bf}, dilate_s(g)^T_{bf}) transposed back to HWIO

Anything but a plain 2-D NHWC/HWIO convolution without dilation or feature
groups goes to `lax.conv_general_dilated` unchanged.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax

_CANONICAL = ('NHWC', 'HWIO', 'NHWC')


def _plain(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_CANONICAL)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def canonical_conv(
  x: jax.Array, w: jax.Array, strides: tuple[int, int], padding: tuple[tuple[int, int], ...]
) -> jax.Array:
  """`x [N, H, W, I] * w [kh, kw, I, O] -> [N, Ho, Wo, O]` with explicit padding."""
  return _plain(x, w, strides, padding)


def _forward(x, w, strides, padding):
  return _plain(x, w, strides, padding), (x, w)


def _backward(strides, padding, residuals, g):
  x, w = residuals
  kh, kw = w.shape[:2]
  (h, wd), (ho, wo) = x.shape[1:3], g.shape[1:3]
  # Input gradient: the output gradient, dilated by the stride, convolved
  # with the flipped kernel whose in/out features are swapped.
  w_flipped = jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))
  pads_x = []
  for k, lo, size, out, s in (
    (kh, padding[0][0], h, ho, strides[0]),
    (kw, padding[1][0], wd, wo, strides[1]),
  ):
    before = k - 1 - lo
    after = size + lo - (out - 1) * s - 1  # so that dx has x's size
    pads_x.append((before, after))
  dx = lax.conv_general_dilated(
    g, w_flipped, (1, 1), pads_x, lhs_dilation=strides, dimension_numbers=_CANONICAL
  )
  # Kernel gradient: batch and features swapped on both operands.
  xt = jnp.transpose(x, (3, 1, 2, 0))  # [I, H, W, N]
  gt = jnp.transpose(g, (1, 2, 0, 3))  # [Ho, Wo, N, O]
  pads_w = [
    (lo, k - 1 + (out - 1) * s + 1 - size - lo)
    for k, (lo, _), size, out, s in (
      (kh, padding[0], h, ho, strides[0]),
      (kw, padding[1], wd, wo, strides[1]),
    )
  ]
  dw = lax.conv_general_dilated(
    xt, gt, (1, 1), pads_w, rhs_dilation=strides, dimension_numbers=_CANONICAL
  )  # [I, kh, kw, O]
  return dx, jnp.transpose(dw, (1, 2, 0, 3))


canonical_conv.defvjp(_forward, _backward)


def _is_canonical(dimension_numbers) -> bool:
  if dimension_numbers is None:
    return False
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return tuple(map(tuple, dimension_numbers)) == ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
  return tuple(dimension_numbers) == _CANONICAL


def conv_general_dilated(
  lhs,
  rhs,
  window_strides: Sequence[int],
  padding: Any,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count: int = 1,
  precision=None,
  **kwargs,
) -> jax.Array:
  """`lax.conv_general_dilated`, with canonical gradient convolutions for
  plain 2-D NHWC/HWIO convolutions (see the module docstring)."""
  plain = (
    lhs.ndim == 4
    and _is_canonical(dimension_numbers)
    and feature_group_count == 1
    and all(d in (None, 1) for d in (lhs_dilation or (1,)))
    and all(d in (None, 1) for d in (rhs_dilation or (1,)))
    and precision is None
    and not kwargs
  )
  if not plain:
    return lax.conv_general_dilated(
      lhs,
      rhs,
      window_strides,
      padding,
      lhs_dilation,
      rhs_dilation,
      dimension_numbers,
      feature_group_count,
      precision=precision,
      **kwargs,
    )
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  return canonical_conv(lhs, rhs, tuple(int(s) for s in window_strides), padding)
