"""Tests for the file / third-party writers of jcl.loggers (CSV, TensorBoard,
W&B offline). Each backend's test is skipped only if its package is missing."""

import csv
import glob
import io
import json
import os
import struct
import sys
import time

import numpy as np
import pytest

from jcl import loggers

NAN = float('nan')


def _accuracy_matrix():
  r = np.full((3, 3), np.nan)
  r[:, 0] = [0.5, 0.25, 0.125]
  r[:, 1] = [0.75, 1.0, 0.0]
  return r


def _read_csv(path):
  with open(path, newline='', encoding='utf-8') as f:
    return list(csv.reader(f))


# ---------------------------------------------------------------------------
# CSV.
# ---------------------------------------------------------------------------


class TestCsvWriter:
  def test_values_header_growth_and_nan(self, tmp_path):
    workdir = tmp_path / 'a' / 'b'  # Created by the writer.
    w = loggers.CsvWriter(workdir)
    w.write_scalars(1, {'loss': np.float32(0.5), 'acc': 0.25})
    w.write_scalars(np.int64(2), {'loss': NAN, 'acc': np.array(0.75)})
    w.flush()
    rows = _read_csv(workdir / 'metrics.csv')
    assert rows[0] == ['step', 'time', 'loss', 'acc']
    assert [r[0] for r in rows[1:]] == ['1', '2']
    assert float(rows[1][2]) == 0.5 and float(rows[1][3]) == 0.25
    assert rows[2][2] == ''  # NaN -> empty.
    assert float(rows[2][3]) == 0.75
    assert all(float(r[1]) > 0 for r in rows[1:])  # time.

    # A new key extends the header; earlier rows get empty cells.
    w.write_scalars(3, {'lr': 1e-3, 'n': np.int64(7), 'acc': 1.0})
    w.write_scalars(4, {'loss': 0.125})
    w.close()
    with open(workdir / 'metrics.csv', newline='', encoding='utf-8') as f:
      reader = csv.DictReader(f)
      assert reader.fieldnames == ['step', 'time', 'loss', 'acc', 'lr', 'n']
      records = list(reader)
    assert [r['step'] for r in records] == ['1', '2', '3', '4']
    assert records[0]['lr'] == '' and records[0]['n'] == ''
    assert records[1]['loss'] == ''
    assert float(records[2]['lr']) == 1e-3
    assert records[2]['n'] == '7'
    assert records[2]['loss'] == ''  # Missing key -> empty.
    assert float(records[2]['acc']) == 1.0
    assert float(records[3]['loss']) == 0.125
    assert records[3]['acc'] == '' and records[3]['lr'] == ''
    assert not glob.glob(str(workdir / '*.tmp'))

  def test_continues_existing_file(self, tmp_path):
    with loggers.CsvWriter(tmp_path) as w:
      w.write_scalars(1, {'a': 1.0})
    with loggers.CsvWriter(tmp_path) as w:
      w.write_scalars(2, {'a': 2.0, 'b': float('inf')})
    rows = _read_csv(tmp_path / 'metrics.csv')
    assert rows[0] == ['step', 'time', 'a', 'b']
    assert [(r[0], r[2], r[3]) for r in rows[1:]] == [('1', '1.0', ''), ('2', '2.0', 'inf')]

  def test_images_texts_hparams_ignored(self, tmp_path):
    with loggers.CsvWriter(tmp_path) as w:
      w.write_images(0, {'img': np.zeros((2, 2, 3), np.uint8)})
      w.write_texts(0, {'t': 'x'})
      w.write_hparams({'a.b': 1})
    assert not list(tmp_path.iterdir())

  def test_reserved_names_and_closed(self, tmp_path):
    w = loggers.CsvWriter(tmp_path)
    with pytest.raises(ValueError, match='reserved'):
      w.write_scalars(0, {'step': 1.0})
    w.close()
    with pytest.raises(ValueError, match='closed'):
      w.write_scalars(0, {'a': 1.0})


# ---------------------------------------------------------------------------
# TensorBoard.
# ---------------------------------------------------------------------------


def _tb_events_from_accumulator(logdir):
  """Reads an event directory with TensorBoard's EventAccumulator."""
  ea = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')
  acc = ea.EventAccumulator(str(logdir), size_guidance={ea.TENSORS: 0, ea.SCALARS: 0, ea.IMAGES: 0})
  acc.Reload()
  tags = acc.Tags()
  return {
    'scalars': {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags['scalars']},
    'images': {
      t: [(e.step, e.encoded_image_string) for e in acc.Images(t)] for t in tags['images']
    },
    'texts': {
      t: [(e.step, e.tensor_proto.string_val[0].decode('utf-8')) for e in acc.Tensors(t)]
      for t in tags['tensors']
    },
    'hparams': acc.PluginTagToContent('hparams'),
  }


