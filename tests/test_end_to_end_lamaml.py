"""End to end on real MNIST: La-MAML against Naive SGD on rotated digits.

`configs/lamaml.py:lamaml` (MNIST Rotations: single pass, batch 10, MLP
2x100, buffer 200, 5 glances, first order) shortened for CI to 4 tasks of
300 training samples; task t is rotated by an angle drawn in [45t, 45t + 45)
degrees and evaluated on its whole 10k test set. Naive SGD (lr 0.1, the
C-MAML weight rate) on the same stream is the baseline. Seen here (seed 0):
Naive RA 46.2 / BTI -18.5, La-MAML RA 68.6 / BTI +0.3. The full protocol
(20 tasks x 1000) is `experiments/reproduce.py`'s job: about 75-76 RA.
"""

from configs import lamaml as lamaml_configs
from jcl import experiment
from jcl import specs
from jcl import train as train_lib
from jcl.algorithms import naive

from tests.mnist import require_mnist


def test_lamaml_keeps_rotated_digits_that_naive_sgd_forgets():
  config = lamaml_configs.get_config('lamaml')
  config.benchmark.path = require_mnist()
  config.benchmark.num_tasks = 4
  config.benchmark.samples_per_task = 300
  config.optimizer.learning_rate = 0.1  # Naive's SGD; La-MAML's asynchronous update has its own
  parts = experiment.build(config)
  # Both start from the same weights on the same stream.
  lamaml = train_lib.fit(
    parts.algorithm, parts.train_state, parts.benchmark, parts.train_config, rng=parts.algo_rng
  ).summary
  sgd = train_lib.fit(
    naive.make(specs.NaiveSpec()),
    parts.train_state,
    parts.benchmark,
    parts.train_config,
    rng=parts.algo_rng,
  ).summary
  print(
    f'naive: RA {sgd["acc"]:.3f} BWT {sgd["bwt"]:.3f}; '
    f'la-maml: RA {lamaml["acc"]:.3f} BWT {lamaml["bwt"]:.3f}'
  )
  assert lamaml['acc'] > 0.6
  assert lamaml['acc'] > sgd['acc'] + 0.12
  assert sgd['bwt'] < -0.1  # naive forgets the earlier rotations...
  assert lamaml['bwt'] > sgd['bwt'] + 0.1  # ...La-MAML much less
