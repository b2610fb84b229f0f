"""Shapes, dropout, BatchNorm, jit and vmap of the `jcl.models` networks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcl import models

ARCHS = [
  # (name, kwargs, expected feature size)
  ('mlp', dict(widths=(100, 100)), 100),
  ('mlp', dict(widths=(256, 64)), 64),
  ('cnn', dict(), 256),
  ('resnet18_reduced', dict(nf=20), 160),
  ('resnet18_reduced', dict(nf=8), 64),
]


@pytest.mark.parametrize('name,kwargs,feat', ARCHS, ids=[f'{a[0]}-{a[2]}' for a in ARCHS])
@pytest.mark.parametrize('num_heads', [1, 3])
def test_output_shapes(name, kwargs, feat, num_heads, input_shape, abstract_variables):
  model = models.make_model(name, num_classes=7, num_heads=num_heads, **kwargs)
  variables = abstract_variables(model, input_shape)
  x = jax.ShapeDtypeStruct((5, *input_shape), jnp.float32)
  t = jax.ShapeDtypeStruct((5,), jnp.int32)
  logits = jax.eval_shape(model.apply, variables, x, t)
  assert (logits.shape, logits.dtype) == ((5, 7), jnp.float32)
  logits, features = jax.eval_shape(
    lambda v, x, t: model.apply(v, x, t, return_features=True), variables, x, t
  )
  assert logits.shape == (5, 7)
  assert (features.shape, features.dtype) == ((5, feat), jnp.float32)
  if name == 'resnet18_reduced':
    logits, _ = jax.eval_shape(
      lambda v, x, t: model.apply(v, x, t, train=True, mutable=['batch_stats']), variables, x, t
    )
    assert logits.shape == (5, 7)


@pytest.mark.parametrize('name', ['mlp', 'cnn', 'resnet'])
def test_forward_numerics(name, canonical, make_batch, jit):
  model, shape, variables = canonical(name)
  x, t = make_batch(shape, batch=4, num_tasks=3)
  logits, feats = jit(lambda v, x, t: model.apply(v, x, t, return_features=True))(variables, x, t)
  assert logits.shape == (4, 4)
  assert np.all(np.isfinite(logits)) and np.all(np.isfinite(feats))
  np.testing.assert_allclose(jit(model.apply)(variables, x, t), logits, rtol=1e-6, atol=1e-6)


def test_mlp_param_names_counts_and_flat_input(abstract_variables, canonical, make_batch, jit):
  v = abstract_variables(models.MLP(widths=(100, 100)), (28, 28, 1))
  assert set(v) == {'params'}
  assert sorted(v['params']) == ['Dense_0', 'Dense_1', 'head']
  assert v['params']['head']['kernel'].shape == (100, 10)
  assert models.count_params(v['params']) == 89_610
  v = abstract_variables(models.MLP(widths=(256, 256)), (784,))
  assert models.count_params(v['params']) == 269_322
  # Images and flat vectors give the same logits (the MLP flattens).
  model, shape, variables = canonical('mlp')
  x, t = make_batch(shape, num_tasks=3)
  apply = jit(model.apply)
  np.testing.assert_allclose(
    apply(variables, x, t), apply(variables, x.reshape(4, -1), t), rtol=1e-6, atol=1e-6
  )


def test_mlp_empty_widths_is_linear(abstract_variables):
  model = models.MLP(widths=())
  v = abstract_variables(model, (4, 4, 1))
  assert sorted(v['params']) == ['head']
  logits, feats = jax.eval_shape(
    lambda v, x: model.apply(v, x, None, return_features=True),
    v,
    jax.ShapeDtypeStruct((2, 4, 4, 1), jnp.float32),
  )
  assert logits.shape == (2, 10) and feats.shape == (2, 16)


def test_cnn_param_names(abstract_variables):
  v = abstract_variables(models.CNN(), (32, 32, 3))
  assert sorted(v['params']) == ['Conv_0', 'Conv_1', 'Dense_0', 'head']
  assert v['params']['Dense_0']['kernel'].shape == (8 * 8 * 64, 256)


def test_resnet_structure_and_param_count(abstract_variables):
  v = abstract_variables(models.ResNet18Reduced(nf=20, num_classes=10), (32, 32, 3))
  params = v['params']
  assert sorted(v) == ['batch_stats', 'params']
  assert sorted(params) == sorted(
    ['conv1', 'bn1', 'head'] + [f'layer{s}_{b}' for s in range(1, 5) for b in range(2)]
  )
  assert 'bias' not in params['conv1']  # conv before BN has no bias
  assert params['conv1']['kernel'].shape == (3, 3, 3, 20)
  assert params['layer4_1']['conv2']['kernel'].shape == (3, 3, 160, 160)
  assert 'shortcut_conv' not in params['layer1_0']
  assert 'shortcut_conv' not in params['layer2_1']
  assert params['layer2_0']['shortcut_conv']['kernel'].shape == (1, 1, 20, 40)
  assert params['head']['kernel'].shape == (160, 10)
  assert sorted(v['batch_stats']['bn1']) == ['mean', 'var']
  # Same count as Mammoth's PyTorch resnet18(10, nf=20).
  assert models.count_params(params) == 1_094_750


@pytest.mark.parametrize('name', ['mlp', 'cnn'])
def test_dropout(name, canonical, make_batch, jit):
  model, shape, variables = canonical(name)
  x, t = make_batch(shape, batch=8, num_tasks=3)
  apply_eval = jit(model.apply)
  apply_train = jit(lambda v, x, t, rng: model.apply(v, x, t, train=True, rngs={'dropout': rng}))
  eval_a = apply_eval(variables, x, t)
  np.testing.assert_array_equal(eval_a, apply_eval(variables, x, t))
  train_a = apply_train(variables, x, t, jax.random.key(1))
  train_b = apply_train(variables, x, t, jax.random.key(1))
  train_c = apply_train(variables, x, t, jax.random.key(2))
  np.testing.assert_array_equal(train_a, train_b)
  assert not np.allclose(train_a, eval_a)
  assert not np.allclose(train_a, train_c)


def test_no_dropout_rng_needed_without_dropout(canonical, make_batch, jit):
  model, shape, variables = canonical('mlp')
  model = model.clone(dropout=0.0)  # same parameters
  x, t = make_batch(shape, num_tasks=3)
  train, test = jit(
    lambda v, x, t: (model.apply(v, x, t, train=True), model.apply(v, x, t, train=False))
  )(variables, x, t)
  np.testing.assert_array_equal(train, test)


def test_resnet_batch_stats(canonical, make_batch, jit):
  model, shape, variables = canonical('resnet')
  x, t = make_batch(shape, batch=6, num_tasks=3)

  @jit
  def apply(variables, x, t):
    eval_logits, eval_updates = model.apply(variables, x, t, train=False, mutable=['batch_stats'])
    train_logits, train_updates = model.apply(variables, x, t, train=True, mutable=['batch_stats'])
    return eval_logits, eval_updates, train_logits, train_updates

  eval_logits, eval_updates, train_logits, train_updates = apply(variables, x, t)
  old = variables['batch_stats']
  # Eval mode: running averages are read and stay unchanged.
  jax.tree.map(np.testing.assert_array_equal, eval_updates['batch_stats'], old)
  # Train mode: batch statistics are used and every running average moves.
  new = train_updates['batch_stats']
  assert not np.allclose(train_logits, eval_logits)
  assert jax.tree.structure(old) == jax.tree.structure(new)
  assert all(jax.tree.leaves(jax.tree.map(lambda a, b: not np.allclose(a, b), old, new)))
  # momentum 0.9 (PyTorch 0.1): mean <- 0.9 * 0 + 0.1 * batch mean of conv1(x).
  conv = jax.lax.conv_general_dilated(
    x,
    variables['params']['conv1']['kernel'],
    (1, 1),
    ((1, 1), (1, 1)),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  )
  np.testing.assert_allclose(
    new['bn1']['mean'], 0.1 * conv.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6
  )
  # Train mode without mutable batch_stats is flax's error.
  with pytest.raises(Exception):
    model.apply(variables, x, t, train=True)


def test_resnet_jit_train_step(canonical, make_batch, jit):
  model, shape, variables = canonical('resnet')
  x, t = make_batch(shape, batch=4, num_tasks=3)
  y = jnp.arange(4, dtype=jnp.int32) % 4

  @jit
  def step(variables, x, y, t):
    def loss_fn(params):
      logits, updates = model.apply(
        {'params': params, 'batch_stats': variables['batch_stats']},
        x,
        t,
        train=True,
        mutable=['batch_stats'],
      )
      logp = jax.nn.log_softmax(logits)
      loss = -jnp.take_along_axis(logp, y[:, None], axis=1).mean()
      return loss, updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables['params'])
    params = jax.tree.map(lambda p, g: p - 0.1 * g, variables['params'], grads)
    return {'params': params, **updates}, loss, grads

  new_vars, loss, grads = step(variables, x, y, t)
  assert np.isfinite(loss)
  assert jax.tree.structure(new_vars) == jax.tree.structure(variables)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  # Only the heads of the tasks present in the batch receive gradient.
  g_head = np.asarray(grads['head']['kernel']).reshape(-1, 3, 4)
  present = set(np.asarray(t).tolist())
  for h in range(3):
    assert np.any(g_head[:, h] != 0) == (h in present)


@pytest.mark.parametrize('name', ['mlp', 'cnn', 'resnet'])
def test_vmap_over_parameter_sets(name, canonical, make_batch, jit):
  model, shape, _ = canonical(name)
  x, t = make_batch(shape, batch=4, num_tasks=3)
  keys = jax.random.split(jax.random.key(0), 3)
  if name == 'mlp':  # init itself vmapped over keys
    stacked = jax.vmap(lambda k: models.init_variables(model, k, shape))(keys)
  else:  # (cheaper to compile) one init per key, stacked
    stacked = jax.tree.map(
      lambda *a: jnp.stack(a), *[models.init_variables(model, k, shape) for k in keys]
    )
  assert all(leaf.shape[0] == 3 for leaf in jax.tree.leaves(stacked))

  @jit
  def apply_all(variables, x, t):
    return jax.vmap(lambda v: model.apply(v, x, t))(variables)

  logits = apply_all(stacked, x, t)
  assert logits.shape == (3, 4, 4)
  apply_one = jit(model.apply)
  for i in range(3):
    single = jax.tree.map(lambda a, i=i: a[i], stacked)
    np.testing.assert_allclose(logits[i], apply_one(single, x, t), rtol=1e-4, atol=1e-5)
  # Different keys give different parameter sets.
  assert not np.allclose(logits[0], logits[1])


def test_image_models_reject_flat_input():
  for model in (models.CNN(), models.ResNet18Reduced(nf=2)):
    with pytest.raises(ValueError, match='B, H, W, C'):
      jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0), (784,)))