def _tb_events_from_records(logdir):
  """Reads an event directory by parsing its TFRecords with tensorboardX's protos.

  A record is a uint64 length, a uint32 crc of it, the data and a uint32 crc.
  """
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top

  out = {'scalars': {}, 'images': {}, 'texts': {}, 'hparams': {}}
  for path in sorted(glob.glob(os.path.join(logdir, 'events.out.tfevents.*'))):
    with open(path, 'rb') as f:
      data = f.read()
    pos = 0
    while pos + 12 <= len(data):
      (length,) = struct.unpack('<Q', data[pos : pos + 8])
      event = event_pb2.Event()
      event.ParseFromString(data[pos + 12 : pos + 12 + length])
      pos += 16 + length
      for v in event.summary.value:
        plugin = v.metadata.plugin_data.plugin_name
        if v.HasField('simple_value'):
          out['scalars'].setdefault(v.tag, []).append((event.step, v.simple_value))
        elif v.HasField('image'):
          out['images'].setdefault(v.tag, []).append((event.step, v.image.encoded_image_string))
        elif plugin == 'text':
          out['texts'].setdefault(v.tag, []).append(
            (event.step, v.tensor.string_val[0].decode('utf-8'))
          )
        elif plugin == 'hparams':
          out['hparams'][v.tag] = v.metadata.plugin_data.content
  return out


class TestTensorBoardWriter:
  @pytest.mark.parametrize(
    'read',
    [_tb_events_from_accumulator, _tb_events_from_records],
    ids=['event_accumulator', 'records'],
  )
  def test_everything_read_back(self, tmp_path, read):
    pytest.importorskip('tensorboardX')
    image_lib = pytest.importorskip('PIL.Image')
    from tensorboardX.proto import plugin_hparams_pb2  # pylint: disable=g-import-not-at-top

    logdir = tmp_path / 'tb'
    w = loggers.TensorBoardWriter(logdir)
    assert isinstance(w, loggers.MetricWriter)
    for step in (1, 2, 3):
      w.write_scalars(
        step, {'loss': np.float32(1.0 / step), 'acc': np.array(0.25 * step), 'name': 'not a number'}
      )
    heatmap = loggers.accuracy_matrix_image(_accuracy_matrix(), cell=5)
    gray = np.linspace(0.0, 1.0, 12).reshape(3, 4)  # Float grayscale, non-square.
    w.write_images(2, {'accuracy_matrix': heatmap, 'gray': gray})
    w.write_texts(2, {'accuracy_matrix': 'task 0  50.0\ntask 1  25.0'})
    w.write_hparams(
      {
        'optimizer.lr': np.float32(0.5),
        'method': 'ewc',
        'seed': 3,
        'replay': True,
        'data.tasks': (0, 1),
      }
    )
    w.close()

    assert glob.glob(str(logdir / 'events.out.tfevents.*'))
    events = read(logdir)
    assert {'loss', 'acc'} == set(events['scalars'])
    loss = events['scalars']['loss']
    assert [s for s, _ in loss] == [1, 2, 3]
    np.testing.assert_allclose([v for _, v in loss], [1.0, 0.5, 1.0 / 3], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in events['scalars']['acc']], [0.25, 0.5, 0.75])

    ((step, png),) = events['images']['accuracy_matrix']
    assert step == 2
    np.testing.assert_array_equal(
      np.asarray(image_lib.open(io.BytesIO(png)).convert('RGB')), heatmap
    )
    ((_, png),) = events['images']['gray']
    decoded = np.asarray(image_lib.open(io.BytesIO(png)).convert('RGB'))
    assert decoded.shape == (3, 4, 3)
    np.testing.assert_array_equal(decoded[..., 1], np.round(gray * 255))

    ((step, text),) = events['texts']['accuracy_matrix/text_summary']
    assert step == 2
    assert text == '    task 0  50.0\n    task 1  25.0'  # A Markdown code block.
    ((_, table),) = events['texts']['hparams/text_summary']
    assert '| optimizer.lr | 0.5 |' in table and '| method | ewc |' in table

    assert set(events['hparams']) == {'_hparams_/session_start_info'}
    data = plugin_hparams_pb2.HParamsPluginData()
    data.ParseFromString(events['hparams']['_hparams_/session_start_info'])
    values = data.session_start_info.hparams
    assert values['optimizer.lr'].number_value == 0.5
    assert values['method'].string_value == 'ewc'
    assert values['seed'].number_value == 3
    assert values['replay'].bool_value is True
    assert values['data.tasks'].string_value == '(0, 1)'

  def test_images_need_pillow(self, tmp_path, monkeypatch):
    pytest.importorskip('tensorboardX')
    with loggers.TensorBoardWriter(tmp_path) as w:
      monkeypatch.setitem(sys.modules, 'PIL', None)  # Import fails.
      w.write_images(0, {})  # Nothing to write: no import.
      with pytest.raises(ImportError, match=r"'jcl\[images\]' \(or: pip install pillow"):
        w.write_images(0, {'img': np.zeros((2, 2, 3), np.uint8)})
      w.write_hparams({'a|b': 'c|d'})
    events = _tb_events_from_records(str(tmp_path))
    ((_, table),) = events['texts']['hparams/text_summary']
    assert table.splitlines()[-1] == r'| a\|b | c\|d |'


