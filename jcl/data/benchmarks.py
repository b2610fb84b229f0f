"""Continual-learning benchmarks: task sequences of normalized NumPy arrays.

Builders (all deterministic given `seed`; task ids are 0-based):

* Split benchmarks (`split_mnist`, `split_fashion_mnist`, `split_cifar10`,
  `split_cifar100`, `split_tinyimagenet`, or `split_benchmark` on any
  `Dataset`): the C classes, in `class_order`, are cut into T = `num_tasks`
  consecutive groups of m = C / T; task k gets `order[k*m:(k+1)*m]`.
* `permuted_mnist`: each task permutes the pixels with its own permutation.
* `rotated_mnist`: each task rotates the images by its own angle.

Label conventions (what `TaskSplit.y` holds, the model's label space):

* Split benchmarks, `scenario='class'`, and `scenario='task'` with
  `multi_head=False` (task-IL by masking): one output space of all C classes;
  the original label `c` maps to its position in the class order
  (`order.index(c)`), so task k owns the contiguous output units
  `k*m .. (k+1)*m - 1` (`task_classes[k]`). `num_classes = C`,
  `num_heads = 1`. Class-IL hides unseen units with `seen_classes_mask`,
  task-IL with `task_classes_mask`.
* Split benchmarks, `scenario='domain'`: labels are the position within the
  task, `order.index(c) % m` in `0..m-1`, one shared head:
  `num_classes = m`, `num_heads = 1`.
* Split benchmarks, `scenario='task'`, `multi_head=True`: labels are the
  position within the task (as domain), one head per task:
  `num_classes = m`, `num_heads = num_tasks`.
* Permuted / Rotated MNIST, `scenario='domain'` (default) or `'task'`: the
  original digit labels 0..9 (`num_classes = 10`); `'task'` has
  `num_heads = num_tasks` when `multi_head`, else 1 (masking is then a
  no-op: every task owns all 10 units). `scenario='class'`: task k's digit
  `c` is the output unit `10 * k + c` (`num_classes = 10 * num_tasks`).

Model inputs are float32 `[N, H, W, C]`, `(x / pixel_max - mean) / std` with
the dataset's constants (`normalize=True`) or `x / pixel_max`. A task's split
holds row numbers into the dataset's stored images and a view (per-task pixel
maps for Permuted / Rotated MNIST, the normalization): inputs are derived when
a chunk is gathered (`TaskSplit.inputs`, or on the device by `jcl.inputs`),
so a benchmark costs the dataset once plus a few bytes per sample and task,
whatever the number of tasks.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import os
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from jcl.data import transforms
from jcl.data.dataset import Dataset
from jcl.data.sources import PathLike, canonical_name, load_dataset
from jcl.data.views import InputView, PixelMaps

SCENARIOS = ('task', 'domain', 'class')
CLASS_ORDERS = ('fixed', 'random')
SPLITS = ('train', 'val', 'test')

ClassOrder = Union[str, Sequence[int]]


# -----------------------------------------------------------------------------
# Containers.
# -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class TaskSplit:
  """One split (train, val or test) of one task: rows of stored images seen
  through an `InputView` (`jcl.data.views`); the model's inputs are derived
  when asked for, never kept.

  Attributes:
    images: `[M, H, W, C]` stored images (uint8, or floats in
      `[0, pixel_max]`), shared with the dataset and the other tasks.
    rows: `[N]` int64 rows of `images`.
    y: `[N]` int32 labels in the model's label space (after remapping).
    t: `[N]` int32 0-based task id (constant within a task; Joint mixes them).
    view: how stored pixels become model inputs (per-task pixel maps, scaling,
      normalization).
  """

  images: np.ndarray
  rows: np.ndarray
  y: np.ndarray
  t: np.ndarray
  view: InputView

  @classmethod
  def of_arrays(cls, x: np.ndarray, y: np.ndarray, t: np.ndarray) -> 'TaskSplit':
    """A split of ready model inputs `x` (float32 `[N, H, W, C]`), as given."""
    x = np.asarray(x, np.float32)
    return cls(
      x,
      np.arange(len(x)),
      np.asarray(y, np.int32),
      np.asarray(t, np.int32),
      InputView.identity(x.shape[-1]),
    )

  def __len__(self) -> int:
    return len(self.y)

  def inputs(self, idx: Optional[np.ndarray] = None) -> np.ndarray:
    """Model inputs float32 `[len(idx), H, W, C]` of the samples at positions
    `idx` of this split (all by default); a position `>= N` (padding) gives
    an all-zero input. Derived on every call."""
    if idx is None:
      return self.view.inputs(self.images, self.rows, self.t)
    idx = np.asarray(idx)
    real = idx < len(self)
    safe = np.where(real, idx, 0)
    rows = np.where(real, self.rows[safe], len(self.images))
    return self.view.inputs(self.images, rows, np.where(real, self.t[safe], 0))

  @property
  def x(self) -> np.ndarray:
    """`[N, H, W, C]` float32 model inputs, derived on every access (`inputs`)."""
    return self.inputs()

  def same_samples(self, other: 'TaskSplit') -> bool:
    """Whether `other` holds the same samples seen the same way (no input is derived)."""
    same = lambda a, b: (
      a is b or (a is not None and b is not None and a.shape == b.shape and np.array_equal(a, b))
    )
    mine, theirs = self.view, other.view
    return (
      all(same(getattr(self, f), getattr(other, f)) for f in ('images', 'rows', 'y', 't'))
      and mine.scale == theirs.scale
      and same(mine.mean, theirs.mean)
      and same(mine.std, theirs.std)
      and (mine.maps is None) == (theirs.maps is None)
      and (
        mine.maps is None
        or (same(mine.maps.index, theirs.maps.index) and same(mine.maps.weight, theirs.maps.weight))
      )
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
  """One task of a benchmark.

  Attributes:
    id: 0-based task index.
    classes: the original dataset labels present in this task.
    train: the training split.
    val: held out from the task's training data (never from test); None when
      `val_fraction == 0`.
    test: the test split.
  """

  id: int
  classes: tuple[int, ...]
  train: TaskSplit
  val: Optional[TaskSplit]
  test: TaskSplit


@dataclasses.dataclass(frozen=True, eq=False)
class Benchmark:
  """A sequence of tasks and the output space a model needs for them.

  Attributes:
    name: e.g. `'split_mnist'`.
    scenario: `'task'`, `'domain'` or `'class'` incremental.
    tasks: the tasks, in training order.
    num_classes: width of the model's output (of each head).
    num_heads: 1, or `num_tasks` for multi-head task-incremental learning.
    input_shape: shape of one input, e.g. `(28, 28, 1)`.
    task_classes: per task, the output units (model label space) its labels
      use.
    info: builder details: `class_order`, `permutations`, `angles`, `seed`,
      `dataset`, ... (depends on the builder).
  """

  name: str
  scenario: str
  tasks: tuple[Task, ...]
  num_classes: int
  num_heads: int
  input_shape: tuple[int, ...]
  task_classes: tuple[tuple[int, ...], ...]
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def num_tasks(self) -> int:
    return len(self.tasks)

  def _check_task_id(self, task_id: int) -> int:
    if not 0 <= task_id < self.num_tasks:
      raise ValueError(f'task_id={task_id}: must be in [0, {self.num_tasks})')
    return int(task_id)

  def task_classes_mask(self, task_id: int) -> np.ndarray:
    """bool `[num_classes]`: the output units of task `task_id` (task-IL)."""
    mask = np.zeros(self.num_classes, bool)
    mask[list(self.task_classes[self._check_task_id(task_id)])] = True
    return mask

  def seen_classes_mask(self, task_id: int) -> np.ndarray:
    """bool `[num_classes]`: output units of tasks `0..task_id` (class-IL)."""
    return self.class_mask_table()[: self._check_task_id(task_id) + 1].any(0)

  def class_mask_table(self) -> np.ndarray:
    """bool `[num_tasks, num_classes]`; row k is `task_classes_mask(k)`."""
    table = np.zeros((self.num_tasks, self.num_classes), bool)
    for k, units in enumerate(self.task_classes):
      table[k, list(units)] = True
    return table


def joint_task(benchmark: Benchmark, upto_task: int, split: str = 'train') -> TaskSplit:
  """Concatenation of one split of tasks `0..upto_task` (Joint upper bound).

  Args:
    benchmark: the benchmark.
    upto_task: last task included (inclusive, 0-based).
    split: `'train'`, `'val'` or `'test'` (tasks without val are skipped).

  Returns:
    A `TaskSplit` whose `t` keeps each sample's task id.
  """
  if split not in SPLITS:
    raise ValueError(f'split={split!r}: must be one of {SPLITS}')
  if not 0 <= upto_task < benchmark.num_tasks:
    raise ValueError(f'upto_task={upto_task}: must be in [0, {benchmark.num_tasks})')
  parts = [getattr(task, split) for task in benchmark.tasks[: upto_task + 1]]
  parts = [p for p in parts if p is not None]
  if not parts:
    raise ValueError(f'split={split!r}: no task up to {upto_task} has one')
  concat = lambda name: np.concatenate([getattr(p, name) for p in parts])
  if all(p.images is parts[0].images and p.view is parts[0].view for p in parts):
    return TaskSplit(parts[0].images, concat('rows'), concat('y'), concat('t'), parts[0].view)
  return TaskSplit.of_arrays(np.concatenate([p.x for p in parts]), concat('y'), concat('t'))


# -----------------------------------------------------------------------------
# Option checks.
# -----------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_common(
  num_tasks: Any, scenario: Any, multi_head: Any, samples_per_task: Any, val_fraction: Any
) -> None:
  """Validates the options every builder shares; raises ValueError."""
  if not _is_int(num_tasks) or num_tasks <= 0:
    raise ValueError(f'num_tasks={num_tasks!r}: must be a positive integer')
  if scenario not in SCENARIOS:
    raise ValueError(f'scenario={scenario!r}: must be one of {SCENARIOS}')
  if not isinstance(multi_head, bool):
    raise ValueError(f'multi_head={multi_head!r}: must be True or False')
  if multi_head and scenario != 'task':
    raise ValueError(
      f"multi_head=True: only with scenario='task' (got "
      f'scenario={scenario!r}); allowed: multi_head=False'
    )
  if samples_per_task is not None and (not _is_int(samples_per_task) or samples_per_task <= 0):
    raise ValueError(
      f'samples_per_task={samples_per_task!r}: must be None (all) or a positive integer'
    )
  if (
    not isinstance(val_fraction, numbers.Real)
    or isinstance(val_fraction, bool)
    or not 0 <= val_fraction < 1
  ):
    raise ValueError(f'val_fraction={val_fraction!r}: must be a number in [0, 1)')


def _resolve_class_order(
  class_order: ClassOrder, class_order_seed: Optional[int], seed: int, num_classes: int
) -> np.ndarray:
  """The class order as an int64 `[C]` permutation of `0..C-1`."""
  if isinstance(class_order, str):
    if class_order == 'fixed':
      return np.arange(num_classes)
    if class_order == 'random':
      s = seed if class_order_seed is None else class_order_seed
      if not _is_int(s):
        raise ValueError(
          f'class_order_seed={class_order_seed!r}: must be an integer or None (use seed)'
        )
      rng = np.random.default_rng([s, transforms.SEED_CLASS_ORDER])
      return rng.permutation(num_classes)
    raise ValueError(
      f'class_order={class_order!r}: must be one of '
      f'{CLASS_ORDERS} or a permutation of 0..{num_classes - 1}'
    )
  order = np.asarray(class_order)
  if (
    order.shape != (num_classes,)
    or not np.issubdtype(order.dtype, np.integer)
    or not np.array_equal(np.sort(order), np.arange(num_classes))
  ):
    raise ValueError(
      f'class_order={class_order!r}: must be one of '
      f'{CLASS_ORDERS} or a permutation of 0..{num_classes - 1}'
    )
  return order.astype(np.int64)


# The datasets loaded last, by what was asked and the files' identity: the
# benchmarks of a run's seeds and grid settings then share one copy of the
# stored images (which nothing writes to).
_LOADED: dict[tuple, Dataset] = {}
_LOADED_MAX = 2


def _file_identity(path: Optional[PathLike]) -> tuple:
  if path is None:
    return ()
  try:
    stat = os.stat(path)
  except OSError:
    return ()
  return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _resolve_dataset(
  dataset: Optional[Dataset],
  name: str,
  source: str,
  path: Optional[PathLike],
  pixel_max: Optional[float] = None,
) -> Dataset:
  if dataset is not None:
    if not isinstance(dataset, Dataset):
      raise ValueError(f'dataset={type(dataset).__name__}: must be a jcl.data.Dataset or None')
    return dataset
  key = (name, source, None if path is None else os.path.abspath(path), pixel_max)
  key += _file_identity(path)
  if key not in _LOADED:
    loaded = load_dataset(name, source=source, path=path, pixel_max=pixel_max)
    while len(_LOADED) >= _LOADED_MAX:
      del _LOADED[next(iter(_LOADED))]
    _LOADED[key] = loaded
  return _LOADED[key]


def _view(dataset: Dataset, normalize: bool, maps: Optional[PixelMaps] = None) -> InputView:
  """How the benchmark's tasks see `dataset`'s images: scaled by
  `1 / pixel_max`, standardized with the dataset's mean/std when
  `normalize`, through `maps` when given."""
  if not isinstance(normalize, bool):
    raise ValueError(f'normalize={normalize!r}: must be True or False')
  mean = std = None
  if normalize:
    mean, std = transforms.normalization_constants(
      canonical_name(dataset.name), dataset.x_train, dataset.pixel_max
    )
  return InputView.make(dataset.pixel_max, mean, std, dataset.input_shape[-1], maps)


def _subset(
  pool: np.ndarray,
  rng: np.random.Generator,
  samples_per_task: Optional[int],
  val_fraction: float,
  task_id: int,
) -> tuple[np.ndarray, Optional[np.ndarray]]:
  """Draws a task's (train, val) indices from its training pool.

  `samples_per_task` first subsamples the pool (train + val together); then
  `val_fraction` of it (at least one sample) is held out as val. Both index
  sets are returned sorted.
  """
  perm = rng.permutation(pool)
  if samples_per_task is not None:
    if samples_per_task > len(pool):
      raise ValueError(
        f'samples_per_task={samples_per_task}: task {task_id} '
        f'has only {len(pool)} training examples'
      )
    perm = perm[:samples_per_task]
  if val_fraction == 0:
    return np.sort(perm), None
  n_val = max(1, int(round(val_fraction * len(perm))))
  if n_val >= len(perm):
    raise ValueError(
      f'val_fraction={val_fraction}: leaves no training '
      f'examples in task {task_id} ({len(perm)} in all)'
    )
  return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _make_split(
  images: np.ndarray, rows: np.ndarray, y: np.ndarray, task_id: int, view: InputView
) -> TaskSplit:
  return TaskSplit(images, rows, np.asarray(y, np.int32), np.full(len(y), task_id, np.int32), view)


# -----------------------------------------------------------------------------
# Split benchmarks.
# -----------------------------------------------------------------------------


def split_benchmark(
  dataset: Dataset,
  *,
  num_tasks: int,
  name: Optional[str] = None,
  scenario: str = 'class',
  multi_head: bool = False,
  class_order: ClassOrder = 'fixed',
  class_order_seed: Optional[int] = None,
  samples_per_task: Optional[int] = None,
  val_fraction: float = 0.0,
  seed: int = 0,
  normalize: bool = True,
) -> Benchmark:
  """Splits the classes of any `Dataset` into tasks (see the module doc).

  Args:
    dataset: the raw dataset.
    num_tasks: T; must divide `dataset.num_classes`.
    name: benchmark name (default `'split_<dataset.name>'`).
    scenario: `'class'`, `'task'` or `'domain'`.
    multi_head: with `scenario='task'`, one head per task and labels within
      the task; otherwise masking of one shared output space.
    class_order: `'fixed'` (0..C-1), `'random'` (shuffled with
      `class_order_seed`), or an explicit permutation of 0..C-1. Task k gets
      classes `order[k*m:(k+1)*m]`, m = C / T.
    class_order_seed: seed of `'random'`; None uses `seed`.
    samples_per_task: training examples (train + val) kept per task, drawn at
      random; None keeps all.
    val_fraction: fraction of each task's training examples held out as its
      val split, in [0, 1).
    seed: seed of the subsampling and val split.
    normalize: standardize with the dataset's mean/std (else only `/ 255`).

  Returns:
    The `Benchmark`; `info['class_order']` holds the order.
  """
  _check_common(num_tasks, scenario, multi_head, samples_per_task, val_fraction)
  num_classes = dataset.num_classes
  if num_classes % num_tasks:
    divisors = [d for d in range(1, num_classes + 1) if num_classes % d == 0]
    raise ValueError(
      f'num_tasks={num_tasks}: must divide the {num_classes} '
      f'classes of {dataset.name!r} (allowed: {divisors})'
    )
  order = _resolve_class_order(class_order, class_order_seed, seed, num_classes)
  per_task = num_classes // num_tasks
  position = np.empty(num_classes, np.int64)
  position[order] = np.arange(num_classes)
  within_task = scenario == 'domain' or multi_head
  label_map = position % per_task if within_task else position
  view = _view(dataset, normalize)

  tasks = []
  task_classes = []
  for k in range(num_tasks):
    classes = order[k * per_task : (k + 1) * per_task]
    pool = np.flatnonzero(np.isin(dataset.y_train, classes))
    rng = np.random.default_rng([seed, transforms.SEED_SUBSET, k])
    train_idx, val_idx = _subset(pool, rng, samples_per_task, val_fraction, k)
    test_idx = np.flatnonzero(np.isin(dataset.y_test, classes))

    def split(x, y, idx, k=k):
      return _make_split(x, idx, label_map[y[idx]], k, view)

    tasks.append(
      Task(
        id=k,
        classes=tuple(int(c) for c in classes),
        train=split(dataset.x_train, dataset.y_train, train_idx),
        val=(None if val_idx is None else split(dataset.x_train, dataset.y_train, val_idx)),
        test=split(dataset.x_test, dataset.y_test, test_idx),
      )
    )
    units = range(per_task) if within_task else range(k * per_task, (k + 1) * per_task)
    task_classes.append(tuple(units))
  return Benchmark(
    name=name or f'split_{canonical_name(dataset.name)}',
    scenario=scenario,
    tasks=tuple(tasks),
    num_classes=per_task if within_task else num_classes,
    num_heads=num_tasks if multi_head else 1,
    input_shape=dataset.input_shape,
    task_classes=tuple(task_classes),
    info=dict(
      dataset=dataset.name,
      class_order=tuple(int(c) for c in order),
      seed=seed,
      samples_per_task=samples_per_task,
      val_fraction=val_fraction,
    ),
  )


def _split_builder(dataset_name: str, default_tasks: int, default_source: str = 'auto'):
  """Makes `split_<dataset>` builders sharing one signature."""

  def builder(
    num_tasks: int = default_tasks,
    *,
    scenario: str = 'class',
    multi_head: bool = False,
    class_order: ClassOrder = 'fixed',
    class_order_seed: Optional[int] = None,
    samples_per_task: Optional[int] = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    normalize: bool = True,
    source: str = default_source,
    path: Optional[PathLike] = None,
    pixel_max: Optional[float] = None,
    dataset: Optional[Dataset] = None,
  ) -> Benchmark:
    _check_common(num_tasks, scenario, multi_head, samples_per_task, val_fraction)
    ds = _resolve_dataset(dataset, dataset_name, source, path, pixel_max)
    return split_benchmark(
      ds,
      num_tasks=num_tasks,
      name=f'split_{dataset_name}',
      scenario=scenario,
      multi_head=multi_head,
      class_order=class_order,
      class_order_seed=class_order_seed,
      samples_per_task=samples_per_task,
      val_fraction=val_fraction,
      seed=seed,
      normalize=normalize,
    )

  builder.__name__ = builder.__qualname__ = f'split_{dataset_name}'
  return builder


_SPLIT_ARGS_DOC = """
  Args:
    num_tasks: T, must divide the number of classes.
    scenario: `'class'` (default), `'task'` or `'domain'`.
    multi_head: with `scenario='task'`, one head per task (labels within the
      task); else one masked output space.
    class_order: `'fixed'`, `'random'` or an explicit permutation.
    class_order_seed: seed of `class_order='random'` (None: `seed`).
    samples_per_task: train + val examples kept per task (None: all).
    val_fraction: fraction of each task's training data held out as val.
    seed: seed of the subsampling and val split.
    normalize: standardize with the dataset's mean/std.
    source: where to read the dataset (`load_dataset`): 'auto', 'sample',
      'idx', 'npz', 'tfds', 'folder'.
    path: file/folder for the source (TFDS data_dir for 'tfds').
    pixel_max: the brightest stored pixel value (None: 255, uint8 images;
      1.0 declares float images in [0, 1]).
    dataset: an already-loaded `Dataset` (then source/path are ignored).

  Returns:
    The `Benchmark` (label conventions in the module docstring).
