"""jcl data layer: sources, continual-learning benchmarks, fixed-shape streams.

Imports only NumPy and the standard library (TFDS and Pillow are imported
lazily by the loaders that need them), so it is shared by every backend.

Typical use:

  bench = jcl.data.make_benchmark('split_mnist', scenario='class')
  for task in bench.tasks:
    for chunk in jcl.data.epoch_chunks(task.train, batch_size=32,
                                       chunk_steps=50, rng=rng):
      ...  # chunk.x: [50, 32, 28, 28, 1]; chunk.mask marks padding.
"""

from jcl.data.benchmarks import BENCHMARKS
from jcl.data.benchmarks import Benchmark
from jcl.data.benchmarks import joint_task
from jcl.data.benchmarks import make_benchmark
from jcl.data.benchmarks import permuted_mnist
from jcl.data.benchmarks import rotated_mnist
from jcl.data.benchmarks import SCENARIOS
from jcl.data.benchmarks import split_benchmark
from jcl.data.benchmarks import split_cifar10
from jcl.data.benchmarks import split_cifar100
from jcl.data.benchmarks import split_fashion_mnist
from jcl.data.benchmarks import split_mnist
from jcl.data.benchmarks import split_tinyimagenet
from jcl.data.benchmarks import Task
from jcl.data.benchmarks import TaskSplit
from jcl.data.benchmarks import transformed_benchmark
from jcl.data.dataset import DataError
from jcl.data.dataset import Dataset
from jcl.data.dataset import make_dataset
from jcl.data.idx import load_idx_dir
from jcl.data.idx import read_idx
from jcl.data.idx import write_idx
from jcl.data.sources import load_dataset
from jcl.data.sources import load_mnist_sample
from jcl.data.sources import load_npz
from jcl.data.sources import load_tfds
from jcl.data.sources import load_tinyimagenet
from jcl.data.sources import save_npz
from jcl.data.sources import SOURCES
from jcl.data.stream import epoch_chunks
from jcl.data.stream import eval_chunks
from jcl.data.stream import num_batches
from jcl.data.stream import num_chunks
from jcl.data.transforms import permute_pixels
from jcl.data.transforms import rotate_images
from jcl.data.transforms import task_angles
from jcl.data.transforms import task_permutations

__all__ = (
  'BENCHMARKS',
  'Benchmark',
  'DataError',
  'Dataset',
  'SCENARIOS',
  'SOURCES',
  'Task',
  'TaskSplit',
  'epoch_chunks',
  'eval_chunks',
  'joint_task',
  'load_dataset',
  'load_idx_dir',
  'load_mnist_sample',
  'load_npz',
  'load_tfds',
  'load_tinyimagenet',
  'make_benchmark',
  'make_dataset',
  'num_batches',
  'num_chunks',
  'permute_pixels',
  'permuted_mnist',
  'read_idx',
  'rotate_images',
  'rotated_mnist',
  'save_npz',
  'split_benchmark',
  'split_cifar10',
  'split_cifar100',
  'split_fashion_mnist',
  'split_mnist',
  'split_tinyimagenet',
  'task_angles',
  'task_permutations',
  'transformed_benchmark',
  'write_idx',
)
