"""Where raw datasets come from: bundled sample, IDX, NPZ, TFDS, CIFAR and image folders.

Every loader returns a `Dataset` of `[N, H, W, C]` images (uint8, or floats
in `[0, pixel_max]` where `pixel_max` is declared) and int64 `[N]` labels,
validated by `jcl.data.dataset.make_dataset`. Only NumPy and the standard
library are imported here; `tensorflow_datasets` and Pillow are imported
lazily by the loaders that need them.
"""

from __future__ import annotations

import os
import zipfile
from typing import Any, Optional, Sequence, Union

import numpy as np

from jcl.data import cifar
from jcl.data.dataset import (
  DataError,
  Dataset,
  check_pixel_max,
  make_dataset,
  missing_path_error,
)
from jcl.data.idx import load_idx_dir

PathLike = Union[str, os.PathLike]

SOURCES = ('auto', 'sample', 'idx', 'npz', 'tfds', 'folder', 'cifar')
NPZ_KEYS = ('x_train', 'y_train', 'x_test', 'y_test')
_NPZ_OPTIONAL = ('name', 'num_classes', 'class_names', 'pixel_max')
MNIST_SAMPLE_PATH = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), 'assets', 'mnist_sample.npz'
)
# Datasets with a sample bundled as package data.
SAMPLES = {'mnist': MNIST_SAMPLE_PATH}
_ALIASES = {
  'fashion-mnist': 'fashion_mnist',
  'fashionmnist': 'fashion_mnist',
  'cifar-10': 'cifar10',
  'cifar-100': 'cifar100',
  'tiny_imagenet': 'tinyimagenet',
  'tiny-imagenet': 'tinyimagenet',
  'tiny-imagenet-200': 'tinyimagenet',
}


def canonical_name(name: str) -> str:
  """Normalizes a dataset name: `'Fashion-MNIST'` -> `'fashion_mnist'`."""
  name = name.strip().lower()
  return _ALIASES.get(name, name)


# -----------------------------------------------------------------------------
# NPZ.
# -----------------------------------------------------------------------------


# The first bytes of a zip archive (an NPZ is a zip of .npy files) and of a .npy file.
_ZIP_MAGIC = (b'PK\x03\x04', b'PK\x05\x06')
_NPY_MAGIC = b'\x93NUMPY'


def _check_npz_file(path: str) -> None:
  """DataError unless `path` is an existing file that starts as a zip archive."""
  if not os.path.exists(path):
    raise missing_path_error(path)
  if os.path.isdir(path):
    raise DataError(f'{path}: is a folder, not an NPZ file')
  try:
    with open(path, 'rb') as f:
      head = f.read(6)
  except OSError as e:
    raise DataError(f'{path}: cannot read file ({e})') from e
  if head[:4] in _ZIP_MAGIC:
    return
  if not head:
    what = 'the file is empty'
  elif head == _NPY_MAGIC:
    what = 'it is a single .npy array (np.save), not an archive'
  else:
    what = f'it starts with the bytes {head[:4]!r}, not a zip archive'
  raise DataError(
    f'{path}: not an NPZ archive ({what}); an NPZ dataset is written by np.savez with the '
    f'arrays {list(NPZ_KEYS)}'
  )


