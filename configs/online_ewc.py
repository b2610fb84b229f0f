"""Online EWC (Schwarz et al. 2018) on an MNIST stream.

  python -m experiments.train --config=configs/online_ewc.py:permuted_mnist \
      --workdir=/tmp/online_ewc
  python -m experiments.train --config=configs/online_ewc.py:rotated_mnist \
      --config.benchmark.path=../shared/data/mnist --workdir=/tmp/online_ewc

The argument after ':' picks the stream (permuted_mnist, rotated_mnist,
split_mnist; see configs/common.py), or an image stream of configs/streams.py
(seq_cifar10, seq_tinyimagenet, split_cifar100); without `benchmark.path` the
MNIST streams use the real-MNIST sample bundled with jcl.
"""

from configs import streams
from configs.common import ONLINE_EWC, base_config, strength


def get_config(benchmark: str = 'permuted_mnist'):
  if streams.is_stream(benchmark):
    return streams.method_config('online_ewc', benchmark)
  config = base_config(benchmark)
  ewc_lambda, gamma = strength(ONLINE_EWC, benchmark)
  config.algo = dict(name='ewc', ewc_lambda=ewc_lambda, online=True, gamma=gamma)
  return config
