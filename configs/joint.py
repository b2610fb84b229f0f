"""Joint training on tasks 0..k at task k (the upper bound) on an MNIST stream.

  python -m experiments.train --config=configs/joint.py:permuted_mnist --workdir=/tmp/joint
  python -m experiments.train --config=configs/joint.py:rotated_mnist \
      --config.benchmark.path=../shared/data/mnist --workdir=/tmp/joint

The argument after ':' picks the stream (permuted_mnist, rotated_mnist,
split_mnist; see configs/common.py), or an image stream of configs/streams.py
(seq_cifar10, seq_tinyimagenet, split_cifar100); without `benchmark.path` the
MNIST streams use the real-MNIST sample bundled with jcl.
"""

from configs import streams
from configs.common import base_config


def get_config(benchmark: str = 'permuted_mnist'):
  if streams.is_stream(benchmark):
    return streams.method_config('joint', benchmark)
  config = base_config(benchmark)
  config.algo = dict(name='joint')
  return config
