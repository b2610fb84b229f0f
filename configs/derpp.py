"""DER++ (Buzzega et al. 2020), reservoir buffer.

  python -m experiments.train --config=configs/derpp.py:split_mnist_class \
      --config.benchmark.path=../shared/data/mnist --workdir=/tmp/derpp
  python -m experiments.train --config=configs/derpp.py:split_mnist_class,500 ...   # buffer 500

The argument is 'STREAM[,MEMORY_SIZE]' (streams in configs/replay.py).
"""

from configs.replay import replay_config


def get_config(arg: str = 'split_mnist_class,200'):
  benchmark, _, memory = arg.partition(',')
  return replay_config('derpp', benchmark, int(memory or 200))
