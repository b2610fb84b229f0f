"""End to end on real MNIST: LwF and ER-ACE against Naive, class-incremental.

Split MNIST, 5 tasks of 2 digits, SAMPLES training images per task (real
MNIST), one epoch, batch 10, MLP 2x100, SGD lr 0.01: the configs
configs/naive.py, configs/lwf.py (alpha per task 0, 1, 4, 9, 16, T = 2) and
configs/er_ace.py (buffer 200, replay batch 10) on
`split_mnist_class`, shortened, through `jcl.runs.run` as the
experiments.train binary runs them. Seen here (ACC / forgetting, %): Naive
19.5 / 97.8, LwF 25.8 / 89.8, ER-ACE 79.4 / 11.6. LwF gains little in
class-incremental learning (its distillation keeps the old classes' outputs
relative to each other, not against the new ones), but it does gain.
"""

import functools

import pytest

from jcl import runs

from configs import er_ace as er_ace_config
from configs import lwf as lwf_config
from configs import naive as naive_config
from tests.mnist import require_mnist

pytestmark = pytest.mark.slow

SAMPLES = 1000


@functools.lru_cache(maxsize=None)
def run(module):
  config = module.get_config('split_mnist_class')
  config.benchmark.path = require_mnist()
  config.benchmark.samples_per_task = SAMPLES
  config.log.loggers = ()
  config.log.progress = False
  config.log.plots = False
  config.checkpoint.enabled = False
  result = runs.run(config)
  print(module.__name__, {k: round(100 * v, 1) for k, v in result.summary.items()})
  return result


def test_lwf_beats_naive_class_incremental():
  naive, lwf = run(naive_config).summary, run(lwf_config).summary
  assert naive['acc'] < 0.25  # Naive keeps only the last task
  assert lwf['acc'] > 0.23
  assert lwf['acc'] > naive['acc'] + 0.04
  assert lwf['forgetting'] < naive['forgetting'] - 0.04


def test_er_ace_beats_naive_class_incremental():
  naive, er_ace = run(naive_config).summary, run(er_ace_config).summary
  assert er_ace['acc'] > 0.7
  assert er_ace['acc'] > naive['acc'] + 0.45
  assert er_ace['forgetting'] < 0.25
