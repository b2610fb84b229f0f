"""EWC (Kirkpatrick et al. 2017) on an MNIST stream.

  python -m experiments.train --config=configs/ewc.py:permuted_mnist --workdir=/tmp/ewc
  python -m experiments.train --config=configs/ewc.py:rotated_mnist \
      --config.benchmark.path=../shared/data/mnist --workdir=/tmp/ewc

The argument after ':' picks the stream (permuted_mnist, rotated_mnist,
split_mnist; see configs/common.py), or an image stream of configs/streams.py
(seq_cifar10, seq_tinyimagenet, split_cifar100); without `benchmark.path` the
MNIST streams use the real-MNIST sample bundled with jcl.
"""

from configs import streams
from configs.common import EWC_LAMBDA, base_config, strength


def get_config(benchmark: str = 'permuted_mnist'):
  if streams.is_stream(benchmark):
    return streams.method_config('ewc', benchmark)
  config = base_config(benchmark)
  config.algo = dict(name='ewc', ewc_lambda=strength(EWC_LAMBDA, benchmark), fisher='empirical')
  return config