def load_npz(
  path: PathLike, name: Optional[str] = None, pixel_max: Optional[float] = None
) -> Dataset:
  """Loads a dataset from an `.npz` with x_train, y_train, x_test, y_test.

  Optional keys: `name` (str), `num_classes` (int), `class_names` (str
  array), `pixel_max` (float, as `save_npz` writes it). Other keys are
  ignored. Images may be `[N, H, W]` or `[N, H, W, C]`.

  Args:
    path: the `.npz` file.
    name: dataset name; defaults to the file's `name` key, else the file stem.
    pixel_max: the brightest possible pixel value (None: the file's
      `pixel_max` key, else 255); float images need one (see
      `jcl.data.dataset.check_images`).

  Returns:
    The `Dataset`.

  Raises:
    DataError: the file is missing or not an NPZ, a key is missing, or the
      arrays are inconsistent, not finite or out of range; the message names
      the file and key.
  """
  path = os.fspath(path)
  _check_npz_file(path)
  key = None
  try:
    with np.load(path, allow_pickle=False) as npz:
      missing = [k for k in NPZ_KEYS if k not in npz.files]
      if missing:
        raise DataError(
          f'{path}: missing key(s) {missing}; an NPZ dataset '
          f'needs {list(NPZ_KEYS)} (found {sorted(npz.files)})'
        )
      arrays = {}
      for key in NPZ_KEYS + tuple(k for k in _NPZ_OPTIONAL if k in npz.files):
        arrays[key] = npz[key]
  except (zipfile.BadZipFile, OSError, EOFError) as e:
    where = f' (key {key!r})' if key else ''
    raise DataError(f'{path}: not a readable NPZ archive{where}, corrupt or truncated ({e})') from e
  except ValueError as e:
    if isinstance(e, DataError):
      raise
    if 'allow_pickle' in str(e):
      raise DataError(
        f'{path}: key {key!r} holds Python objects (a pickled object array), which jcl does not '
        'load; store it as a numeric array'
      ) from e
    raise DataError(f'{path}: cannot read key {key!r} ({e})') from e
  try:
    stored_name = str(arrays['name']) if 'name' in arrays else None
    num_classes = int(arrays['num_classes']) if 'num_classes' in arrays else None
    class_names = tuple(str(c) for c in arrays['class_names']) if 'class_names' in arrays else None
    stored_pixel_max = float(arrays['pixel_max']) if 'pixel_max' in arrays else None
  except (TypeError, ValueError) as e:
    raise DataError(
      f'{path}: cannot read the optional keys {[k for k in _NPZ_OPTIONAL if k in arrays]} ({e})'
    ) from e
  if name is None:
    name = stored_name or os.path.splitext(os.path.basename(path))[0]
  return make_dataset(
    name,
    arrays['x_train'],
    arrays['y_train'],
    arrays['x_test'],
    arrays['y_test'],
    num_classes=num_classes,
    where=path,
    class_names=class_names,
    pixel_max=stored_pixel_max if pixel_max is None else pixel_max,
  )


def save_npz(dataset: Dataset, path: PathLike, compress: bool = True) -> None:
  """Writes a `Dataset` as an NPZ that `load_npz` reads back (`pixel_max` included).

  Useful to cache a slow source (a TinyImageNet JPEG folder, TFDS) once.

  Args:
    dataset: the dataset.
    path: destination `.npz`.
    compress: use `np.savez_compressed`.
  """
  arrays: dict[str, Any] = dict(
    x_train=dataset.x_train,
    y_train=dataset.y_train,
    x_test=dataset.x_test,
    y_test=dataset.y_test,
    name=np.asarray(dataset.name),
    num_classes=np.asarray(dataset.num_classes),
    pixel_max=np.asarray(dataset.pixel_max),
  )
  if dataset.class_names is not None:
    arrays['class_names'] = np.asarray(dataset.class_names)
  (np.savez_compressed if compress else np.savez)(os.fspath(path), **arrays)


# -----------------------------------------------------------------------------
# Bundled sample.
# -----------------------------------------------------------------------------


def load_mnist_sample() -> Dataset:
  """The real-MNIST sample bundled with jcl (works offline).

  6,000 training images (600 per class) and 1,000 test images (100 per
  class), drawn without replacement with a fixed seed from the official
  MNIST train and test sets by `scripts/make_mnist_sample.py`.

  Returns:
    A `Dataset` named `'mnist'`: uint8 `[N, 28, 28, 1]` images, int64 labels.
  """
  return load_npz(MNIST_SAMPLE_PATH, name='mnist')


# -----------------------------------------------------------------------------
# TFDS.
# -----------------------------------------------------------------------------


