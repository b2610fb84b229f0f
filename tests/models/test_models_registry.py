"""`make_model`, argument validation and the registry."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from jcl import models


def test_make_model_names():
  assert models.model_names() == ('cnn', 'mlp', 'resnet18_reduced')
  assert isinstance(models.make_model('mlp'), models.MLP)
  assert isinstance(models.make_model('cnn'), models.CNN)
  m = models.make_model('resnet18_reduced', nf=8, num_classes=100)
  assert isinstance(m, models.ResNet18Reduced)
  assert (m.nf, m.num_classes) == (8, 100)


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match='mlp.*resnet18_reduced|cnn, mlp'):
    models.make_model('resnet50')


def test_unknown_field():
  with pytest.raises(ValueError, match='nf'):
    models.make_model('mlp', nf=20)


@pytest.mark.parametrize(
  'name,kwargs,field',
  [
    ('mlp', dict(widths=(100, 0)), 'widths'),
    ('mlp', dict(widths=(100, -3)), 'widths'),
    ('mlp', dict(widths=100), 'widths'),
    ('mlp', dict(widths=(1.5,)), 'widths'),
    ('mlp', dict(dropout=1.0), 'dropout'),
    ('mlp', dict(dropout=-0.1), 'dropout'),
    ('mlp', dict(activation='swishy'), 'activation'),
    ('mlp', dict(num_classes=0), 'num_classes'),
    ('mlp', dict(num_heads=0), 'num_heads'),
    ('mlp', dict(num_heads=True), 'num_heads'),
    ('mlp', dict(task_classes=()), 'task_classes'),
    ('mlp', dict(task_classes=((0, 1), ())), 'task_classes'),
    ('mlp', dict(num_classes=4, task_classes=((0, 4),)), 'task_classes'),
    ('mlp', dict(task_classes=((0, -1),)), 'task_classes'),
    ('mlp', dict(num_heads=3, task_classes=((0,), (1,))), 'task_classes'),
    ('cnn', dict(channels=()), 'channels'),
    ('cnn', dict(channels=(32, 0)), 'channels'),
    ('cnn', dict(hidden=0), 'hidden'),
    ('cnn', dict(dropout=2.0), 'dropout'),
    ('cnn', dict(num_heads=-1), 'num_heads'),
    ('resnet18_reduced', dict(nf=0), 'nf'),
    ('resnet18_reduced', dict(num_heads=0), 'num_heads'),
    ('resnet18_reduced', dict(num_classes=-2), 'num_classes'),
  ],
)
def test_bad_values_name_the_field(name, kwargs, field):
  with pytest.raises(ValueError, match=field):
    models.make_model(name, **kwargs)


def test_direct_construction_is_validated_too():
  with pytest.raises(ValueError, match='widths'):
    models.MLP(widths=(0,))
  with pytest.raises(ValueError, match='num_heads'):
    models.TaskHead(num_classes=3, num_heads=0)


def test_register_model():

  class Tiny(nn.Module):
    num_classes: int = 2

    @nn.compact
    def __call__(self, x, t=None, *, train=False, return_features=False):
      f = x.reshape(x.shape[0], -1)
      logits = nn.Dense(self.num_classes, name='head')(f)
      return (logits, f) if return_features else logits

  models.register_model('tiny_test_model', Tiny)
  try:
    model = models.make_model('tiny_test_model', num_classes=3)
    variables = models.init_variables(model, jax.random.key(0), (2, 2))
    assert variables['params']['head']['kernel'].shape == (4, 3)
    with pytest.raises(ValueError, match='already registered'):
      models.register_model('tiny_test_model', Tiny)
  finally:
    from jcl.models import registry

    registry._REGISTRY.pop('tiny_test_model', None)
  with pytest.raises(ValueError, match='cls'):
    models.register_model('not_a_module', object)


def test_count_params():
  tree = {'a': jnp.zeros((3, 4)), 'b': [jnp.zeros(5), jnp.zeros(())]}
  assert models.count_params(tree) == 18
  assert models.count_params({}) == 0
