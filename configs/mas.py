"""Memory Aware Synapses (Aljundi et al. 2018) on an MNIST stream.

  python -m experiments.train --config=configs/mas.py:permuted_mnist --workdir=/tmp/mas
  python -m experiments.train --config=configs/mas.py:rotated_mnist \
      --config.benchmark.path=../shared/data/mnist --workdir=/tmp/mas

The argument after ':' picks the stream (permuted_mnist, rotated_mnist,
split_mnist; see configs/common.py), or an image stream of configs/streams.py
(seq_cifar10, seq_tinyimagenet, split_cifar100); without `benchmark.path` the
MNIST streams use the real-MNIST sample bundled with jcl.
"""

from configs import streams
from configs.common import MAS_LAMBDA, base_config, strength


def get_config(benchmark: str = 'permuted_mnist'):
  if streams.is_stream(benchmark):
    return streams.method_config('mas', benchmark)
  config = base_config(benchmark)
  config.algo = dict(name='mas', mas_lambda=strength(MAS_LAMBDA, benchmark))
  return config