def _read_all(source: Any, block: int = 1024) -> list[dict[str, Any]]:
  """Reads every example of a `tfds.data_source` split, in order."""
  n = len(source)
  examples: list[dict[str, Any]] = []
  batched = hasattr(source, '__getitems__')
  for start in range(0, n, block):
    keys = list(range(start, min(n, start + block)))
    if batched:
      try:
        examples.extend(source.__getitems__(keys))
        continue
      except TypeError:
        # `tfds.testing.mock_data` (4.9.x) mocks `__getitems__` with a
        # function missing its `self`; per-example reads work everywhere.
        batched = False
    examples.extend(source[i] for i in keys)
  return examples


def _tfds_prepare_hint(name: str, root: str) -> str:
  """How to prepare TFDS dataset `name` on a connected machine and bring it to `root`."""
  hint = (
    'jcl reads prepared TFDS datasets (download=False). On a machine with network access '
    f'(pip install tensorflow tensorflow-datasets) run `tfds build {name} --data_dir=DIR '
    '--file_format=array_record` (or python -c "import tensorflow_datasets as tfds; '
    f"tfds.builder('{name}', data_dir='DIR', file_format='array_record')"
    '.download_and_prepare()"), then copy the folder DIR/'
    f'{name} into {root} on this machine (or copy DIR and pass it as the data_dir: '
    f'--config.benchmark.path=DIR to experiments.train, --data=tfds:{name}?data_dir=DIR to '
    'experiments.update)'
  )
  if name in ('cifar10', 'cifar100'):
    folder = 'cifar-10-batches-py' if name == 'cifar10' else 'cifar-100-python'
    hint += (
      f"; or read CIFAR's own files without TFDS: --config.benchmark.source=auto "
      f'--config.benchmark.path=<the unpacked {folder} folder>'
    )
  return hint


def _tfds_error(
  tfds: Any, name: str, data_dir: Optional[str], error: Exception, download: bool
) -> DataError:
  """Why `tfds.data_source(name, data_dir=...)` failed, as a DataError that says what to do."""
  searched = data_dir or '(the TFDS default data_dir)'
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception:  # pylint: disable=broad-except  # DatasetNotFoundError and kin
    return DataError(
      f'tfds:{name}: TFDS knows no dataset {name!r} and none is prepared under {searched}; check '
      'the name (tensorflow_datasets.list_builders()) or the data_dir'
    )
  version_dir = os.fspath(builder.data_dir)
  suffix = os.sep + builder.info.full_name.replace('/', os.sep)
  root = version_dir[: -len(suffix)] if version_dir.endswith(suffix) else data_dir or version_dir
  if not builder.is_prepared():
    failed = f'TFDS could not download it ({type(error).__name__}: {error}). ' if download else ''
    return DataError(
      f'tfds:{name}: dataset {name!r} is not prepared in data_dir {root} (no '
      f'{os.path.join(version_dir, "dataset_info.json")}). {failed}'
      + _tfds_prepare_hint(name, root)
    )
  if isinstance(error, NotImplementedError):  # Prepared, but not in a random-access format.
    return DataError(
      f'tfds:{name}: prepared in {version_dir} as {builder.info.file_format}, which '
      'tfds.data_source cannot read; rebuild it with --file_format=array_record, or convert it '
      f'(with TensorFlow): tfds convert_format --dataset_version_dir={version_dir} '
      '--out_file_format=array_record'
    )
  return DataError(
    f'tfds:{name}: cannot read the dataset prepared in {version_dir} '
    f'({type(error).__name__}: {error})'
  )


