"""The image streams of the literature: each stream's regime, in one place.

  seq_cifar10       Mammoth / DER's Seq-CIFAR-10: 5 tasks of 2 classes,
                    class-incremental, ResNet-18 (nf=64, CIFAR stem), SGD,
                    batch 32, 50 epochs a task.
  seq_tinyimagenet  Mammoth / DER's Seq-TinyImageNet: 10 tasks of 20
                    classes, class-incremental, ResNet-18 (nf=64), SGD,
                    batch 32, 100 epochs a task.
  split_cifar100    A-GEM's Split CIFAR-100: 20 tasks of 5 classes,
                    task-incremental with one head per task, reduced
                    ResNet-18 (nf=20), SGD, batch 10, a single epoch.

The configs that take a stream argument accept these names, e.g.

  python -m experiments.train --config=configs/naive.py:split_cifar100 \
      --config.benchmark.path=/data/cifar-100-python --workdir=/tmp/naive_c100
  python -m experiments.train --config=configs/er.py:seq_cifar10,500 \
      --config.benchmark.path=/data/cifar-10-batches-py --workdir=/tmp/er_c10
  python -m experiments.train --config=configs/derpp.py:seq_tinyimagenet,200 \
      --config.benchmark.path=/data/tiny-imagenet-200 --workdir=/tmp/derpp_tiny

`benchmark.path` is the unpacked CIFAR folder (python or binary version, or
the folder holding it) or the tiny-imagenet-200 folder, or an NPZ written by
`jcl.data.save_npz`; without a path, CIFAR is read from TFDS (a dataset
prepared in `~/tensorflow_datasets`; `--config.benchmark.source=tfds
--config.benchmark.path=DATA_DIR` for another data_dir). For the replay
methods ',N' is the memory: the buffer's size for ER / DER / DER++ and, as
Mammoth's `--buffer_size`, the total of A-GEM's and GEM's per-task memories
(N / tasks each).

Protocols, from the sources' code:

* Seq-CIFAR-10 / Seq-TinyImageNet: aimagelab/mammoth (commit e75a491c),
  `datasets/seq_cifar10.py` and `datasets/seq_tinyimagenet.py` (tasks,
  class-IL, mean/std normalization, batch 32, backbone 'resnet18'),
  `backbone/ResNetBlock.py` (`resnet18`: BasicBlock [2, 2, 2, 2], 64 base
  filters, 3x3 stride-1 stem, no max-pool: jcl's `resnet18_reduced` with
  nf=64), `utils/args.py` (plain SGD: no momentum, no weight decay, no
  scheduler) and `utils/best_args.py` (the DER paper's chosen learning rates
  and strengths per method and buffer; 50 epochs on Seq-CIFAR-10, 100 on
  Seq-TinyImageNet, where the dataset file's own default is now 50).
  Classes in label order (task k: classes 2k, 2k + 1), training on every
  output unit as Mammoth does (`train.mask_unseen_classes=False`; prediction
  chooses among the classes seen so far). TinyImageNet's class ids here are
  the sorted WordNet ids (Mammoth's preprocessed arrays may order them
  otherwise), its test set the labelled val split.
* Split CIFAR-100: facebookresearch/agem (commit 45421499),
  `conv_split_cifar.py` (20 tasks of 5 classes, a class order shuffled per
  run, one 5-class output block per task, 'RESNET-S': ResNet-18 with
  filters 20..160), `utils/data_utils.py` (the first 40,000 training images
  are the training set, the rest validation: here 20% of each task's
  training images are held out, `val_fraction=0.2`), and
  `replicate_results_iclr19.sh` (batch 10, single epoch, plain SGD; learning
  rates and strengths per method; A-GEM's 13 memories a class = 65 a task,
  memory batch 256); `replicate_results_er.sh` (ER: lr 0.1, replay batch
  10). GEM's settings on its own Split CIFAR-100 (same tasks, fixed class
  order, all 2,500 images a task, pixels / 255) come from
  facebookresearch/GradientEpisodicMemory `run_experiments.sh` (lr 0.1, 256
  memories a task, margin 0.5).

Augmentation. Seq-CIFAR-10 and Seq-TinyImageNet train, as Mammoth's
`TRANSFORM`s, on random crops with 4 pixels of black padding and
horizontal flips (`train.augment='crop:4,flip'`): every training forward
pass augments, the replay buffer keeps the plain images and replayed ones
are augmented afresh (`get_data(..., transform=self.transform)`), and the
logits DER stores are those of the augmented pass. Split CIFAR-100 does
not augment, as A-GEM (`model/model.py`: "We don't use data augmentation
for other datasets" than CUB / AWA) and GEM. `--config.train.augment=none`
switches it off.

Differences. A-GEM subtracts the per-pixel mean of the training images and
does not divide by a std; jcl standardizes each channel. A-GEM reports the
average over the last 17 tasks (the first 3 are kept for its
cross-validation); jcl's ACC averages all 20 (the accuracy matrix in
results.json gives the other). Learning rates and strengths are the
sources' values; a penalty strength (EWC, SI, MAS) may not mean the same
thing in jcl's implementation (it was not re-tuned here), and a method the
source does not run on a stream gets that stream's SGD learning rate and
jcl's spec defaults. No number on these streams has been measured here yet
(no `expected` entry).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import ml_collections

from jcl.config import default_config


@dataclasses.dataclass(frozen=True)
class Stream:
  """A stream's data protocol and training regime.

  Attributes:
    benchmark: the benchmark section: the builder's name and options.
    model: the model section.
    learning_rate: plain SGD's learning rate (the source's for 'naive').
    batch_size: training batch size.
    epochs: epochs a task.
    replay_batch_size: samples drawn from a replay memory each step.
    mask_unseen_classes: class-IL training masks classes not seen yet.
    eval_batch_size: evaluation batch size, a divisor of a task's test set
      (no padded batch); None: the train section's default.
    augment: the source's training-time augmentation (`train.augment`;
      `jcl.data.augment`), or None.
  """

  benchmark: dict[str, Any]
  model: dict[str, Any]
  learning_rate: float
  batch_size: int
  epochs: int
  replay_batch_size: int
  mask_unseen_classes: bool = True
  eval_batch_size: Optional[int] = None
  augment: Optional[str] = None


# Mammoth's RandomCrop(32 or 64, padding=4) + RandomHorizontalFlip().
_MAMMOTH_AUGMENTATION = 'crop:4,flip'

STREAMS = {
  'seq_cifar10': Stream(
    benchmark=dict(name='split_cifar10', num_tasks=5, scenario='class'),
    model=dict(name='resnet18_reduced', nf=64),
    learning_rate=0.1,
    batch_size=32,
    epochs=50,
    replay_batch_size=32,
    mask_unseen_classes=False,
    augment=_MAMMOTH_AUGMENTATION,
  ),
  'seq_tinyimagenet': Stream(
    benchmark=dict(name='split_tinyimagenet', num_tasks=10, scenario='class'),
    model=dict(name='resnet18_reduced', nf=64),
    learning_rate=0.03,
    batch_size=32,
    epochs=100,
    replay_batch_size=32,
    mask_unseen_classes=False,
    augment=_MAMMOTH_AUGMENTATION,
  ),
  'split_cifar100': Stream(
    benchmark=dict(
      name='split_cifar100',
      num_tasks=20,
      scenario='task',
      multi_head=True,
      class_order='random',
      val_fraction=0.2,
    ),
    model=dict(name='resnet18_reduced', nf=20),
    learning_rate=0.01,
    batch_size=10,
    epochs=1,
    replay_batch_size=10,
    eval_batch_size=500,  # a task's 500 test images
  ),
}

# What the configs call each method: the algorithm section it starts from.
_ALGORITHMS = {
  'ewc': dict(name='ewc', fisher='empirical'),
  'online_ewc': dict(name='ewc', online=True),
}
# Methods with a replay memory sized by the ',N' argument, and those keeping N / tasks per task.
REPLAY = ('er', 'der', 'derpp', 'agem', 'gem')
_PER_TASK = ('agem', 'gem')

# (learning rate, algorithm fields) per stream and method, with the memory for replay methods;
# the sources are in the module docstring.
SETTINGS: dict[str, dict[Any, tuple[float, dict[str, Any]]]] = {
  'seq_cifar10': {
    'naive': (0.1, {}),
    'online_ewc': (0.03, dict(ewc_lambda=10.0, gamma=1.0)),
    'si': (0.03, dict(si_lambda=0.5, xi=1.0)),
    ('er', 200): (0.1, {}),
    ('er', 500): (0.1, {}),
    ('der', 200): (0.03, dict(alpha=0.3)),
    ('der', 500): (0.03, dict(alpha=0.3)),
    ('derpp', 200): (0.03, dict(alpha=0.1, beta=0.5)),
    ('derpp', 500): (0.03, dict(alpha=0.2, beta=0.5)),
    ('agem', 200): (0.03, {}),
    ('agem', 500): (0.03, {}),
    ('gem', 200): (0.03, dict(margin=0.5)),
    ('gem', 500): (0.03, dict(margin=0.5)),
  },
  'seq_tinyimagenet': {
    'naive': (0.03, {}),
    'online_ewc': (0.03, dict(ewc_lambda=25.0, gamma=1.0)),
    'si': (0.03, dict(si_lambda=0.5, xi=1.0)),
    ('er', 200): (0.1, {}),
    ('er', 500): (0.03, {}),
    ('der', 200): (0.03, dict(alpha=0.1)),
    ('der', 500): (0.03, dict(alpha=0.1)),
    ('derpp', 200): (0.03, dict(alpha=0.1, beta=1.0)),
    ('derpp', 500): (0.03, dict(alpha=0.2, beta=0.5)),
    ('agem', 200): (0.01, {}),
    ('agem', 500): (0.01, {}),
  },
  'split_cifar100': {
    'naive': (0.01, {}),
    'ewc': (0.03, dict(ewc_lambda=10.0)),
    'si': (0.01, dict(si_lambda=0.1)),
    'mas': (0.03, dict(mas_lambda=0.1)),
    ('er', 200): (0.1, {}),
    ('agem', 1300): (0.03, dict(memory_batch_size=256)),
    ('gem', 5120): (0.1, dict(margin=0.5)),
  },
}
# The memory a replay method gets without ',N' (total; per task for A-GEM / GEM: N / tasks).
DEFAULT_MEMORY = {
  ('split_cifar100', 'agem'): 1300,  # A-GEM: 13 a class, 65 a task
  ('split_cifar100', 'gem'): 5120,  # GEM: 256 a task
}


def is_stream(name: str) -> bool:
  return name in STREAMS


def stream_config(name: str) -> ml_collections.ConfigDict:
  """The config of stream `name` with Naive at the stream's SGD learning rate."""
  if name not in STREAMS:
    raise ValueError(f'unknown stream {name!r}; known: {", ".join(STREAMS)}')
  stream = STREAMS[name]
  config = default_config('split_mnist')  # every section at its defaults, then the stream's
  benchmark = config.benchmark  # keeps the typed source / path / pixel_max / samples fields
  del benchmark['num_tasks'], benchmark['scenario']
  for key, value in stream.benchmark.items():
    benchmark[key] = value
  config.model = ml_collections.ConfigDict(stream.model)
  config.optimizer.learning_rate = stream.learning_rate
  config.train.batch_size = stream.batch_size
  config.train.epochs = stream.epochs
  config.train.mask_unseen_classes = stream.mask_unseen_classes
  if stream.eval_batch_size:
    config.train.eval_batch_size = stream.eval_batch_size
  if stream.augment:
    config.train.augment = stream.augment
  return config


