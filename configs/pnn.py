"""Progressive Neural Networks (Rusu et al. 2016) on task-incremental MNIST.

  python -m experiments.train --config=configs/pnn.py:split_mnist \
      --config.benchmark.path=../shared/data/mnist --workdir=/tmp/pnn
  python -m experiments.train --config=configs/pnn.py:permuted_mnist_task,mlp ...

The argument is 'STREAM[,ADAPTER]':
  split_mnist             5 tasks of 2 digits, one head masked to the task's
                          classes (the task-IL preset of configs/common.py).
  split_mnist_multi_head  the same with one 2-unit head per task.
  permuted_mnist_task     10 pixel permutations, one 10-unit head per task.
ADAPTER is 'linear' (eq. 1, default) or 'mlp' (eq. 2).

Each column is the 2x100 MLP of the other configs (so the network ends with
T times its parameters plus the adapters), trained with the shared regime:
SGD lr 0.01, batch 10, one epoch per task (lr 0.05 made a multi-head column
unstable on small data).

Measured on real MNIST (all training images, seed 0; ACC / forgetting, %):
  split_mnist             linear 99.00 / 0.00   mlp 99.14 / 0.00
                          (naive on the same stream: 98.80 / 0.56)
  split_mnist_multi_head  linear 99.11 / 0.00
  permuted_mnist_task     linear 95.58 / 0.00   mlp 95.53 / 0.00
                          (naive, one multi-head MLP: 87.09 / 9.36, with the
                          same 95.5 learning accuracy)
"""

from configs.common import base_config

STREAMS = ('split_mnist', 'split_mnist_multi_head', 'permuted_mnist_task')


def get_config(arg: str = 'split_mnist'):
  stream, _, adapter = arg.partition(',')
  if stream not in STREAMS:
    raise ValueError(f'unknown PNN stream {stream!r}; known: {", ".join(STREAMS)}')
  config = base_config('permuted_mnist' if stream == 'permuted_mnist_task' else 'split_mnist')
  if stream != 'split_mnist':
    config.benchmark.scenario = 'task'
    config.benchmark.multi_head = True
  config.algo = dict(name='pnn', adapter=adapter or 'linear')
  return config