def load_tfds(
  name: str,
  data_dir: Optional[PathLike] = None,
  *,
  splits: Sequence[str] = ('train', 'test'),
  image_key: str = 'image',
  label_key: str = 'label',
  pixel_max: Optional[float] = None,
  download: bool = False,
) -> Dataset:
  """Loads a TFDS image-classification dataset via `tfds.data_source`.

  Random-access ArrayRecord reading: TensorFlow is not needed, but the
  dataset must already be prepared in `data_dir` in the `array_record`
  format (`tfds build NAME --data_dir=DIR --file_format=array_record` on a
  machine with network access and TensorFlow; the error for a dataset that
  is not prepared says so). Examples are read in blocks with
  `__getitems__`, falling back to per-example reads where that fails: under
  `tfds.testing.mock_data` (the default `MockPolicy.AUTO`, which supports
  `data_source` in tfds 4.9.10) the mocked `__getitems__` raises TypeError
  while `source[i]` works.

  Args:
    name: TFDS name, e.g. `'mnist'`, `'fashion_mnist'`, `'cifar10'`,
      `'cifar100'`.
    data_dir: TFDS data directory (None: the TFDS default, `$TFDS_DATA_DIR`
      or `~/tensorflow_datasets`).
    splits: the (train, test) split names.
    image_key: the image feature.
    label_key: the label feature (a `ClassLabel`).
    pixel_max: the brightest possible pixel value (None: 255, uint8 images).
    download: let TFDS download and prepare a dataset that is missing (needs
      network access, and TensorFlow for most datasets).

  Returns:
    The `Dataset` (named `canonical_name(name)`).

  Raises:
    ImportError: `tensorflow_datasets` or one of its dependencies is not
      installed.
    DataError: the dataset is unknown, not prepared in `data_dir` (the
      message says how to prepare it), not in a random-access format, or a
      split has no examples or lacks the features.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
      "load_tfds needs tensorflow-datasets: pip install 'jcl[tfds]' (or tensorflow-datasets)"
    ) from e
  train_split, test_split = splits
  data_dir = None if data_dir is None else os.fspath(data_dir)
  where = f'tfds:{name}' + (f' (data_dir={data_dir})' if data_dir else '')
  try:
    sources = tfds.data_source(
      name, split=[train_split, test_split], data_dir=data_dir, download=download
    )
  except ModuleNotFoundError as e:  # e.g. importlib_resources, which tfds 4.9 imports lazily
    raise ImportError(
      f'tensorflow-datasets needs the module {e.name!r}, which is not installed: '
      f"pip install 'jcl[tfds]' (or pip install {e.name})"
    ) from e
  except Exception as e:  # pylint: disable=broad-except  # TFDS raises many kinds
    raise _tfds_error(tfds, name, data_dir, e, download) from e
  arrays = []
  for split, source in zip((train_split, test_split), sources):
    examples = _read_all(source)
    if not examples:
      raise DataError(f'{where}: split {split!r} is empty')
    missing = [k for k in (image_key, label_key) if k not in examples[0]]
    if missing:
      raise DataError(
        f'{where}: split {split!r} lacks feature(s) {missing} (has {sorted(examples[0])})'
      )
    arrays.append(np.stack([np.asarray(ex[image_key]) for ex in examples]))
    arrays.append(np.asarray([ex[label_key] for ex in examples], np.int64))
  num_classes = None
  class_names = None
  try:
    feature = sources[0].dataset_info.features[label_key]
    num_classes = int(feature.num_classes)
    class_names = tuple(feature.names)
  except (AttributeError, KeyError, TypeError):
    pass
  if class_names is not None and num_classes is not None and (len(class_names) != num_classes):
    class_names = None
  return make_dataset(
    canonical_name(name),
    *arrays,
    num_classes=num_classes,
    where=where,
    class_names=class_names,
    pixel_max=pixel_max,
  )


# -----------------------------------------------------------------------------
# TinyImageNet folder.
# -----------------------------------------------------------------------------


def _read_images(paths: Sequence[str]) -> np.ndarray:
  """Decodes image files to a uint8 `[N, H, W, 3]` array (needs Pillow)."""
  try:
    from PIL import Image  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
      'reading JPEG folders needs Pillow: pip install Pillow '
      '(or convert the folder to an NPZ once with save_npz)'
    ) from e
  images = []
  for p in paths:
    try:
      with Image.open(p) as im:
        images.append(np.asarray(im.convert('RGB'), np.uint8))
    except OSError as e:
      raise DataError(f'{p}: cannot decode image ({e})') from e
  try:
    return np.stack(images)
  except ValueError as e:
    raise DataError(f'{os.path.dirname(paths[0])}: images of different sizes ({e})') from e


def _tinyimagenet_root(path: str) -> Optional[str]:
  """`path` or its `tiny-imagenet-200` subfolder, whichever holds `wnids.txt`; else None."""
  for root in (path, os.path.join(path, 'tiny-imagenet-200')):
    if os.path.isfile(os.path.join(root, 'wnids.txt')):
      return root
  return None


def load_tinyimagenet(path: PathLike, pixel_max: Optional[float] = None) -> Dataset:
  """Loads TinyImageNet from the standard `tiny-imagenet-200/` folder.

  Layout: `wnids.txt`, `train/<wnid>/images/*.JPEG`, `val/val_annotations.txt`
  (tab-separated `file, wnid, ...`) and `val/images/*.JPEG`. The labelled
  `val` split is the test split (the official test split has no labels).
  Class ids follow the sorted WordNet ids (as `torchvision.ImageFolder` on
  `train/`). Decoding 110,000 JPEGs takes a while: cache the result with
  `save_npz` and use `load_npz` afterwards.

  Args:
    path: the `tiny-imagenet-200` folder (or the folder holding it).
    pixel_max: the brightest possible pixel value (None: 255, as decoded).

  Returns:
    A `Dataset` named `'tinyimagenet'`, uint8 `[N, 64, 64, 3]` images,
    `class_names` the WordNet ids.

  Raises:
    DataError: a file or folder of the layout is missing or malformed.
    ImportError: Pillow is not installed.
  """
  root = os.fspath(path)
  if not os.path.exists(root):
    raise missing_path_error(root)
  if not os.path.isdir(root):
    raise DataError(f'{root}: is a file, not the tiny-imagenet-200 folder')
  root = _tinyimagenet_root(root) or root
  wnids_path = os.path.join(root, 'wnids.txt')
  if not os.path.isfile(wnids_path):
    raise DataError(
      f'{wnids_path}: file not found (expected the '
      'tiny-imagenet-200 layout: wnids.txt, train/, val/)'
    )
  with open(wnids_path) as f:
    wnids = sorted({line.strip() for line in f if line.strip()})
  if not wnids:
    raise DataError(f'{wnids_path}: no class ids')
  index = {w: i for i, w in enumerate(wnids)}
  train_paths, train_labels = [], []
  for wnid in wnids:
    folder = os.path.join(root, 'train', wnid, 'images')
    if not os.path.isdir(folder):
      raise DataError(f'{folder}: folder not found')
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(('.jpeg', '.jpg', '.png')))
    if not files:
      raise DataError(f'{folder}: no images')
    train_paths += [os.path.join(folder, f) for f in files]
    train_labels += [index[wnid]] * len(files)
  ann_path = os.path.join(root, 'val', 'val_annotations.txt')
  if not os.path.isfile(ann_path):
    raise DataError(f'{ann_path}: file not found')
  test_paths, test_labels = [], []
  with open(ann_path) as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      fields = line.rstrip('\n').split('\t')
      if len(fields) < 2 or fields[1] not in index:
        raise DataError(
          f'{ann_path}:{lineno}: expected "<file>\\t<wnid>..." '
          f'with a wnid from wnids.txt, got {line.strip()!r}'
        )
      test_paths.append(os.path.join(root, 'val', 'images', fields[0]))
      test_labels.append(index[fields[1]])
  for p in test_paths:
    if not os.path.isfile(p):
      raise DataError(f'{p}: file not found (listed in {ann_path})')
  return make_dataset(
    'tinyimagenet',
    _read_images(train_paths),
    np.asarray(train_labels, np.int64),
    _read_images(test_paths),
    np.asarray(test_labels, np.int64),
    num_classes=len(wnids),
    where=root,
    class_names=tuple(wnids),
    pixel_max=pixel_max,
  )


# -----------------------------------------------------------------------------
# Dispatcher.
# -----------------------------------------------------------------------------


def _starts_as_zip(path: str) -> bool:
  try:
    with open(path, 'rb') as f:
      return f.read(4) in _ZIP_MAGIC
  except OSError:
    return False


def _auto_source(name: str, path: Optional[str]) -> str:
  """Picks a source from the dataset name and the kind of `path`."""
  if path is None:
    if name in SAMPLES:
      return 'sample'
    if name == 'tinyimagenet':
      raise ValueError(
        "dataset 'tinyimagenet' needs path= (the tiny-imagenet-200 folder or an NPZ)"
      )
    return 'tfds'
  if not os.path.exists(path):
    raise missing_path_error(path)
  if os.path.isdir(path):
    if _tinyimagenet_root(path) is not None:
      return 'folder'
    if cifar.find_layout(path) is not None:
      return 'cifar'
    return 'idx'
  if path.endswith('.npz') or _starts_as_zip(path):
    return 'npz'
  raise DataError(
    f'{path}: cannot infer the source: not a folder or .npz '
    f'file (pass source= one of {SOURCES[1:]})'
  )


def load_dataset(
  name: str,
  source: str = 'auto',
  path: Optional[PathLike] = None,
  pixel_max: Optional[float] = None,
) -> Dataset:
  """Loads dataset `name` from `source`.

  Args:
    name: `'mnist'`, `'fashion_mnist'`, `'kmnist'`, `'cifar10'`,
      `'cifar100'`, `'tinyimagenet'` (or any TFDS image dataset for
      `source='tfds'`).
    source: `'sample'` (bundled real-MNIST sample, MNIST only), `'idx'`
      (folder of IDX files at `path`), `'npz'` (file at `path`), `'tfds'`
      (`tfds.data_source` of a prepared dataset, `path` = TFDS data_dir),
      `'folder'` (the tiny-imagenet-200 folder at `path`), `'cifar'` (a
      CIFAR-10/100 python or binary folder at `path`, `jcl.data.cifar`), or
      `'auto'`: without `path` the bundled sample if there is one else TFDS;
      with `path` by its kind (a tiny-imagenet-200 folder or its parent ->
      'folder', a CIFAR folder or its parent -> 'cifar', other folder ->
      'idx', `.npz` -> 'npz').
    path: file or folder for the 'idx', 'npz', 'folder', 'cifar' sources;
      TFDS data_dir for 'tfds'.
    pixel_max: the brightest possible pixel value of the stored images
      (None: 255, uint8 images; 1.0 for float images in [0, 1]).

  Returns:
    The `Dataset`.

  Raises:
    ValueError: unknown source, or a source that needs `path` without it.
    DataError: the files are missing or corrupt, or hold bad values (NaN or
      inf, labels out of range, pixels outside `[0, pixel_max]`, float images
      without a `pixel_max`); the message names the file.
  """
  path = None if path is None else os.fspath(path)
  pixel_max = check_pixel_max(pixel_max, f'dataset {name!r}')
  return _load(canonical_name(name), source, path, pixel_max)


def _load(name: str, source: str, path: Optional[str], pixel_max: Optional[float]) -> Dataset:
  if source not in SOURCES:
    raise ValueError(f'source={source!r}: must be one of {SOURCES}')
  if source == 'auto':
    source = _auto_source(name, path)
  if source in ('idx', 'npz', 'folder', 'cifar') and path is None:
    raise ValueError(
      f'source={source!r} needs path= (the {"file" if source == "npz" else "folder"} to read)'
    )
  if source == 'sample':
    if name not in SAMPLES:
      raise ValueError(
        f"source='sample': no bundled sample for dataset {name!r} (bundled: {sorted(SAMPLES)})"
      )
    return load_npz(SAMPLES[name], name=name, pixel_max=pixel_max)
  if source == 'idx':
    return load_idx_dir(path, name=name, pixel_max=pixel_max)
  if source == 'npz':
    return load_npz(path, name=name, pixel_max=pixel_max)
  if source == 'folder':
    if name != 'tinyimagenet':
      raise ValueError(
        f"source='folder' reads the tiny-imagenet-200 layout; not available for dataset {name!r}"
      )
    return load_tinyimagenet(path, pixel_max=pixel_max)
  if source == 'cifar':
    if name not in ('cifar10', 'cifar100'):
      raise ValueError(
        f"source='cifar' reads the CIFAR-10/100 folders; not available for dataset {name!r}"
      )
    return cifar.load_cifar(path, name=name, pixel_max=pixel_max)
  return load_tfds(name, data_dir=path, pixel_max=pixel_max)
