"""Default experiment config and benchmark presets (ml_collections).

Config files in `configs/` start from `default_config()` and override a few
fields, as flax's examples do. Sections:

  seed        int, everything (init, data order, algorithm keys) derives from it
  benchmark   kwargs of `jcl.data.make_benchmark` plus `name`
  model       kwargs of `jcl.models.make_model` plus `name` (the head comes
              from the benchmark's scenario)
  algo        the algorithm's spec: `name` plus its hyperparameters
  optimizer   `jcl.specs.OptimizerSpec`
  train       `jcl.train.TrainConfig` (epochs, batch size, chunk size...)
  checkpoint  Orbax checkpoints and resumption (enabled, every_chunks, max_to_keep)
  num_seeds, grid, replicas
              several seeds / a hyperparameter grid as one program (jcl.replicas)
  log         loggers ('console', 'jsonl', 'csv', 'tensorboard', 'wandb',
              'comet'), progress bar, how often chunk metrics are written,
              PNG plots of the accuracy matrix at the end
"""
from __future__ import annotations

import ml_collections


def benchmark_preset(name: str) -> ml_collections.ConfigDict:
  """The benchmark section of the standard MNIST streams.

  `source='auto'` reads `path` (a folder of IDX files, e.g.
  `../shared/data/mnist`) when one is given, else the real-MNIST sample
  shipped with jcl.
  """
  common = dict(source='auto', path=ml_collections.FieldReference(None, field_type=str),
                samples_per_task=ml_collections.FieldReference(None, field_type=int),
                val_fraction=0.0)
  presets = {
      'permuted_mnist': dict(name='permuted_mnist', num_tasks=10, scenario='domain'),
      'rotated_mnist': dict(name='rotated_mnist', num_tasks=20, scenario='domain',
                            angles='fixed_step', degrees_per_task=9.0),
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


def default_config(benchmark: str = 'permuted_mnist') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.benchmark = benchmark_preset(benchmark)
  config.model = ml_collections.ConfigDict(dict(name='mlp', widths=(100, 100), dropout=0.0))
  config.algo = ml_collections.ConfigDict(dict(name='naive'))
  config.optimizer = ml_collections.ConfigDict(dict(
      name='sgd', learning_rate=0.05, momentum=0.0, weight_decay=0.0, lr_decay=1.0, min_lr=0.0,
      reinit_per_task=True, grad_clip_norm=ml_collections.FieldReference(None, field_type=float)))
  config.train = ml_collections.ConfigDict(dict(
      epochs=1, batch_size=10, chunk_steps=100, drop_last=False, eval_batch_size=1000,
      eval_split='test', end_task_batch_size=256, mask_unseen_classes=True,
      importance_samples=ml_collections.FieldReference(None, field_type=int)))
  config.log = ml_collections.ConfigDict(dict(loggers=('console', 'jsonl'), progress=True,
                                              every_chunks=10, plots=True))
  # Orbax checkpoints in WORKDIR/checkpoints: after every task, and every
  # `every_chunks` chunks (0 = task boundaries only); a rerun resumes.
  config.checkpoint = ml_collections.ConfigDict(dict(enabled=True, every_chunks=0, max_to_keep=3))
  # Replicas (jcl.replicas): several seeds and/or a grid over scalar
  # hyperparameters trained as one program, e.g. `--config.num_seeds=5` or
  # `--config.grid='optimizer.learning_rate=0.01,0.1;algo.ewc_lambda=1,10'`.
  # mode: 'auto' (vmap on accelerators, one compiled program run replica
  # after replica on CPU), 'vmap' or 'sequential'.
  config.num_seeds = 1
  config.grid = ''
  config.replicas = ml_collections.ConfigDict(dict(mode='auto', batch_shards=1, rank_by='acc',
                                                   distributed=False))
  return config
