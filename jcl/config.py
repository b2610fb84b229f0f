"""Default experiment config and benchmark presets (ml_collections).

Config files in `configs/` start from `default_config()` and override a few
fields, as flax's examples do. Sections:

  seed        int, everything (init, data order, algorithm keys) derives from it
  benchmark   kwargs of `jcl.data.make_benchmark` plus `name`
  model       kwargs of `jcl.models.make_model` plus `name` (the head comes
              from the benchmark's scenario); `model_preset(name)` is the
              section of another model, at that model's defaults (what
              `--config.model=cnn` switches to)
  algo        the algorithm's spec: `name` plus its hyperparameters
  optimizer   `jcl.specs.OptimizerSpec`
  train       `jcl.run_spec.TrainConfig` (epochs, batch size, chunk size...)
  checkpoint  `jcl.run_spec.CheckpointSpec` (enabled, every_chunks, max_to_keep)
  num_seeds, grid, replicas
              `jcl.run_spec.ReplicasSpec`: several seeds / a hyperparameter
              grid as one program (jcl.replicas)
  log         `jcl.run_spec.LogSpec`: writers ('console', 'jsonl', 'csv',
              'tensorboard', 'wandb'), progress bar, how often training
              metrics are written, PNG plots at the end
  compilation_cache
              the persistent XLA compilation cache ('auto', a path, or '')
  user_module a Python file of your own exporting `model_fn(benchmark)` (a
              flax module) and/or `data_fn(seed)` (a `jcl.data.Benchmark`),
              used instead of the model / benchmark sections (`jcl.user_module`)

Every default lives once, in those dataclasses; `default_config` copies
them (`section_config`). `jcl.run_spec.RunSpec.from_config` validates a
config and is the only thing the run sees.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from jcl import run_spec
from jcl import specs


def benchmark_preset(name: str) -> ml_collections.ConfigDict:
  """The benchmark section of the standard MNIST streams.

  `source='auto'` reads `path` (a folder of IDX files, e.g.
  `../shared/data/mnist`, or an NPZ) when one is given, else the real-MNIST
  sample shipped with jcl. `pixel_max` declares the brightest stored pixel
  value (None: 255, uint8 images; 1.0 for float images in [0, 1]).
  """
  common = dict(
    source='auto',
    path=ml_collections.FieldReference(None, field_type=str),
    pixel_max=ml_collections.FieldReference(None, field_type=float),
    samples_per_task=ml_collections.FieldReference(None, field_type=int),
    val_fraction=0.0,
  )
  presets = {
    'permuted_mnist': dict(name='permuted_mnist', num_tasks=10, scenario='domain'),
    'rotated_mnist': dict(
      name='rotated_mnist',
      num_tasks=20,
      scenario='domain',
      angles='fixed_step',
      degrees_per_task=9.0,
    ),
    'split_mnist': dict(name='split_mnist', num_tasks=5, scenario='task'),
    # Class-incremental Split MNIST ("Seq-MNIST" of DER / Mammoth).
    'split_mnist_class': dict(name='split_mnist', num_tasks=5, scenario='class'),
    # GEM's "MNIST permutations": 20 tasks of 1000 samples, single pass.
    'permuted_mnist_online': dict(name='permuted_mnist', num_tasks=20, scenario='domain'),
  }
  if name not in presets:
    raise ValueError(f'unknown benchmark preset {name!r}; known: {", ".join(sorted(presets))}')
  config = ml_collections.ConfigDict({**presets[name], **common})
  if name == 'permuted_mnist_online':
    config.samples_per_task = 1000
  return config


# The model fields that come from the benchmark (its scenario's head), never from the config.
HEAD_FIELDS = ('num_classes', 'num_heads', 'task_classes')


def model_preset(name: str) -> ml_collections.ConfigDict:
  """The model section of the registered model `name` (`jcl.models.model_names()`):
  its name and its fields at the model class's defaults, bar the head's.

  >>> sorted(model_preset('cnn').items())
  [('channels', (32, 64)), ('dropout', 0.0), ('hidden', 256), ('name', 'cnn')]
  """
  from jcl import models  # flax: imported only when a model is switched

  if name not in models.model_names():
    raise ValueError(f'model: unknown model {name!r}; known: {", ".join(models.model_names())}')
  try:
    model = models.make_model(name)
  except TypeError as e:  # a registered model with required fields
    raise ValueError(f'model {name!r} has no preset (its fields have no defaults: {e})') from None
  values = {'name': name}
  for field in dataclasses.fields(model):
    if field.init and field.name not in ('parent', 'name', *HEAD_FIELDS):
      value = getattr(model, field.name)
      values[field.name] = (
        ml_collections.FieldReference(None, field_type=object) if value is None else value
      )
  return ml_collections.ConfigDict(values)


def section_config(cls, **overrides: Any) -> ml_collections.ConfigDict:
  """A config section holding the defaults of the dataclass `cls` (`jcl.run_spec`
  or `jcl.specs`), so that each default is written once, in the dataclass.
  Optional fields get a typed `FieldReference`, so `--config.x.y=1.0` works
  on a field whose default is None."""
  types = run_spec.field_types(cls)
  values = {}
  for field in dataclasses.fields(cls):
    if field.name in overrides:
      value = overrides.pop(field.name)
    elif field.default is not dataclasses.MISSING:
      value = field.default
    else:
      value = field.default_factory()
    if value is None:
      value = ml_collections.FieldReference(None, field_type=types[field.name])
    values[field.name] = value
  values.update(overrides)
  return ml_collections.ConfigDict(values)


def default_config(benchmark: str = 'permuted_mnist') -> ml_collections.ConfigDict:
  """The config every file in `configs/` starts from: the benchmark preset,
  an MLP 2x100, Naive, and every other section at its dataclass defaults."""
  replicas = run_spec.ReplicasSpec()
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.benchmark = benchmark_preset(benchmark)
  config.model = ml_collections.ConfigDict(dict(name='mlp', widths=(100, 100), dropout=0.0))
  config.algo = ml_collections.ConfigDict(dict(name='naive'))
  config.optimizer = section_config(specs.OptimizerSpec)
  train = section_config(run_spec.TrainConfig)
  del train['seed']  # the run's seed
  config.train = train
  config.log = section_config(run_spec.LogSpec)
  config.checkpoint = section_config(run_spec.CheckpointSpec)
  # Replicas (jcl.replicas): several seeds and/or a grid over scalar
  # hyperparameters trained as one program, e.g. `--config.num_seeds=5` or
  # `--config.grid='optimizer.learning_rate=0.01,0.1;algo.ewc_lambda=1,10'`.
  config.num_seeds = replicas.num_seeds
  config.grid = ''
  section = section_config(run_spec.ReplicasSpec)
  del section['num_seeds'], section['grid']
  config.replicas = section
  # Persistent XLA compilation cache: 'auto' (a user cache folder), a path, or ''.
  config.compilation_cache = 'auto'
  # A Python file exporting `model_fn(benchmark)` and/or `data_fn(seed)` ('': none).
  config.user_module = ''
  return config
