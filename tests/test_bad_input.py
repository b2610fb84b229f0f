"""Bad input is refused where it enters, with a message naming the problem.

Data (images, labels, NPZ and IDX files, paths) and config fields at the
library level, and a few cases through the `experiments.train` binary (exit
status 1, the message on stderr, no traceback).
"""

import gzip
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from jcl import data
from jcl.config import default_config
from jcl.run_spec import RunSpec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IDX_FILES = (
  'train-images-idx3-ubyte',
  'train-labels-idx1-ubyte',
  't10k-images-idx3-ubyte',
  't10k-labels-idx1-ubyte',
)


def arrays(n_train=8, n_test=4, shape=(4, 4)):
  """`{x_train, y_train, x_test, y_test}`: valid uint8 images, labels 0..9."""
  rng = np.random.default_rng(0)
  return {
    'x_train': rng.integers(0, 256, (n_train,) + shape, dtype=np.uint8),
    'y_train': np.arange(n_train) % 10,
    'x_test': rng.integers(0, 256, (n_test,) + shape, dtype=np.uint8),
    'y_test': np.arange(n_test) % 10,
  }


def unit_arrays():
  """`arrays()` with float32 images in [0, 1]."""
  out = arrays()
  out.update(x_train=out['x_train'] / np.float32(255), x_test=out['x_test'] / np.float32(255))
  return out


def with_(key, *, edit, base=arrays):
  """`base()` with `key` replaced by `edit(base()[key])`."""
  out = base()
  out[key] = edit(out[key].copy())
  return out


def nan_at_0(x):
  x = x.astype(np.float32)
  x.flat[0] = np.nan
  return x


def inf_at_1(x):
  x = x.astype(np.float32)
  x.flat[1] = np.inf
  return x


def as_unit_floats(x):
  return x.astype(np.float32) / 255


# (id, the arrays, make_dataset keyword arguments, substrings of the message).
ARRAY_CASES = [
  (
    'nan_test_images',
    with_('x_test', edit=nan_at_0, base=unit_arrays),
    {'pixel_max': 1.0},
    ['x_test holds 1 NaN and 0 inf pixel values (of 64), the first at index (0, 0, 0, 0)'],
  ),
  ('nan_test_images_undeclared', with_('x_test', edit=nan_at_0), {}, ['x_test holds 1 NaN']),
  ('inf_train_images', with_('x_train', edit=inf_at_1), {'pixel_max': 255}, ['x_train', '1 inf']),
  ('nan_train_labels', with_('y_train', edit=nan_at_0), {}, ['y_train holds 1 NaN', 'labels']),
  ('inf_test_labels', with_('y_test', edit=inf_at_1), {}, ['y_test holds 0 NaN and 1 inf']),
  (
    'unit_floats_undeclared',
    with_('x_train', edit=as_unit_floats),
    {},
    ['x_train holds float32 images', 'no pixel_max', '--config.benchmark.pixel_max=1.0'],
  ),
  (
    'floats_0_255_declared_unit',
    with_('x_test', edit=lambda x: x.astype(np.float64) * 255, base=unit_arrays),
    {'pixel_max': 1.0},
    ['x_test holds float64 images', 'outside [0, 1]'],
  ),
  (
    'negative_floats',
    with_('x_test', edit=lambda x: x - 0.5, base=unit_arrays),
    {'pixel_max': 1.0},
    ['x_test', 'outside [0, 1]'],
  ),
  (
    'uint8_declared_unit',
    arrays(),
    {'pixel_max': 1.0},
    ['x_train holds uint8 images with values up to', 'above the declared pixel_max=1'],
  ),
  (
    'int64_above_255',
    with_('x_train', edit=lambda x: x.astype(np.int64) + 100),
    {},
    ['x_train holds int64 images', 'outside [0, 255]'],
  ),
  ('bool_undeclared', with_('x_test', edit=lambda x: x > 128), {}, ['x_test holds bool images']),
  (
    'complex_images',
    with_('x_train', edit=lambda x: x.astype(np.complex64)),
    {},
    ['x_train holds images of dtype complex64'],
  ),
  ('negative_label', with_('y_train', edit=lambda y: y - 1), {}, ['y_train has a negative label']),
  (
    'label_out_of_range',
    with_('y_test', edit=lambda y: y + 7),
    {},
    ['y_test has label 10, out of range for num_classes=10'],
  ),
  (
    'float_labels',
    with_('y_train', edit=lambda y: y.astype(np.float32)),
    {},
    ['y_train must hold integer class labels', 'float32'],
  ),
  ('empty_test_split', {**arrays(), **arrays(n_test=0)}, {}, ['x_test is empty']),
  ('empty_images', with_('x_train', edit=lambda x: x[:, :0]), {}, ['x_train is empty']),
  ('pixel_max_zero', arrays(), {'pixel_max': 0}, ['pixel_max must be a finite number > 0']),
  ('pixel_max_nan', arrays(), {'pixel_max': math.nan}, ['pixel_max must be a finite number']),
  ('pixel_max_bool', arrays(), {'pixel_max': True}, ['pixel_max must be a finite number']),
  ('bad_num_classes', arrays(), {'num_classes': 0}, ['num_classes must be an integer >= 1']),
]


