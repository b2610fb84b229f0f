"""Multi-head selection and task masking (`jcl.models.heads`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jcl import models
from jcl.models import heads


@pytest.mark.parametrize('name', ['mlp', 'cnn', 'resnet'])
def test_multi_head_selects_task_slice(name, canonical, make_batch, jit):
  model, shape, variables = canonical(name)
  head = variables['params']['head']
  assert head['kernel'].shape[-1] == 3 * 4  # ONE dense layer of H * C units
  x, _ = make_batch(shape, batch=6)
  t = jnp.array([0, 1, 2, 2, 1, 0], jnp.int32)
  t2 = (t + 1) % 3
  apply = jit(lambda v, x, t: model.apply(v, x, t, return_features=True))
  logits, features = apply(variables, x, t)
  logits2, _ = apply(variables, x, t2)
  full = np.asarray(features @ head['kernel'] + head['bias']).reshape(6, 3, 4)
  np.testing.assert_allclose(logits, full[np.arange(6), np.asarray(t)], rtol=1e-5, atol=1e-5)
  for i in range(6):  # manual per-sample gather
    np.testing.assert_allclose(logits2[i], full[i, int(t2[i])], rtol=1e-5, atol=1e-5)
  assert not np.any(np.isclose(logits, logits2))


def test_multi_head_needs_t(canonical):
  model, shape, variables = canonical('mlp')
  with pytest.raises(ValueError, match='task ids'):
    model.apply(variables, jnp.ones((2, *shape)), None)


def test_single_head_ignores_t(jit):
  model = models.MLP(widths=(8,), num_classes=3)
  variables = models.init_variables(model, jax.random.key(0), (6,))
  x = jnp.ones((2, 6))
  a, b = jit(lambda v, x: (model.apply(v, x, jnp.array([0, 7])), model.apply(v, x, None)))(
    variables, x
  )
  np.testing.assert_array_equal(a, b)


TASK_CLASSES = ((0, 1), (2, 3), (0, 3))


def test_task_masking(canonical, make_batch, jit):
  # A masked single-head model has the same parameters as the plain one.
  plain = models.MLP(widths=(32, 16), num_classes=4)
  masked = plain.clone(task_classes=TASK_CLASSES)
  _, shape, _ = canonical('mlp')
  variables = models.init_variables(plain, jax.random.key(0), shape)
  x, _ = make_batch(shape, batch=6)
  t = jnp.array([0, 1, 2, 0, 1, 2], jnp.int32)
  y = jnp.array([1, 2, 3, 0, 3, 0], jnp.int32)
  logits = np.asarray(jit(masked.apply)(variables, x, t))
  unmasked = np.asarray(jit(plain.apply)(variables, x, t))
  table = models.task_class_table(TASK_CLASSES, 4)
  np.testing.assert_array_equal(table, [[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 1]])
  inside = table[np.asarray(t)]
  np.testing.assert_array_equal(logits[inside], unmasked[inside])
  np.testing.assert_array_equal(logits[~inside], np.float32(models.MASK_VALUE))
  np.testing.assert_array_equal(np.asarray(jax.nn.softmax(logits))[~inside], 0.0)

  # Softmax-CE and its gradients stay finite.
  @jit
  def loss_and_grads(params):
    def loss_fn(params):
      out = masked.apply({'params': params}, x, t)
      return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

    return jax.value_and_grad(loss_fn)(params)

  loss, grads = loss_and_grads(variables['params'])
  assert np.isfinite(loss)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_task_masking_with_multi_head(canonical, make_batch, jit):
  model, shape, variables = canonical('mlp')
  tc = ((0, 1), (0, 1, 2, 3), (3,))
  masked = model.clone(task_classes=tc)
  x, _ = make_batch(shape, batch=6)
  t = jnp.array([0, 1, 2, 2, 1, 0], jnp.int32)
  logits = np.asarray(jit(masked.apply)(variables, x, t))
  unmasked = np.asarray(jit(model.apply)(variables, x, t))
  inside = models.task_class_table(tc, 4)[np.asarray(t)]
  np.testing.assert_array_equal(logits[inside], unmasked[inside])
  np.testing.assert_array_equal(logits[~inside], np.float32(-1e9))


def test_task_classes_lists_are_normalized_and_hashable():
  model = models.make_model('mlp', widths=[8], num_classes=4, task_classes=[[0, 1], [2, 3]])
  assert model.task_classes == ((0, 1), (2, 3))
  assert model.widths == (8,)
  assert hash(model) == hash(models.MLP(widths=(8,), num_classes=4, task_classes=((0, 1), (2, 3))))


@pytest.mark.parametrize('mask_shape', ['C', 'BC'])
def test_mask_logits(mask_shape, jit):
  logits = jnp.arange(12, dtype=jnp.float32).reshape(3, 4)
  if mask_shape == 'C':
    mask = jnp.array([True, False, True, False])
    full = np.broadcast_to(np.asarray(mask), (3, 4))
  else:
    mask = jnp.array([[1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 1, 1]], bool)
    full = np.asarray(mask)
  y = jnp.array([0, 1, 2])

  @jit
  def f(logits):
    out = heads.mask_logits(logits, mask)
    g = jax.grad(
      lambda logits: optax.softmax_cross_entropy_with_integer_labels(
        heads.mask_logits(logits, mask), y
      ).sum()
    )(logits)
    return out, jax.nn.log_softmax(out), g

  out, logp, g = map(np.asarray, f(logits))
  np.testing.assert_array_equal(out[full], np.asarray(logits)[full])
  np.testing.assert_array_equal(out[~full], np.float32(models.MASK_VALUE))
  assert np.all(np.isfinite(logp)) and np.all(np.isfinite(g))
  # No gradient flows into masked logits.
  np.testing.assert_array_equal(g[~full], 0.0)


def test_mask_logits_low_precision_stays_finite():
  for dtype in (jnp.float16, jnp.bfloat16):
    out = heads.mask_logits(jnp.ones((2, 3), dtype), jnp.array([1, 0, 1]))
    assert out.dtype == dtype
    assert np.all(np.isfinite(np.asarray(out, np.float32)))
    assert float(out[0, 1]) < -1e4
