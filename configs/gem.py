"""GEM (Lopez-Paz & Ranzato 2017), per-task episodic memory.

  python -m experiments.train --config=configs/gem.py:permuted_mnist_online \
      --config.benchmark.path=../shared/data/mnist --workdir=/tmp/gem

Streams in configs/replay.py. On the image streams of configs/streams.py the
argument is 'STREAM[,MEMORY]', MEMORY the total of the per-task memories
(e.g. configs/gem.py:seq_cifar10,500 keeps 100 samples a task).
"""

from configs.replay import projection_config


def get_config(arg: str = 'permuted_mnist_online'):
  benchmark, _, memory = arg.partition(',')
  return projection_config('gem', benchmark, int(memory) if memory else None)
