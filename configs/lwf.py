"""Learning without Forgetting (Li & Hoiem 2016), as Avalanche's `LwF`, on a single-head stream.

  python -m experiments.train --config=configs/lwf.py:split_mnist_class \
      --config.benchmark.path=../shared/data/mnist --workdir=/tmp/lwf

The argument after ':' picks the stream: class-incremental split_mnist_class,
domain-incremental permuted_mnist or rotated_mnist (configs/common.py), or an
image stream of configs/streams.py (seq_cifar10, seq_tinyimagenet); LwF is
single-head here, so not the task-incremental split_mnist / split_cifar100.
The regime is the one every MNIST config shares (MLP 2x100, SGD lr 0.01,
batch 10, one epoch; the class-IL output grows with the classes seen, as
Avalanche's incremental classifier). The distillation keeps the ratio of
distillation to cross-entropy of the continual-learning-baselines' Split MNIST
run (experiments/split_mnist/lwf.py: alpha per task 0, 0.5, 1.33, 2.25, 3.2
on a cross-entropy scaled by 1 / (k + 1), van de Ven et al.'s weighting, a
wrapper of theirs and not part of LwF; the ratio is k^2) with the
cross-entropy at full weight: alpha_k = k^2 (0, 1, 4, 9, 16, the last value
for later tasks), T = 2. That run trains 21 epochs of SGD lr 0.001, batch 128,
on a 1x200 MLP. Seen here (class-IL Split MNIST, 1000 images a task, one
epoch, tests/test_end_to_end_lwf_er_ace.py): ACC 25.8 (Naive 19.5); the
baselines' alphas with the cross-entropy at full weight: 19.7.
"""

from configs import streams
from configs.common import base_config

ALPHA = (0.0, 1.0, 4.0, 9.0, 16.0)
TEMPERATURE = 2.0


def get_config(benchmark: str = 'split_mnist_class'):
  if streams.is_stream(benchmark):
    config = streams.method_config('lwf', benchmark)
  else:
    config = base_config(benchmark)
  config.algo = dict(name='lwf', alpha=ALPHA, temperature=TEMPERATURE)
  return config