@pytest.mark.parametrize(
  'values, kwargs, messages', [c[1:] for c in ARRAY_CASES], ids=[c[0] for c in ARRAY_CASES]
)
def test_bad_arrays(values, kwargs, messages):
  with pytest.raises(data.DataError) as err:
    data.make_dataset('mnist', where='d.npz', **values, **kwargs)
  for message in messages:
    assert message in str(err.value)
  assert str(err.value).startswith('d.npz: ')


def floats(x):
  return x.astype(np.float32)


@pytest.mark.parametrize(
  'convert, pixel_max, dtype',
  [
    (None, None, np.uint8),
    (lambda x: x.astype(np.int64), None, np.uint8),  # Converted: every value fits.
    (as_unit_floats, 1.0, np.float32),
    (floats, 255, np.float32),
    (lambda x: x > 128, 1.0, np.uint8),  # bool: 0 / 1.
  ],
  ids=['uint8', 'int64_0_255', 'unit_floats_declared', 'floats_0_255_declared', 'bool_declared'],
)
def test_good_arrays(convert, pixel_max, dtype):
  values = arrays()
  if convert is not None:
    values.update(x_train=convert(values['x_train']), x_test=convert(values['x_test']))
  ds = data.make_dataset('mnist', **values, pixel_max=pixel_max)
  assert ds.x_train.dtype == dtype and ds.x_test.dtype == dtype
  assert ds.pixel_max == (255.0 if pixel_max is None else pixel_max)
  assert ds.x_train.shape == (8, 4, 4, 1) and ds.y_train.dtype == np.int64


# -----------------------------------------------------------------------------
# Files and paths.
# -----------------------------------------------------------------------------


def write_idx_dir(folder, **overrides):
  """MNIST-like IDX files in `folder` (gzipped), with `{base name: array}` overrides."""
  values = arrays()
  default = dict(zip(IDX_FILES, (values[k].astype(np.uint8) for k in data.sources.NPZ_KEYS)))
  for name, array in {**default, **overrides}.items():
    data.write_idx(os.path.join(folder, name + '.gz'), array)


def rewrite(path, change):
  path.write_bytes(change(path.read_bytes()))


def gz_rewrite(path, change):
  path.write_bytes(gzip.compress(change(gzip.decompress(path.read_bytes()))))


def file_not_npz(tmp):
  (tmp / 'd.npz').write_text('x_train,y_train\n1,2\n')
  return dict(name='mnist', path=tmp / 'd.npz')


def npy_as_npz(tmp):
  with open(tmp / 'd.npz', 'wb') as f:
    np.save(f, np.zeros(3))
  return dict(name='mnist', path=tmp / 'd.npz')


def empty_npz(tmp):
  (tmp / 'd.npz').write_bytes(b'')
  return dict(name='mnist', path=tmp / 'd.npz')


