"""GEM (Lopez-Paz & Ranzato 2017), per-task episodic memory.

  python -m experiments.train --config=configs/gem.py:permuted_mnist_online \
      --config.benchmark.path=../shared/data/mnist --workdir=/tmp/gem

Streams in configs/replay.py.
"""

from configs.replay import projection_config


def get_config(benchmark: str = 'permuted_mnist_online'):
  return projection_config('gem', benchmark)
