"""The throughput protocol of `experiments/bench_peers.py` (and of the Avalanche
peer benchmark in ../shared/bench/avalanche): Permuted MNIST, 10 tasks of the
60k MNIST training images, MLP 784-256-256-10, SGD lr 0.01 momentum 0.9, one
epoch a task; EWC with lambda 1 (separate penalties, the Fisher on all the
task's samples), replay with a memory of 500 and a replay batch as large as
the batch (Avalanche's `Replay(mem_size=500)`), A-GEM with its paper's
defaults. The argument is `ALGORITHM,BATCH_SIZE`:

  python -m experiments.train --config=configs/bench.py:naive,10 \
      --config.benchmark.path=../shared/data/mnist --workdir=/tmp/bench_naive_10

Without `benchmark.path` the bundled sample (1000 images a task) is used.
"""

from jcl.config import default_config


def get_config(arg: str = 'naive,10'):
  algorithm, batch_size = arg.split(',')
  config = default_config('permuted_mnist')
  config.benchmark.num_tasks = 10
  config.model.widths = (256, 256)
  config.algo = dict(name=algorithm)
  if algorithm == 'ewc':
    config.algo = dict(name='ewc', ewc_lambda=1.0)  # Avalanche's EWC row: lambda 1, separate
  if algorithm in ('er', 'der', 'derpp'):
    config.algo = dict(name=algorithm, memory_size=500, replay_batch_size=int(batch_size))
  config.optimizer.learning_rate = 0.01
  config.optimizer.momentum = 0.9
  config.train.batch_size = int(batch_size)
  config.train.epochs = 1
  config.log.progress = False
  config.log.plots = False
  return config
