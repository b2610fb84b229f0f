"""jcl.models.conv: the same convolution and gradients as lax, with canonical
gradient convolutions inside a scanned training loop."""

import re

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest

from jcl.models import conv

CASES = [  # H, W, kernel, stride, padding
  (8, 8, 3, 1, 'SAME'),
  (9, 7, 3, 2, 'SAME'),
  (8, 8, 1, 2, 'SAME'),
  (9, 9, 3, 2, 'VALID'),
  (10, 10, 3, 2, ((0, 1), (0, 1))),
  (7, 7, 5, 3, 'SAME'),
]


@pytest.mark.parametrize('h, w, k, s, padding', CASES)
def test_forward_and_gradients_equal_lax(h, w, k, s, padding):
  rng = np.random.default_rng(h * 100 + k * 10 + s)
  x = jnp.asarray(rng.normal(size=(2, h, w, 3)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(k, k, 3, 4)), jnp.float32)
  numbers = lax.conv_dimension_numbers(x.shape, kernel.shape, ('NHWC', 'HWIO', 'NHWC'))
  loss = lambda fn: (
    lambda a, b: jnp.sum(jnp.sin(fn(a, b, (s, s), padding, dimension_numbers=numbers)))
  )
  ref, new = loss(lax.conv_general_dilated), loss(conv.conv_general_dilated)
  np.testing.assert_allclose(new(x, kernel), ref(x, kernel), rtol=1e-6)
  for g_new, g_ref in zip(jax.grad(new, (0, 1))(x, kernel), jax.grad(ref, (0, 1))(x, kernel)):
    np.testing.assert_allclose(g_new, g_ref, rtol=1e-5, atol=1e-5)


def test_other_convolutions_go_to_lax_unchanged():
  x, kernel = jnp.ones((1, 6, 6, 4)), jnp.ones((3, 3, 2, 4))
  numbers = lax.conv_dimension_numbers(x.shape, kernel.shape, ('NHWC', 'HWIO', 'NHWC'))
  grouped = conv.conv_general_dilated(
    x, kernel, (1, 1), 'SAME', dimension_numbers=numbers, feature_group_count=2
  )
  np.testing.assert_array_equal(
    grouped,
    lax.conv_general_dilated(
      x, kernel, (1, 1), 'SAME', dimension_numbers=numbers, feature_group_count=2
    ),
  )


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='an XLA:CPU layout property')
def test_scanned_training_uses_only_canonical_convolutions():
  """Inside `lax.scan`, XLA:CPU (jax 0.10) keeps lax's gradient convolutions
  in slow layouts (`f01b_i01o->01bf`, `b01f_01oi->b01f`);
  `conv.conv_general_dilated` leaves only `b01f_01io->b01f` convolutions."""
  fn = conv.conv_general_dilated
  numbers = lax.conv_dimension_numbers((2, 8, 8, 3), (3, 3, 3, 4), ('NHWC', 'HWIO', 'NHWC'))

  def step(kernel, x):
    loss = lambda k: jnp.sum(fn(x, k, (2, 2), 'SAME', dimension_numbers=numbers) ** 2)
    return kernel - 0.1 * jax.grad(loss)(kernel), None

  xs = jnp.ones((4, 2, 8, 8, 3))
  hlo = (
    jax.jit(lambda k, xs: lax.scan(step, k, xs)[0])
    .lower(jnp.ones((3, 3, 3, 4)), xs)
    .compile()
    .as_text()
  )
  labels = set(re.findall(r'convolution\(.*?dim_labels=([\w>-]+)', hlo))
  assert labels, hlo
  assert labels == {'b01f_01io->b01f'}, labels
