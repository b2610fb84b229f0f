"""Quickstart: EWC on 5-task Permuted MNIST, from the real-MNIST sample bundled with jcl.

  python -m experiments.train --config=configs/quickstart.py --workdir=/tmp/jcl_quickstart

Runs offline in well under 2 minutes on 2 CPU cores and prints the accuracy
matrix with ACC / BWT / FWT / forgetting.
"""

from jcl.config import default_config


def get_config():
  config = default_config('permuted_mnist')
  config.benchmark.num_tasks = 5
  config.model.widths = (256, 256)
  config.algo = dict(name='ewc', ewc_lambda=100.0)
  config.optimizer.learning_rate = 0.05
  config.train.epochs = 2
  config.train.batch_size = 32
  return config
