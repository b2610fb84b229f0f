"""Trains a continual-learning stream from an ml_collections config.

  python -m experiments.train --config=configs/quickstart.py --workdir=/tmp/jcl
  python -m experiments.train --config=configs/ewc_permuted_mnist.py \
      --config.algo.ewc_lambda=10 --workdir=/tmp/ewc
  python -m experiments.train --config=configs/er.py:split_mnist_class --backend=torch

Writes `results.json` (config, accuracy matrix, metrics, timings) and
`metrics.jsonl` into `--workdir`, and prints the accuracy matrix with ACC,
BWT, FWT and forgetting.
"""
from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from jcl import experiment
from jcl import replicas
from jcl import runs

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to an experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for results.json and logs.')
_BACKEND = flags.DEFINE_enum('backend', 'jax', ['jax', 'torch'],
                             'jax (jcl) or torch (jcl.torch: the same run on PyTorch).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _BACKEND.value == 'torch':
    if replicas.is_replicated(_CONFIG.value):
      raise app.UsageError('--backend=torch runs one seed and one config (no num_seeds / grid)')
    from jcl.torch import experiment as torch_experiment
    result = torch_experiment.run(_CONFIG.value, _WORKDIR.value)
    print(runs.format_summary(result))
    if _WORKDIR.value:
      print(f'results written to {_WORKDIR.value}/results.json')
    return
  replicas.initialize_distributed(_CONFIG.value)  # multi-host: before JAX uses a device
  logging.info('JAX devices: %s', jax.devices())
  if replicas.is_replicated(_CONFIG.value):  # --config.num_seeds=N and/or --config.grid=...
    print(replicas.format_summary(replicas.run(_CONFIG.value, _WORKDIR.value)))
    if _WORKDIR.value:
      print(f'results written to {_WORKDIR.value}/results.json')
    return
  result = experiment.run(_CONFIG.value, _WORKDIR.value)
  print(runs.format_summary(result))
  if _WORKDIR.value:
    print(f'results written to {_WORKDIR.value}/results.json')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