# ---------------------------------------------------------------------------
# Weights & Biases (offline).
# ---------------------------------------------------------------------------


def _read_wandb_records(path):
  """Reads the protobuf records of a `.wandb` transaction log, offline.

  The file is a 7-byte header (':W&B', 2-byte magic, 1-byte version) followed
  by a LevelDB-style log: 32 KiB blocks of chunks, each with a 7-byte header
  (crc32, little-endian uint16 length, uint8 type: 1 full, 2 first, 3 middle,
  4 last).
  """
  from wandb.proto import wandb_internal_pb2  # pylint: disable=g-import-not-at-top

  with open(path, 'rb') as f:
    data = f.read()
  assert data[:4] == b':W&B'
  block, pos, chunks, records = 32768, 7, [], []
  while pos + 7 <= len(data):
    left = block - pos % block
    if left < 7:  # Block trailer padding.
      pos += left
      continue
    length, kind = struct.unpack('<HB', data[pos + 4 : pos + 7])
    if length == 0 and kind == 0:  # Zero padding.
      pos += left
      continue
    chunks.append(data[pos + 7 : pos + 7 + length])
    pos += 7 + length
    if kind in (1, 4):
      record = wandb_internal_pb2.Record()
      record.ParseFromString(b''.join(chunks))
      records.append(record)
      chunks = []
  return records


def _wandb_run_log(path):
  """Returns `(history, config, run)` from a `.wandb` file: the history rows,
  the config (initial, then updates applied) and the run record."""
  history, config, run = [], {}, None
  for record in _read_wandb_records(path):
    kind = record.WhichOneof('record_type')
    if kind == 'history':
      history.append(
        {
          (item.key or '/'.join(item.nested_key)): json.loads(item.value_json)
          for item in record.history.item
        }
      )
    elif kind == 'run':
      run = record.run
      config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
    elif kind == 'config':
      config.update(
        {(i.key or '/'.join(i.nested_key)): json.loads(i.value_json) for i in record.config.update}
      )
  return history, config, run


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
  pytest.importorskip('wandb')
  monkeypatch.setenv('WANDB_MODE', 'offline')
  monkeypatch.setenv('WANDB_SILENT', 'true')
  monkeypatch.setenv('WANDB_DIR', str(tmp_path))
  monkeypatch.setenv('WANDB_CONFIG_DIR', str(tmp_path / 'config'))
  monkeypatch.setenv('WANDB_CACHE_DIR', str(tmp_path / 'cache'))
  monkeypatch.setenv('WANDB_DATA_DIR', str(tmp_path / 'data'))
  monkeypatch.delenv('WANDB_API_KEY', raising=False)
  return tmp_path


