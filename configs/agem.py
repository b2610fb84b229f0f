"""A-GEM (Chaudhry et al. 2019), per-task episodic memory.

  python -m experiments.train --config=configs/agem.py:permuted_mnist_online \
      --config.benchmark.path=../shared/data/mnist --workdir=/tmp/agem

Streams in configs/replay.py. On the image streams of configs/streams.py the
argument is 'STREAM[,MEMORY]', MEMORY the total of the per-task memories
(e.g. configs/agem.py:seq_cifar10,500 keeps 100 samples a task).
"""

from configs.replay import projection_config


def get_config(arg: str = 'permuted_mnist_online'):
  benchmark, _, memory = arg.partition(',')
  return projection_config('agem', benchmark, int(memory) if memory else None)
