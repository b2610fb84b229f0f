"""Riemannian Walk (Chaudhry et al. 2018; Avalanche's RWalkPlugin) on an MNIST stream.

  python -m experiments.train --config=configs/rwalk.py:split_mnist \
      --config.benchmark.path=../shared/data/mnist --workdir=/tmp/rwalk
  python -m experiments.train --config=configs/rwalk.py:permuted_mnist --workdir=/tmp/rwalk

The argument after ':' picks the stream (permuted_mnist, rotated_mnist,
split_mnist, split_mnist_class, permuted_mnist_online; see configs/common.py),
or an image stream of configs/streams.py (seq_cifar10, seq_tinyimagenet,
split_cifar100); without `benchmark.path` the MNIST streams use the
real-MNIST sample bundled with jcl. `ewc_alpha` 0.9 and `delta_t` 10 are
Avalanche's defaults; `ewc_lambda` (the normalised importances lie in
[0, 2]) per stream below.
"""

from configs import streams
from configs.common import base_config, strength

# ewc_lambda per stream (class-IL Split MNIST and online Permuted MNIST reuse
# split_mnist's and permuted_mnist's, untuned). split_mnist: Avalanche's 0.1.
RWALK_LAMBDA = {'permuted_mnist': 10.0, 'rotated_mnist': 10.0, 'split_mnist': 0.1}


def get_config(benchmark: str = 'permuted_mnist'):
  if streams.is_stream(benchmark):
    return streams.method_config('rwalk', benchmark)
  config = base_config(benchmark)
  config.algo = dict(
    name='rwalk', ewc_lambda=strength(RWALK_LAMBDA, benchmark), ewc_alpha=0.9, delta_t=10
  )
  return config