class TestWandbWriter:
  def test_offline_run(self, wandb_env, caplog):
    pytest.importorskip('PIL')
    workdir = wandb_env / 'work'
    w = loggers.make_writer(
      'wandb',
      workdir,
      run_name='ewc-seed0',
      group='ewc',
      hparams={'optimizer.lr': np.float32(0.5), 'method': 'ewc'},
    )
    assert type(w) is loggers.WandbWriter and w.mode == 'offline'
    assert w.run.name == 'ewc-seed0' and w.run.group == 'ewc' and w.run.project == 'jcl'
    w.write_scalars(1, {'loss': np.float32(0.5), 'acc': 0.25})
    w.write_scalars(2, {'loss': 0.25, 'acc': np.array(0.75)})
    w.write_images(2, {'accuracy_matrix': loggers.accuracy_matrix_image(_accuracy_matrix())})
    w.write_texts(2, {'accuracy_matrix_text': 'task 0 <50.0>'})
    w.write_scalars(3, {'loss': 0.125})
    w.write_texts(0, {'late': 'written after step 3'})  # Behind: lands on step 3.
    assert 'logged again' not in caplog.text
    w.write_texts(3, {'late': 'again'})  # Same key, same step: replaces, with a warning.
    assert "['late'] logged again at step 3" in caplog.text
    w.write_hparams({'seed': 7, 'method': 'si'})
    w.flush()
    w.close()
    w.close()  # Idempotent.

    run_dirs = glob.glob(str(workdir / 'wandb' / 'offline-run-*'))
    assert len(run_dirs) == 1, os.listdir(workdir)
    (wandb_file,) = glob.glob(os.path.join(run_dirs[0], '*.wandb'))
    media = os.path.join(run_dirs[0], 'files', 'media')
    assert glob.glob(os.path.join(media, 'images', 'accuracy_matrix_2_*.png'))
    (html_path,) = glob.glob(os.path.join(media, 'html', 'accuracy_matrix_text_2_*.html'))
    with open(html_path, encoding='utf-8') as f:
      assert '<pre>task 0 &lt;50.0&gt;</pre>' in f.read()

    # wandb-core writes the transaction log from its own process; on a loaded
    # machine the last records can land just after `finish` returns.
    deadline = time.monotonic() + 30
    while True:
      history, config, run = _wandb_run_log(wandb_file)
      by_step = {h['_step']: h for h in history}
      if (
        sorted(by_step) == [1, 2, 3] and 'late/_type' in by_step[3] and config.get('seed') == 7
      ) or time.monotonic() > deadline:
        break
      time.sleep(0.5)
    assert sorted(by_step) == [1, 2, 3]
    assert by_step[1]['loss'] == 0.5 and by_step[1]['acc'] == 0.25
    assert by_step[2]['loss'] == 0.25 and by_step[2]['acc'] == 0.75
    assert by_step[2]['accuracy_matrix/_type'] == 'image-file'
    assert by_step[2]['accuracy_matrix/width'] == 72
    assert by_step[2]['accuracy_matrix_text/_type'] == 'html-file'
    assert by_step[3]['loss'] == 0.125
    assert by_step[3]['late/_type'] == 'html-file'
    assert run.display_name == 'ewc-seed0' and run.run_group == 'ewc'
    assert config['optimizer.lr'] == 0.5
    assert config['method'] == 'si' and config['seed'] == 7  # Updated by write_hparams.

  def test_mode_from_argument(self, wandb_env):
    w = loggers.WandbWriter(mode='disabled')
    assert w.mode == 'disabled'
    w.write_scalars(1, {'a': 1.0})
    w.close()


# ---------------------------------------------------------------------------
# make_writer with the optional backends; missing packages.
# ---------------------------------------------------------------------------


class TestMakeWriterBackends:
  def test_builtin_names(self):
    assert loggers.available_writers() == ('console', 'csv', 'jsonl', 'tensorboard', 'wandb')

  def test_make_csv_and_tensorboard(self, tmp_path):
    pytest.importorskip('tensorboardX')
    printed = []
    w = loggers.make_writer(('console,csv', 'tensorboard'), tmp_path, hparams={'a.b': 1})
    assert [type(x) for x in w.writers] == [
      loggers.ConsoleWriter,
      loggers.CsvWriter,
      loggers.TensorBoardWriter,
    ]
    assert w.writers[2].logdir == str(tmp_path / 'tensorboard')
    w.writers[0].print_fn = printed.append
    w.write_scalars(1, {'loss': 0.5})
    w.write_texts(1, {'t': 'x'})
    w.close()
    assert printed == ['[step 1] loss=0.5', '[step 1] t:\nx']
    assert (tmp_path / 'metrics.csv').exists()
    assert glob.glob(str(tmp_path / 'tensorboard' / 'events.out.tfevents.*'))

  def test_missing_package_error_names_extra(self, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorboardX', None)  # Import fails.
    with pytest.raises(ImportError, match='tensorboardX') as e:
      loggers.make_writer('jsonl,tensorboard', tmp_path)
    assert "pip install 'jcl[loggers]'" in str(e.value)
    assert 'TensorBoardWriter' in str(e.value)
    monkeypatch.setitem(sys.modules, 'wandb', None)
    with pytest.raises(ImportError, match=r"pip install 'jcl\[loggers\]'"):
      loggers.WandbWriter(tmp_path)

  def test_comet_is_gone(self):
    assert 'comet' not in loggers.available_writers()
    assert not any('comet' in name.lower() for name in dir(loggers))
