"""Kernel Continual Learning (Derakhshani et al., ICML 2021), task-incremental.

  python -m experiments.train --config=configs/kcl.py:split_mnist \
      --config.benchmark.path=../shared/data/mnist --workdir=/tmp/kcl
  python -m experiments.train --config=configs/kcl.py:permuted_mnist ...
  python -m experiments.train --config=configs/kcl.py:permuted_mnist,rbf ...   # another kernel

The argument is 'STREAM[,KERNEL]', KERNEL in rff (default), rbf, linear.
Streams (task ids given at test time, as KCL needs them):
  split_mnist     5 tasks of 2 digits, a masked single head.
  permuted_mnist  20 permutations (the first the identity), the paper's
                  protocol (Permuted MNIST, 20 tasks).
  rotated_mnist   20 rotations by 9 degrees more each (the Stable SGD /
                  MC-SGD stream; the authors rotate by 10 degrees minus a
                  random jitter).

Hyperparameters. The authors' code (mmderakhshani/KCL, a fork of Stable
SGD's) trains an MLP 2x256 with dropout, SGD momentum 0.8 re-created every
task, batch 10, one epoch, learning rate `max(0.1 * gamma**k, 5e-5)` for
task k = 1, 2, ... (so `learning_rate` here is `0.1 * gamma`, jcl's tasks
being 0-based); their MNIST coreset is `core_size` samples per task shared
equally by the task's classes, and the paper's coreset is 20 samples per
class: 200 per Permuted/Rotated task, 40 per Split task. The ridge starts at
0.1 and tau = 0.01 (their CIFAR/miniImageNet search script and Sequel's
defaults); D = 2048 random features. The authors' published MNIST scripts
run their non-variational `main_rbf` with dropout 0.5 and gamma 0.5; those
are used here (their rff MNIST command is not published). The paper's
reported averages (20 tasks, as cited in Sequel's notes and our brief, not
re-checked against the PDF): Permuted MNIST 85.5, Rotated MNIST 81.8.

Per-task decay: the Stable SGD regime's gamma for each stream (0.8 on
Permuted MNIST, 0.5 elsewhere). Measured here (seed 0, real MNIST, full
training sets, ACC %, task-IL):

  split_mnist      rff 96.0 (forgetting 3.8), rbf 97.6 (1.8)
  permuted_mnist   first 10 of the 20 tasks: gamma 0.8 -> 81.6, gamma 0.5 -> 74.8
                   (20 tasks of 5k samples, gamma 0.5: 66.9)

Forgetting stays near zero on Permuted MNIST (0.1-1.2 points): what is
short of the paper is each task's own accuracy (86% on the first task,
falling with the decayed learning rate), not its retention. The paper's
numbers are not reproduced, so no `expected` entry is set.
"""

from jcl.config import default_config

STREAMS = ('split_mnist', 'permuted_mnist', 'rotated_mnist')
CORESET_PER_CLASS = 20
CLASSES_PER_TASK = {'split_mnist': 2, 'permuted_mnist': 10, 'rotated_mnist': 10}
# Per-task learning-rate decay: Stable SGD's per stream (the regime KCL's code inherits).
GAMMA = {'split_mnist': 0.5, 'permuted_mnist': 0.8, 'rotated_mnist': 0.5}
BASE_LR = 0.1  # the authors' `--lr`; task k (0-based) trains at BASE_LR * gamma**(k + 1)


def get_config(arg: str = 'split_mnist'):
  stream, _, kernel = arg.partition(',')
  if stream not in STREAMS:
    raise ValueError(f'configs/kcl.py: unknown stream {stream!r}; known: {", ".join(STREAMS)}')
  config = default_config(stream)
  config.benchmark.scenario = 'task'
  config.benchmark.normalize = False  # pixels in [0, 1] (torchvision's ToTensor), as the authors
  if stream in ('permuted_mnist', 'rotated_mnist'):
    config.benchmark.num_tasks = 20
  if stream == 'permuted_mnist':
    config.benchmark.first_task_identity = True
  config.model.widths = (256, 256)
  config.model.dropout = 0.5
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = BASE_LR * GAMMA[stream]
  config.optimizer.momentum = 0.8
  config.optimizer.lr_decay = GAMMA[stream]
  config.optimizer.min_lr = 5e-5
  config.optimizer.reinit_per_task = True
  config.train.batch_size = 10
  config.train.epochs = 1
  config.algo = dict(
    name='kcl',
    kernel=kernel or 'rff',
    core_size=CORESET_PER_CLASS * CLASSES_PER_TASK[stream],
    num_random_features=2048,
    ridge_lambda=0.1,
    tau=0.01,
  )
  return config
