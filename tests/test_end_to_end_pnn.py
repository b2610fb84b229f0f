"""End to end on real MNIST: PNN on task-incremental Split MNIST.

5 tasks of 2 digits, 300 training samples per task (the full test set of
each task), the stream and regime of `configs/pnn.py` (a 2x100 MLP column per
task, SGD lr 0.01, batch 10) with 3 epochs instead of one, as 30 steps leave
some columns near 90%. Each task is learnt far above chance (50%)
and, since the columns of earlier tasks (heads included) are frozen, their
accuracy never changes afterwards: `R[i, i] == R[i, j]` for every `j >= i`,
exactly. Both task-IL layouts: one head masked to the task's two classes,
and one 2-unit head per task.
"""

import numpy as np
import pytest

from configs import pnn as pnn_config
from jcl import experiment

from tests.mnist import require_mnist


@pytest.mark.parametrize('stream', ['split_mnist', 'split_mnist_multi_head'])
def test_pnn_learns_every_task_and_forgets_nothing(stream):
  config = pnn_config.get_config(stream)
  config.benchmark.path = require_mnist()
  config.benchmark.samples_per_task = 300
  config.train.epochs = 3
  config.log.loggers = ()
  config.log.progress = False
  result = experiment.run(config)
  accuracy = result.accuracy_matrix  # R[i, j]: task i after training task j
  print(stream, np.round(100 * accuracy, 1), result.summary)
  num_tasks = accuracy.shape[0]
  for i in range(num_tasks):
    np.testing.assert_array_equal(accuracy[i, i:], accuracy[i, i])  # bit-identical columns
  assert accuracy.diagonal().min() > 0.9  # seen: 94.7 - 99.9
  assert result.summary['forgetting'] == 0.0 and result.summary['bwt'] == 0.0
