"""Maximally Interfered Retrieval (Aljundi et al. 2019), ER-MIR, reservoir buffer.

  python -m experiments.train --config=configs/mir.py:split_mnist_class \
      --config.benchmark.path=../shared/data/mnist --workdir=/tmp/mir
  python -m experiments.train --config=configs/mir.py:split_mnist_class,500 ...   # buffer 500

The argument is 'STREAM[,MEMORY_SIZE]' (streams in configs/replay.py): ER's
config (learning rate, replay batch 10, class-IL protocol) with 50
candidates a step, the MNIST setting of the authors' code.
"""

from configs import streams
from configs.replay import replay_config

MIR_CANDIDATES = 50


def get_config(arg: str = 'split_mnist_class,200'):
  benchmark, _, memory = arg.partition(',')
  if streams.is_stream(benchmark):
    config = streams.method_config('er', benchmark, int(memory) if memory else None)
  else:
    config = replay_config('er', benchmark, int(memory or 200))
  algo = config.algo
  config.algo = dict(
    name='mir',
    memory_size=algo.memory_size,
    replay_batch_size=algo.replay_batch_size,
    mir_candidates=max(MIR_CANDIDATES, algo.replay_batch_size),
  )
  return config