def truncated_npz(tmp):
  np.savez(tmp / 'd.npz', **arrays())
  rewrite(tmp / 'd.npz', lambda b: b[: len(b) // 2])
  return dict(name='mnist', path=tmp / 'd.npz')


def object_array_npz(tmp):
  values = arrays()
  values['y_test'] = np.array([1, 'a', None, 2], dtype=object)
  np.savez(tmp / 'd.npz', **values)
  return dict(name='mnist', path=tmp / 'd.npz')


def float_npz(tmp):
  np.savez(tmp / 'd.npz', **unit_arrays())
  return dict(name='mnist', path=tmp / 'd.npz')


def nan_npz(tmp):
  np.savez(tmp / 'd.npz', **with_('x_test', edit=nan_at_0, base=unit_arrays))
  return dict(name='mnist', path=tmp / 'd.npz', pixel_max=1.0)


def nan_test_images_npz(tmp):
  """uint8 train images, float test images in [0, 255] with a NaN (no pixel_max)."""
  np.savez(tmp / 'd.npz', **with_('x_test', edit=nan_at_0))
  return dict(name='mnist', path=tmp / 'd.npz')


def missing_folder(tmp):
  return dict(name='mnist', path=tmp / 'no' / 'mnist')


def missing_npz(tmp):
  return dict(name='mnist', source='npz', path=tmp / 'nope.npz')


def missing_idx(tmp):
  return dict(name='mnist', source='idx', path=tmp / 'nope')


def folder_as_npz(tmp):
  return dict(name='mnist', source='npz', path=tmp)


def idx_gzip_truncated(tmp):
  write_idx_dir(tmp)
  rewrite(tmp / 't10k-images-idx3-ubyte.gz', lambda b: b[: len(b) // 2])
  return dict(name='mnist', path=tmp)


def idx_not_gzip(tmp):
  write_idx_dir(tmp)
  (tmp / 'train-labels-idx1-ubyte.gz').write_text('<html>404 Not Found</html>')
  return dict(name='mnist', path=tmp)


def idx_bad_magic(tmp):
  write_idx_dir(tmp)
  gz_rewrite(tmp / 'train-images-idx3-ubyte.gz', lambda b: b'\x00\x00\x07' + b[3:])
  return dict(name='mnist', path=tmp)


def idx_truncated_data(tmp):
  write_idx_dir(tmp)
  gz_rewrite(tmp / 't10k-images-idx3-ubyte.gz', lambda b: b[:-5])
  return dict(name='mnist', path=tmp)


def idx_trailing_bytes(tmp):
  write_idx_dir(tmp)
  gz_rewrite(tmp / 't10k-labels-idx1-ubyte.gz', lambda b: b + b'\x00\x00')
  return dict(name='mnist', path=tmp)


def idx_label_out_of_range(tmp):
  write_idx_dir(tmp, **{'t10k-labels-idx1-ubyte': np.array([0, 1, 12, 3], np.uint8)})
  return dict(name='mnist', path=tmp)


def idx_negative_label(tmp):
  write_idx_dir(tmp, **{'train-labels-idx1-ubyte': np.arange(-1, 7, dtype=np.int8)})
  return dict(name='mnist', path=tmp)


def idx_float_images(tmp):
  write_idx_dir(tmp, **{'train-images-idx3-ubyte': as_unit_floats(arrays()['x_train'])})
  return dict(name='mnist', path=tmp)


def idx_count_mismatch(tmp):
  write_idx_dir(tmp, **{'train-labels-idx1-ubyte': np.zeros(5, np.uint8)})
  return dict(name='mnist', path=tmp)


# (make the input in a folder -> load_dataset kwargs, substrings of the message).
FILE_CASES = [
  (file_not_npz, ['d.npz: not an NPZ archive', 'not a zip archive']),
  (npy_as_npz, ['d.npz: not an NPZ archive', 'single .npy array']),
  (empty_npz, ['d.npz: not an NPZ archive', 'the file is empty']),
  (truncated_npz, ['d.npz: not a readable NPZ archive, corrupt or truncated']),
  (object_array_npz, ['d.npz: key', 'y_test', 'Python objects']),
  (float_npz, ['d.npz: x_train holds float32 images', '--config.benchmark.pixel_max=1.0']),
  (nan_npz, ['d.npz: x_test holds 1 NaN']),
  (nan_test_images_npz, ['d.npz: x_test holds 1 NaN']),
  (missing_folder, ['no such file or folder: ', os.path.join('no', 'mnist')]),
  (missing_npz, ['no such file or folder: ', 'nope.npz']),
  (missing_idx, ['no such file or folder: ', 'nope']),
  (folder_as_npz, ['is a folder, not an NPZ file']),
  (idx_gzip_truncated, ['t10k-images-idx3-ubyte.gz: gzip decompression failed']),
  (idx_not_gzip, ['train-labels-idx1-ubyte.gz: gzip decompression failed']),
  (idx_bad_magic, ['train-images-idx3-ubyte.gz: bad IDX magic number', 'dtype code 0x07']),
  (idx_truncated_data, ['t10k-images-idx3-ubyte.gz: truncated IDX file']),
  (idx_trailing_bytes, ['t10k-labels-idx1-ubyte.gz: IDX file has 2 unexpected trailing']),
  (idx_label_out_of_range, ['t10k-labels-idx1-ubyte.gz: y_test has label 12, out of range']),
  (idx_negative_label, ['train-labels-idx1-ubyte.gz: y_train has a negative label -1']),
  (idx_float_images, ['train-images-idx3-ubyte.gz: x_train holds float32 images', 'pixel_max']),
  (idx_count_mismatch, ['has 8 images but', 'train-labels-idx1-ubyte.gz has 5 labels']),
]


@pytest.mark.parametrize(
  'make, messages', FILE_CASES, ids=[make.__name__ for make, _ in FILE_CASES]
)
def test_bad_files(tmp_path, make, messages):
  kwargs = make(tmp_path)
  with pytest.raises(data.DataError) as err:
    data.load_dataset(**kwargs)
  for message in messages:
    assert message in str(err.value)


def test_declared_floats_load(tmp_path):
  """The cure the float message names works, and `save_npz` keeps `pixel_max`."""
  ds = data.load_dataset(**float_npz(tmp_path), pixel_max=1.0)
  assert ds.pixel_max == 1.0 and ds.x_train.dtype == ds.x_test.dtype == np.float32
  data.save_npz(ds, tmp_path / 'again.npz')
  assert data.load_npz(tmp_path / 'again.npz').pixel_max == 1.0


# -----------------------------------------------------------------------------
# Config fields, where the RunSpec is made.
# -----------------------------------------------------------------------------


# (dotted field, bad value, substring of the message).
CONFIG_CASES = [
  ('seed', -1, "config: invalid 'seed': must be an integer >= 0, got -1"),
  ('seed', 2**63, "config: invalid 'seed': must be <= 9223372036854775807"),
  ('seed', 1.5, "config: invalid 'seed'"),
  ('num_seeds', 0, "invalid 'num_seeds': must be an integer >= 1, got 0"),
  ('num_seeds', -3, "invalid 'num_seeds'"),
  ('grid', 'optimizer.learning_rate=0.1,nan', 'must be finite'),
  ('grid', 'model.widths=1,2', "cannot grid 'model.widths'"),
  ('grid', 'optimizer.learning_rate=-0.1', "optimizer: invalid 'learning_rate'"),
  ('compilation_cache', 5, "config: invalid 'compilation_cache'"),
  ('checkpoint.every_chunks', -1, "checkpoint: invalid 'every_chunks': must be an integer >= 0"),
  ('checkpoint.max_to_keep', 1, "checkpoint: invalid 'max_to_keep': must be an integer >= 2"),
  ('checkpoint.enabled', 1, "checkpoint: invalid 'enabled': must be True or False"),
  ('optimizer.name', 'rmsprop', "optimizer: invalid 'name'"),
  ('optimizer.learning_rate', 0.0, "optimizer: invalid 'learning_rate': must be > 0"),
  ('optimizer.learning_rate', math.nan, "optimizer: invalid 'learning_rate'"),
  ('optimizer.momentum', 1.0, "optimizer: invalid 'momentum': must be in [0, 1)"),
  ('optimizer.momentum', -0.1, "optimizer: invalid 'momentum'"),
  ('optimizer.weight_decay', -1e-4, "optimizer: invalid 'weight_decay'"),
  ('optimizer.lr_decay', 0.0, "optimizer: invalid 'lr_decay'"),
  ('optimizer.min_lr', 1.0, "optimizer: invalid 'min_lr'"),
  ('optimizer.grad_clip_norm', 0.0, "optimizer: invalid 'grad_clip_norm'"),
  ('optimizer.reinit_per_task', 'no', "optimizer: invalid 'reinit_per_task': must be True or"),
  ('train.epochs', 0, "train: invalid 'epochs'"),
  ('train.batch_size', -1, "train: invalid 'batch_size'"),
  ('train.chunk_steps', 0, "train: invalid 'chunk_steps'"),
  ('train.eval_batch_size', 2.5, "train: invalid 'eval_batch_size'"),
  ('train.end_task_batch_size', 0, "train: invalid 'end_task_batch_size'"),
  ('train.importance_samples', 0, "train: invalid 'importance_samples'"),
  ('train.eval_split', 'train', "train: invalid 'eval_split'"),
  ('train.drop_last', 2, "train: invalid 'drop_last': must be True or False"),
  ('train.mask_unseen_classes', 'yes', "train: invalid 'mask_unseen_classes'"),
  ('log.every_chunks', 0, "log: invalid 'every_chunks'"),
  ('log.loggers', ('console', 'tensorbord'), "log: invalid 'loggers': unknown writer(s)"),
  ('log.loggers', 'jsonl,jsonl', "log: invalid 'loggers': writer(s) ['jsonl'] named more"),
  ('log.progress', None, "log: invalid 'progress'"),
  ('log.plots', 'false', "log: invalid 'plots'"),
  ('log.project', '', "log: invalid 'project': must be a non-empty string"),
  ('log.run_name', 7, "log: invalid 'run_name'"),
  ('replicas.mode', 'pmap', "replicas: invalid 'mode'"),
  ('replicas.batch_shards', 0, "replicas: invalid 'batch_shards'"),
  ('replicas.rank_by', 'accuracy', "replicas: invalid 'rank_by': must be one of"),
  ('replicas.distributed', 1, "replicas: invalid 'distributed'"),
  ('algo', {'name': 'ewc', 'ewc_lambda': -1.0}, "ewc: invalid 'ewc_lambda'"),
  ('algo', {'name': 'ewc', 'gamma': 1.5}, "ewc: invalid 'gamma'"),
  ('algo', {'name': 'ewc', 'online': 1}, "ewc: invalid 'online': must be True or False"),
  ('algo', {'name': 'er', 'memory_size': 0}, "er: invalid 'memory_size'"),
  ('algo', {'name': 'agem', 'memory_per_task': True}, "agem: invalid 'memory_per_task'"),
  ('algo', {'name': 'mcsgd', 'lmc_momentum': 1.0}, "mcsgd: invalid 'lmc_momentum'"),
  ('algo', {'name': 'nope'}, "unknown algorithm 'nope'"),
  ('train.batch_sise', 10, "train: unknown field(s) ['batch_sise']"),
  ('benchmark.num_taks', 5, 'unknown option(s)'),
]


def config_with(field, value):
  config = default_config().to_dict()
  *sections, key = field.split('.')
  node = config
  for section in sections:
    node = node[section]
  node[key] = value
  return config


@pytest.mark.parametrize(
  'field, value, message', CONFIG_CASES, ids=[f'{f}={v!r}' for f, v, _ in CONFIG_CASES]
)
def test_bad_config(field, value, message):
  with pytest.raises(ValueError) as err:
    RunSpec.from_config(config_with(field, value))
  assert message in str(err.value)


def test_good_config_edges():
  spec = RunSpec.from_config(config_with('seed', 2**63 - 1))
  assert spec.seed == 2**63 - 1
  spec = RunSpec.from_config(config_with('checkpoint.every_chunks', 0))
  assert spec.checkpoint.every_chunks == 0
  config = config_with('optimizer.momentum', 0)  # An int where a float is expected.
  config['compilation_cache'] = None
  assert RunSpec.from_config(config).optimizer.momentum == 0


# -----------------------------------------------------------------------------
# Through the binary.
# -----------------------------------------------------------------------------


def train(tmp_path, *flags):
  """Runs `experiments.train` on the quickstart config; `(exit status, stderr)`."""
  command = [sys.executable, '-m', 'experiments.train', '--config=configs/quickstart.py']
  command += [f'--workdir={tmp_path / "work"}', *flags]
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
  return out.returncode, out.stderr


@pytest.mark.parametrize(
  'make, flags, message',
  [
    (None, ['--config.seed=-1'], "error: config: invalid 'seed': must be an integer >= 0, got -1"),
    (None, ['--config.num_seeds=0'], "invalid 'num_seeds': must be an integer >= 1, got 0"),
    (nan_test_images_npz, [], 'd.npz: x_test holds 1 NaN'),
    (float_npz, [], '--config.benchmark.pixel_max=1.0'),
  ],
  ids=['seed', 'num_seeds', 'nan_test_images', 'float_images'],
)
def test_binary(tmp_path, make, flags, message):
  if make is not None:
    flags = [f'--config.benchmark.path={make(tmp_path)["path"]}', *flags]
  status, stderr = train(tmp_path, *flags)
  assert status == 1, stderr
  assert message in stderr
  assert 'Traceback' not in stderr
  assert not os.path.exists(tmp_path / 'work' / 'results.json')
