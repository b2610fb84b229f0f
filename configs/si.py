"""Synaptic Intelligence (Zenke et al. 2017) on an MNIST stream.

  python -m experiments.train --config=configs/si.py:permuted_mnist --workdir=/tmp/si
  python -m experiments.train --config=configs/si.py:rotated_mnist \
      --config.benchmark.path=../shared/data/mnist --workdir=/tmp/si

The argument after ':' picks the stream (permuted_mnist, rotated_mnist,
split_mnist; see configs/common.py); without `benchmark.path` the real-MNIST
sample bundled with jcl is used.
"""

from configs.common import SI_LAMBDA, base_config


def get_config(benchmark: str = 'permuted_mnist'):
  config = base_config(benchmark)
  config.algo = dict(name='si', si_lambda=SI_LAMBDA[benchmark], xi=0.1)
  return config