"""

split_mnist = _split_builder('mnist', 5)
split_mnist.__doc__ = (
  'Split MNIST: 5 tasks of 2 digits (bundled real-MNIST '
  "sample by default: source='auto' without path).\n" + _SPLIT_ARGS_DOC
)
split_fashion_mnist = _split_builder('fashion_mnist', 5)
split_fashion_mnist.__doc__ = (
  'Split Fashion-MNIST: 5 tasks of 2 classes (TFDS by default, or IDX/NPZ '
  'via path).\n' + _SPLIT_ARGS_DOC
)
split_cifar10 = _split_builder('cifar10', 5)
split_cifar10.__doc__ = (
  'Split CIFAR-10: 5 tasks of 2 classes (TFDS by default, or an NPZ via path).\n' + _SPLIT_ARGS_DOC
)
split_cifar100 = _split_builder('cifar100', 10)
split_cifar100.__doc__ = (
  'Split CIFAR-100: 10 tasks of 10 classes by default '
  '(20 of 5 with num_tasks=20; TFDS by default, or an '
  'NPZ via path).\n' + _SPLIT_ARGS_DOC
)


def split_tinyimagenet(
  path: Optional[PathLike] = None,
  num_tasks: int = 10,
  *,
  scenario: str = 'class',
  multi_head: bool = False,
  class_order: ClassOrder = 'fixed',
  class_order_seed: Optional[int] = None,
  samples_per_task: Optional[int] = None,
  val_fraction: float = 0.0,
  seed: int = 0,
  normalize: bool = True,
  source: str = 'auto',
  pixel_max: Optional[float] = None,
  dataset: Optional[Dataset] = None,
) -> Benchmark:
  """Split TinyImageNet: 10 tasks of 20 classes by default.

  Args:
    path: the `tiny-imagenet-200` folder (JPEGs, needs Pillow) or an NPZ
      written by `save_npz`; not needed when `dataset` is given.
    num_tasks: T, must divide 200.
    scenario, multi_head, class_order, class_order_seed, samples_per_task,
      val_fraction, seed, normalize: as `split_mnist`.
    source: 'auto' (by the kind of `path`), 'folder' or 'npz'.
    pixel_max: the brightest stored pixel value (None: 255; 1.0 for floats in [0, 1]).
    dataset: an already-loaded `Dataset`.

  Returns:
    The `Benchmark`.
  """
  _check_common(num_tasks, scenario, multi_head, samples_per_task, val_fraction)
  if dataset is None and path is None:
    raise ValueError(
      'path=None: split_tinyimagenet needs path= (the '
      'tiny-imagenet-200 folder or an NPZ) or dataset='
    )
  ds = _resolve_dataset(dataset, 'tinyimagenet', source, path, pixel_max)
  return split_benchmark(
    ds,
    num_tasks=num_tasks,
    name='split_tinyimagenet',
    scenario=scenario,
    multi_head=multi_head,
    class_order=class_order,
    class_order_seed=class_order_seed,
    samples_per_task=samples_per_task,
    val_fraction=val_fraction,
    seed=seed,
    normalize=normalize,
  )


# -----------------------------------------------------------------------------
# Input-transformed benchmarks (Permuted / Rotated MNIST).
# -----------------------------------------------------------------------------


def transformed_benchmark(
  dataset: Dataset,
  maps: PixelMaps,
  *,
  name: str,
  scenario: str = 'domain',
  multi_head: bool = False,
  samples_per_task: Optional[int] = None,
  val_fraction: float = 0.0,
  seed: int = 0,
  normalize: bool = True,
  info: Optional[Mapping[str, Any]] = None,
) -> Benchmark:
  """One task per pixel map, all classes in every task.

  Each task draws its own training subset (`samples_per_task`, val held out
  from it) from the whole train set and uses the whole test set, seen through
  its pixel map (applied to the stored images, before normalization; see
  `jcl.data.views`). Nothing is derived ahead of time: memory does not grow
  with the number of tasks.

  Args:
    dataset: the raw dataset.
    maps: `PixelMaps` of T tasks (e.g. `transforms.permutation_maps`,
      `transforms.rotation_maps`): any per-pixel linear map of the images.
    name: benchmark name.
    scenario: `'domain'` (default), `'task'` or `'class'`.
    multi_head: with `scenario='task'`, one head per task.
    samples_per_task: train + val examples per task (None: all).
    val_fraction: fraction held out as val per task.
    seed: seed of the subsampling.
    normalize: standardize with the dataset's mean/std.
    info: extra entries for `Benchmark.info`.

  Returns:
    The `Benchmark` (labels: module docstring).
  """
  num_tasks = maps.num_tasks
  _check_common(num_tasks, scenario, multi_head, samples_per_task, val_fraction)
  num_classes = dataset.num_classes
  view = _view(dataset, normalize, maps)
  pool = np.arange(len(dataset.y_train))
  tasks = []
  task_classes = []
  for k in range(num_tasks):
    offset = k * num_classes if scenario == 'class' else 0
    rng = np.random.default_rng([seed, transforms.SEED_SUBSET, k])
    train_idx, val_idx = _subset(pool, rng, samples_per_task, val_fraction, k)

    def split(x, y, idx, k=k, offset=offset):
      return _make_split(x, idx, y[idx] + offset, k, view)

    tasks.append(
      Task(
        id=k,
        classes=tuple(range(num_classes)),
        train=split(dataset.x_train, dataset.y_train, train_idx),
        val=(None if val_idx is None else split(dataset.x_train, dataset.y_train, val_idx)),
        test=split(dataset.x_test, dataset.y_test, np.arange(len(dataset.y_test))),
      )
    )
    task_classes.append(tuple(range(offset, offset + num_classes)))
  return Benchmark(
    name=name,
    scenario=scenario,
    tasks=tuple(tasks),
    num_classes=num_classes * (num_tasks if scenario == 'class' else 1),
    num_heads=num_tasks if multi_head else 1,
    input_shape=dataset.input_shape,
    task_classes=tuple(task_classes),
    info=dict(
      dataset=dataset.name,
      seed=seed,
      samples_per_task=samples_per_task,
      val_fraction=val_fraction,
      **(info or {}),
    ),
  )


def permuted_mnist(
  num_tasks: int = 10,
  *,
  scenario: str = 'domain',
  multi_head: bool = False,
  first_task_identity: bool = False,
  samples_per_task: Optional[int] = None,
  val_fraction: float = 0.0,
  seed: int = 0,
  normalize: bool = True,
  source: str = 'auto',
  path: Optional[PathLike] = None,
  pixel_max: Optional[float] = None,
  dataset: Optional[Dataset] = None,
) -> Benchmark:
  """Permuted MNIST: task k shuffles the pixels with permutation k.

  By default every task, the first included, gets a fresh random
  permutation from `seed` (as Avalanche's `PermutedMNIST` and GEM's data
  script); `first_task_identity=True` keeps task 0 unpermuted (as e.g. the
  EWC / Synaptic Intelligence papers). The permutations are in
  `info['permutations']` (`[T, 784]`).

  Args:
    num_tasks: T.
    scenario: `'domain'` (default: 10 shared classes), `'task'` or
      `'class'` (10 new output units per task).
    multi_head: with `scenario='task'`, one head per task.
    first_task_identity: task 0 is the original MNIST.
    samples_per_task: train + val examples per task, each task drawing its
      own subset (None: the whole train set in every task).
    val_fraction: fraction held out as val per task.
    seed: seed of the permutations and the subsampling.
    normalize: standardize with the MNIST mean/std.
    source: 'auto' (bundled sample without path), 'sample', 'idx', 'npz',
      'tfds'.
    path: file/folder for the source.
    pixel_max: the brightest stored pixel value (None: 255; 1.0 for floats in [0, 1]).
    dataset: an already-loaded `Dataset`.

  Returns:
    The `Benchmark`.
  """
  _check_common(num_tasks, scenario, multi_head, samples_per_task, val_fraction)
  if not isinstance(first_task_identity, bool):
    raise ValueError(f'first_task_identity={first_task_identity!r}: must be True or False')
  ds = _resolve_dataset(dataset, 'mnist', source, path, pixel_max)
  h, w = ds.input_shape[:2]
  perms = transforms.task_permutations(num_tasks, h * w, seed, first_task_identity)
  return transformed_benchmark(
    ds,
    transforms.permutation_maps(perms),
    name='permuted_mnist',
    scenario=scenario,
    multi_head=multi_head,
    samples_per_task=samples_per_task,
    val_fraction=val_fraction,
    seed=seed,
    normalize=normalize,
    info=dict(permutations=perms, first_task_identity=first_task_identity),
  )


def rotated_mnist(
  num_tasks: int = 20,
  *,
  angles: str = 'fixed_step',
  degrees_per_task: float = 9.0,
  max_angle: float = 180.0,
  interpolation: str = 'nearest',
  scenario: str = 'domain',
  multi_head: bool = False,
  samples_per_task: Optional[int] = None,
  val_fraction: float = 0.0,
  seed: int = 0,
  normalize: bool = True,
  source: str = 'auto',
  path: Optional[PathLike] = None,
  pixel_max: Optional[float] = None,
  dataset: Optional[Dataset] = None,
) -> Benchmark:
  """Rotated MNIST: task k rotates every image by its angle (NumPy, no PIL).

  Two protocols (`transforms.task_angles`): `'fixed_step'`, task k rotated by
  `k * degrees_per_task` (Sequel / MC-SGD: 20 tasks, 9 degrees), and
  `'random'`, task k's angle uniform in `[k, k + 1) * max_angle / T` (GEM /
  MER / La-MAML). Rotation is counter-clockwise about the image center with
  black fill; `'nearest'` reproduces `PIL.Image.rotate`. The angles are in
  `info['angles']`.

  Args:
    num_tasks: T.
    angles: `'fixed_step'` or `'random'`.
    degrees_per_task: step of `'fixed_step'`.
    max_angle: range of `'random'`.
    interpolation: `'nearest'` or `'bilinear'`.
    scenario: `'domain'` (default), `'task'` or `'class'`.
    multi_head: with `scenario='task'`, one head per task.
    samples_per_task: train + val examples per task (None: all).
    val_fraction: fraction held out as val per task.
    seed: seed of the random angles and the subsampling.
    normalize: standardize with the MNIST mean/std.
    source: 'auto' (bundled sample without path), 'sample', 'idx', 'npz',
      'tfds'.
    path: file/folder for the source.
    pixel_max: the brightest stored pixel value (None: 255; 1.0 for floats in [0, 1]).
    dataset: an already-loaded `Dataset`.

  Returns:
    The `Benchmark`.
  """
  _check_common(num_tasks, scenario, multi_head, samples_per_task, val_fraction)
  if angles not in transforms.ANGLE_PROTOCOLS:
    raise ValueError(f'angles={angles!r}: must be one of {transforms.ANGLE_PROTOCOLS}')
  if interpolation not in transforms.INTERPOLATIONS:
    raise ValueError(f'interpolation={interpolation!r}: must be one of {transforms.INTERPOLATIONS}')
  for key, value in (('degrees_per_task', degrees_per_task), ('max_angle', max_angle)):
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
      raise ValueError(f'{key}={value!r}: must be a number (degrees)')
  ds = _resolve_dataset(dataset, 'mnist', source, path, pixel_max)
  task_angles = transforms.task_angles(num_tasks, angles, degrees_per_task, max_angle, seed)
  h, w = ds.input_shape[:2]
  return transformed_benchmark(
    ds,
    transforms.rotation_maps(h, w, task_angles, interpolation),
    name='rotated_mnist',
    scenario=scenario,
    multi_head=multi_head,
    samples_per_task=samples_per_task,
    val_fraction=val_fraction,
    seed=seed,
    normalize=normalize,
    info=dict(
      angles=tuple(float(a) for a in task_angles),
      angle_protocol=angles,
      interpolation=interpolation,
    ),
  )


# -----------------------------------------------------------------------------
# Registry.
# -----------------------------------------------------------------------------

BENCHMARKS: dict[str, Callable[..., Benchmark]] = {
  'split_mnist': split_mnist,
  'permuted_mnist': permuted_mnist,
  'rotated_mnist': rotated_mnist,
  'split_fashion_mnist': split_fashion_mnist,
  'split_cifar10': split_cifar10,
  'split_cifar100': split_cifar100,
  'split_tinyimagenet': split_tinyimagenet,
}


def builder_options(name: str) -> list[str]:
  """The options (keyword arguments) of the builder registered as `name`."""
  return list(inspect.signature(BENCHMARKS[name]).parameters)


def make_benchmark(name: str, **kwargs: Any) -> Benchmark:
  """Builds the benchmark registered as `name` with the builder's options.

  Args:
    name: one of `BENCHMARKS` (`split_mnist`, `permuted_mnist`,
      `rotated_mnist`, `split_fashion_mnist`, `split_cifar10`,
      `split_cifar100`, `split_tinyimagenet`).
    **kwargs: options of that builder.

  Returns:
    The `Benchmark`.

  Raises:
    ValueError: unknown name, unknown option, or an invalid option value; the
      message names the offending argument and the allowed values.
  """
  if name not in BENCHMARKS:
    raise ValueError(f'benchmark name={name!r}: must be one of {sorted(BENCHMARKS)}')
  builder = BENCHMARKS[name]
  allowed = builder_options(name)
  unknown = sorted(set(kwargs) - set(allowed))
  if unknown:
    raise ValueError(f'{name}: unknown option(s) {unknown}; allowed: {allowed}')
  return builder(**kwargs)