def method_config(
  method: str, name: str, memory: Optional[int] = None
) -> ml_collections.ConfigDict:
  """The config of `method` (a config file's name: 'naive', 'online_ewc', 'er', ...) on
  stream `name`, with the source's learning rate and fields (module docstring).

  Args:
    method: the method.
    name: the stream.
    memory: replay methods: the memory (see the module docstring); None: the
      stream's default (200 unless `DEFAULT_MEMORY` says otherwise).

  Raises:
    ValueError: an unknown stream, or a memory for a method without one.
  """
  config = stream_config(name)
  if memory is not None and method not in REPLAY:
    raise ValueError(f'{method} has no replay memory: drop ",{memory}" from the stream argument')
  key: Any = method
  algo = dict(_ALGORITHMS.get(method, dict(name=method)))
  if method in REPLAY:
    memory = memory or DEFAULT_MEMORY.get((name, method), 200)
    key = (method, memory)
    num_tasks = STREAMS[name].benchmark['num_tasks']
    if method in _PER_TASK:
      if memory < num_tasks:
        raise ValueError(f'{method}: memory {memory} is less than one sample for each task')
      algo['memory_per_task'] = memory // num_tasks
    else:
      algo['memory_size'] = memory
    if method != 'gem':
      batch_field = 'memory_batch_size' if method == 'agem' else 'replay_batch_size'
      algo[batch_field] = STREAMS[name].replay_batch_size
  settings = SETTINGS[name]
  if key not in settings and method in REPLAY:  # another memory: the nearest one's rates
    known = sorted(k[1] for k in settings if isinstance(k, tuple) and k[0] == method)
    if known:
      key = (method, min(known, key=lambda m: abs(m - memory)))
  learning_rate, fields = settings.get(key, (STREAMS[name].learning_rate, {}))
  config.optimizer.learning_rate = learning_rate
  config.algo = {**algo, **fields}
  return config
