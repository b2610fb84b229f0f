"""ER-ACE (Caccia et al. 2022), Mammoth's `er_ace`: reservoir replay with the
asymmetric cross-entropy.

  python -m experiments.train --config=configs/er_ace.py:split_mnist_class \
      --config.benchmark.path=../shared/data/mnist --workdir=/tmp/er_ace
  python -m experiments.train --config=configs/er_ace.py:split_mnist_class,500 ...   # buffer 500

The argument is 'STREAM[,MEMORY_SIZE]', the streams of configs/er.py (those of
configs/replay.py and configs/streams.py), each in ER's regime and with ER's
learning rate for that memory (untuned for ER-ACE; Mammoth's own
`models/config/er_ace.yaml` has only Seq-CIFAR-10 with 200, at ER's 0.1 there
too): class-incremental Split MNIST on all 10 output units
(`train.mask_unseen_classes=False`), as Mammoth trains it.
"""

from configs import streams
from configs.replay import replay_config


def get_config(arg: str = 'split_mnist_class,200'):
  benchmark, _, memory = arg.partition(',')
  memory_size = int(memory or 200)
  if streams.is_stream(benchmark):
    config = streams.method_config('er', benchmark, memory_size)
  else:
    config = replay_config('er', benchmark, memory_size)
  config.algo.name = 'er_ace'
  return config
