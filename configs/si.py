"""Synaptic Intelligence (Zenke et al. 2017) on an MNIST stream.

  python -m experiments.train --config=configs/si.py:permuted_mnist --workdir=/tmp/si
  python -m experiments.train --config=configs/si.py:rotated_mnist \
      --config.benchmark.path=../shared/data/mnist --workdir=/tmp/si

The argument after ':' picks the stream (permuted_mnist, rotated_mnist,
split_mnist; see configs/common.py), or an image stream of configs/streams.py
(seq_cifar10, seq_tinyimagenet, split_cifar100); without `benchmark.path` the
MNIST streams use the real-MNIST sample bundled with jcl.
"""

from configs import streams
from configs.common import SI_LAMBDA, base_config, strength


def get_config(benchmark: str = 'permuted_mnist'):
  if streams.is_stream(benchmark):
    return streams.method_config('si', benchmark)
  config = base_config(benchmark)
  config.algo = dict(name='si', si_lambda=strength(SI_LAMBDA, benchmark), xi=0.1)
  return config
