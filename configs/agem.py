"""A-GEM (Chaudhry et al. 2019), per-task episodic memory.

  python -m experiments.train --config=configs/agem.py:permuted_mnist_online \
      --config.benchmark.path=../shared/data/mnist --workdir=/tmp/agem

Streams in configs/replay.py.
"""

from configs.replay import projection_config


def get_config(benchmark: str = 'permuted_mnist_online'):
  return projection_config('agem', benchmark)
