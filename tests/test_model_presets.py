"""The model from the command line: presets of every registered model, and a
user's own flax module and data from a Python file (`config.user_module`)."""

import dataclasses
import textwrap

import numpy as np
import pytest

from jcl import config as config_lib
from jcl import experiment
from jcl import models
from jcl import runs
from jcl import user_module
from jcl.data import benchmarks
from jcl.run_spec import RunSpec

# -----------------------------------------------------------------------------
# Presets.
# -----------------------------------------------------------------------------


@pytest.mark.parametrize('name', models.model_names())
def test_preset_is_the_model_at_its_defaults(name):
  preset = config_lib.model_preset(name).to_dict()
  assert preset.pop('name') == name
  model = models.make_model(name)
  fields = {f.name for f in dataclasses.fields(model) if f.init}
  assert set(preset) == fields - {'parent', 'name', *config_lib.HEAD_FIELDS}
  for field, value in preset.items():
    assert value == getattr(model, field)


@pytest.mark.parametrize('name', models.model_names())
def test_preset_builds_on_both_backends(name):
  """A preset's fields are the model's on JAX and on PyTorch."""
  bench = benchmarks.make_benchmark('split_mnist', num_tasks=2, samples_per_task=20)
  section = config_lib.model_preset(name).to_dict()
  assert (
    type(experiment.build_model(section, bench)).__name__ == type(models.make_model(name)).__name__
  )
  torch_models = pytest.importorskip('jcl.torch.models')
  fields = {k: v for k, v in section.items() if k != 'name'}
  torch_models.make_model(name, bench.input_shape, num_classes=bench.num_classes, **fields)


def test_unknown_preset_lists_the_models():
  with pytest.raises(ValueError, match="unknown model 'vit'; known: cnn, mlp, resnet18_reduced"):
    config_lib.model_preset('vit')


# -----------------------------------------------------------------------------
# A user module: model_fn(benchmark) and data_fn(seed).
# -----------------------------------------------------------------------------

LINEAR = """
import flax.linen as nn
import jax.numpy as jnp

import jcl.data


class Linear(nn.Module):
  num_classes: int

  @nn.compact
  def __call__(self, x, t=None, *, train=False, return_features=False):
    h = jnp.reshape(x, (x.shape[0], -1))
    logits = nn.Dense(self.num_classes)(h)
    return (logits, h) if return_features else logits
"""

MODEL_FN = """
def model_fn(benchmark):
  return Linear(benchmark.num_classes)
"""

DATA_FN = """
def data_fn(seed):
  return jcl.data.make_benchmark(
    'split_mnist', num_tasks=2, samples_per_task=200, scenario='class', seed=seed
  )
"""


def write(tmp_path, name, *parts):
  path = tmp_path / f'{name}.py'
  path.write_text(textwrap.dedent('\n'.join(parts)))
  return str(path)


def small_config(path):
  config = config_lib.default_config('permuted_mnist').to_dict()
  config['user_module'] = path
  config['train'].update(batch_size=20, chunk_steps=10)
  config['log'].update(loggers=(), progress=False, plots=False)
  config['checkpoint']['enabled'] = False
  return config


def test_user_model_and_data_run(tmp_path):
  path = write(tmp_path, 'mine', LINEAR, MODEL_FN, DATA_FN)
  spec = RunSpec.from_config(small_config(path))
  assert (spec.model.name, spec.benchmark.name) == ('user_module', 'user_module')
  assert spec.record()['model.path'] == spec.record()['benchmark.path'] == path
  result = runs.run(spec)
  assert result.accuracy_matrix.shape == (2, 2)  # the user's 2 tasks, not 10 permutations
  assert result.accuracy_matrix[1, 1] > 0.5  # learns the user's task (chance: 1/4 seen classes)
  parts = experiment.build(spec)
  assert type(parts.model).__name__ == 'Linear'


def test_user_data_with_a_builtin_model(tmp_path):
  path = write(tmp_path, 'data_only', 'import jcl.data', DATA_FN)
  spec = RunSpec.from_config(small_config(path))
  assert spec.model.name == 'mlp' and spec.benchmark.name == 'user_module'
  assert spec.build_benchmark().num_tasks == 2


def test_user_model_with_a_builtin_benchmark(tmp_path):
  path = write(tmp_path, 'model_only', LINEAR, MODEL_FN)
  spec = RunSpec.from_config(small_config(path))
  assert spec.benchmark.name == 'permuted_mnist' and spec.model.name == 'user_module'


BAD = {
  'no file': (None, 'no such file'),
  'nothing exported': ('x = 1', 'defines neither model_fn(benchmark) nor data_fn(seed)'),
  'import fails': ('import no_such_package_here', 'importing it failed: ModuleNotFoundError'),
  'model_fn arity': ('def model_fn():\n  pass', 'model_fn must be a function of one argument'),
  'data_fn not a benchmark': (
    'def data_fn(seed):\n  return [seed]',
    'data_fn(seed) must return a jcl.data.Benchmark, got list',
  ),
  'model_fn not a module': (
    'def model_fn(benchmark):\n  return 3',
    'model_fn(benchmark) must return a flax.linen.Module, got int',
  ),
  'wrong output width': (
    LINEAR + '\ndef model_fn(benchmark):\n  return Linear(3)',
    'logits [2, 10] expected (benchmark.num_classes = 10)',
  ),
  'no train keyword': (
    'import flax.linen as nn\n\n'
    'class Plain(nn.Module):\n'
    '  @nn.compact\n'
    '  def __call__(self, x, t=None):\n'
    '    return nn.Dense(10)(x.reshape((x.shape[0], -1)))\n\n'
    'def model_fn(benchmark):\n'
    '  return Plain()',
    'called as (x, t, train=False, return_features=False): TypeError',
  ),
}


@pytest.mark.parametrize('case', sorted(BAD))
def test_bad_user_module_is_named(tmp_path, case):
  source, message = BAD[case]
  path = (
    str(tmp_path / 'absent.py')
    if source is None
    else write(tmp_path, case.replace(' ', '_'), source)
  )
  with pytest.raises(ValueError) as err:
    spec = RunSpec.from_config(small_config(path))
    experiment.build(spec)
  assert f'user_module {path}: ' in str(err.value)
  assert message in str(err.value)


def test_user_model_takes_no_regime_fields(tmp_path):
  """Stable SGD's regime sets the model's dropout: a user's model is told to set it itself."""
  path = write(tmp_path, 'mine', LINEAR, MODEL_FN)
  bench = benchmarks.make_benchmark('split_mnist', num_tasks=2, samples_per_task=20)
  with pytest.raises(ValueError, match=r"takes no model fields, got \['dropout'\]"):
    experiment.build_model({'name': user_module.NAME, 'path': path, 'dropout': 0.5}, bench)


def test_user_module_is_imported_once(tmp_path):
  path = write(tmp_path, 'once', 'import jcl.data', 'COUNT = [0]', DATA_FN)
  assert user_module.load(path) is user_module.load(path)
  np.testing.assert_array_equal(
    user_module.benchmark(path, 3).tasks[0].train.y, user_module.benchmark(path, 3).tasks[0].train.y
  )


def test_torch_backend_refuses_a_user_model_by_name(tmp_path):
  path = write(tmp_path, 'model_only', LINEAR, MODEL_FN)
  with pytest.raises(ValueError, match="user module's model_fn .* torch backend cannot run"):
    runs.run(RunSpec.from_config(small_config(path)), backend='torch')
