"""Shared settings of the replay and gradient-projection configs.

Streams (the argument after ':'):
  split_mnist_class      class-incremental Split MNIST (DER's "Seq-MNIST"):
                         MLP 2x100, SGD, batch 10, one epoch, replay batch 10.
  permuted_mnist_online  GEM's MNIST permutations: 20 tasks x 1000 samples,
                         single pass, batch 10, MLP 2x100, SGD lr 0.1.
  split_mnist, permuted_mnist, rotated_mnist  as in configs/common.py.
  seq_cifar10, seq_tinyimagenet, split_cifar100  the image streams of
                         configs/streams.py (regime and settings there).

Learning rates and strengths for Seq-MNIST follow the DER paper's chosen
hyperparameters (Buzzega et al. 2020, appendix; buffer 200 and 500), and so
does the protocol: class-incremental training on all 10 output units, no
masking of classes not seen yet (`train.mask_unseen_classes=False`). Masking
them costs DER about 10 points here: its stored logits of unseen classes
then keep their initial values and pin the new classes' logits on old
samples.
"""

from configs import streams
from configs.common import base_config

# (learning rate, algorithm hyperparameters) per (method, buffer size), Seq-MNIST.
SEQ_MNIST = {
  ('er', 200): (0.01, {}),
  ('er', 500): (0.1, {}),
  ('der', 200): (0.03, {'alpha': 0.2}),
  ('der', 500): (0.03, {'alpha': 1.0}),
  ('derpp', 200): (0.03, {'alpha': 0.2, 'beta': 1.0}),
  ('derpp', 500): (0.03, {'alpha': 1.0, 'beta': 0.5}),
}


def replay_config(method: str, benchmark: str, memory_size: int = 200):
  """A config for `method` in ('er', 'der', 'derpp') on `benchmark`."""
  if streams.is_stream(benchmark):
    return streams.method_config(method, benchmark, memory_size)
  config = base_config(benchmark)
  lr, extra = SEQ_MNIST.get((method, memory_size), SEQ_MNIST[(method, 200)])
  config.optimizer.learning_rate = lr
  config.algo = dict(name=method, memory_size=memory_size, replay_batch_size=10, **extra)
  if benchmark == 'split_mnist_class':
    config.train.mask_unseen_classes = False
  if benchmark == 'permuted_mnist_online':
    config.optimizer.learning_rate = 0.1
  return config


def projection_config(method: str, benchmark: str, memory: int | None = None):
  """A config for `method` in ('agem', 'gem'); `memory` (the total of the per-task
  memories) only on the image streams of configs/streams.py."""
  if streams.is_stream(benchmark):
    return streams.method_config(method, benchmark, memory)
  if memory is not None:
    raise ValueError(
      f'{method} on {benchmark}: the MNIST streams keep a fixed memory per task '
      f'(--config.algo.memory_per_task=N); drop ",{memory}"'
    )
  config = base_config(benchmark)
  config.optimizer.learning_rate = 0.1 if benchmark == 'permuted_mnist_online' else 0.01
  if method == 'gem':
    config.algo = dict(name='gem', memory_per_task=256, margin=0.5)
  else:
    config.algo = dict(name='agem', memory_per_task=250, memory_batch_size=256)
  return config
