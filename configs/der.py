"""Dark Experience Replay (Buzzega et al. 2020), reservoir buffer.

  python -m experiments.train --config=configs/der.py:split_mnist_class \
      --config.benchmark.path=../shared/data/mnist --workdir=/tmp/der
  python -m experiments.train --config=configs/der.py:split_mnist_class,500 ...   # buffer 500

The argument is 'STREAM[,MEMORY_SIZE]' (streams in configs/replay.py).
"""

from configs.replay import replay_config


def get_config(arg: str = 'split_mnist_class,200'):
  benchmark, _, memory = arg.partition(',')
  return replay_config('der', benchmark, int(memory or 200))
