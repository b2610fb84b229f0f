"""Tests for the optional logger backends of jcl.loggers (CSV, TensorBoard,
W&B, Comet). Each backend's test is skipped only if its package is missing."""
import csv
import glob
import json
import math
import os
import struct
import time
import sys

import numpy as np
import pytest

from jcl import loggers
from jcl import metrics

NAN = float('nan')


def _accuracy_matrix():
  r = metrics.empty_accuracy_matrix(3)
  r[:, 0] = [0.5, 0.25, 0.125]
  r[:, 1] = [0.75, 1.0, 0.0]
  return r


def _read_csv(path):
  with open(path, newline='', encoding='utf-8') as f:
    return list(csv.reader(f))


# ---------------------------------------------------------------------------
# CSV.
# ---------------------------------------------------------------------------


class TestCsvLogger:

  def test_values_header_growth_and_nan(self, tmp_path):
    workdir = tmp_path / 'a' / 'b'  # Created by the logger.
    logger = loggers.CsvLogger(workdir)
    assert isinstance(logger, loggers.Logger)
    logger.write_scalars(1, {'loss': np.float32(0.5), 'acc': 0.25})
    logger.write_scalars(np.int64(2), {'loss': NAN, 'acc': np.array(0.75)})
    logger.flush()
    rows = _read_csv(workdir / 'metrics.csv')
    assert rows[0] == ['step', 'time', 'loss', 'acc']
    assert [r[0] for r in rows[1:]] == ['1', '2']
    assert float(rows[1][2]) == 0.5 and float(rows[1][3]) == 0.25
    assert rows[2][2] == ''  # NaN -> empty.
    assert float(rows[2][3]) == 0.75
    assert all(float(r[1]) > 0 for r in rows[1:])  # time.

    # A new key extends the header; earlier rows get empty cells.
    logger.write_scalars(3, {'lr': 1e-3, 'n': np.int64(7), 'acc': 1.0})
    logger.write_scalars(4, {'loss': 0.125})
    logger.close()
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

  def test_continues_existing_file_and_tables(self, tmp_path):
    with loggers.CsvLogger(tmp_path) as logger:
      logger.write_scalars(1, {'a': 1.0})
      logger.write_table('accuracy_matrix', _accuracy_matrix(), step=0)
    with loggers.CsvLogger(tmp_path) as logger:
      logger.write_scalars(2, {'a': 2.0, 'b': float('inf')})
    rows = _read_csv(tmp_path / 'metrics.csv')
    assert rows[0] == ['step', 'time', 'a', 'b']
    assert [(r[0], r[2], r[3]) for r in rows[1:]] == [('1', '1.0', ''),
                                                       ('2', '2.0', 'inf')]
    with open(tmp_path / 'tables.jsonl', encoding='utf-8') as f:
      (table,) = [json.loads(line) for line in f]
    assert table['name'] == 'accuracy_matrix' and table['step'] == 0
    assert table['table'][0] == [0.5, 0.75, None]

  def test_reserved_names_and_closed(self, tmp_path):
    logger = loggers.CsvLogger(tmp_path)
    with pytest.raises(ValueError, match='reserved'):
      logger.write_scalars(0, {'step': 1.0})
    logger.close()
    with pytest.raises(ValueError, match='closed'):
      logger.write_scalars(0, {'a': 1.0})


# ---------------------------------------------------------------------------
# TensorBoard.
# ---------------------------------------------------------------------------


class TestTensorBoardLogger:

  def test_scalars_and_text_read_back(self, tmp_path):
    pytest.importorskip('tensorboardX')
    event_accumulator = pytest.importorskip(
        'tensorboard.backend.event_processing.event_accumulator')
    logger = loggers.TensorBoardLogger(tmp_path)
    assert isinstance(logger, loggers.Logger)
    for step in (1, 2, 3):
      logger.write_scalars(step, {'loss': np.float32(1.0 / step),
                                  'acc': np.array(0.25 * step)})
    logger.write_table('accuracy_matrix', _accuracy_matrix(), step=1)
    logger.write_table('summary', {'avg_acc': 0.5})
    logger.close()

    logdir = tmp_path / 'tensorboard'
    assert glob.glob(str(logdir / 'events.out.tfevents.*'))
    acc = event_accumulator.EventAccumulator(
        str(logdir), size_guidance={event_accumulator.TENSORS: 0,
                                    event_accumulator.SCALARS: 0})
    acc.Reload()
    tags = acc.Tags()
    assert {'loss', 'acc'} <= set(tags['scalars'])
    loss = acc.Scalars('loss')
    assert [e.step for e in loss] == [1, 2, 3]
    np.testing.assert_allclose([e.value for e in loss], [1.0, 0.5, 1.0 / 3],
                               rtol=1e-6)
    np.testing.assert_allclose([e.value for e in acc.Scalars('acc')],
                               [0.25, 0.5, 0.75])
    # Text summaries are stored as tensors under '<name>/text_summary'.
    text_tags = [t for t in tags['tensors'] if t.startswith('accuracy_matrix')]
    assert text_tags, tags
    (event,) = acc.Tensors(text_tags[0])
    assert event.step == 1
    text = event.tensor_proto.string_val[0].decode('utf-8')
    assert '| task | after 0 | after 1 | after 2 |' in text
    assert '| task 0 | 50.0 | 75.0 |  |' in text  # Percent, NaN blank.


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
    length, kind = struct.unpack('<HB', data[pos + 4:pos + 7])
    if length == 0 and kind == 0:  # Zero padding.
      pos += left
      continue
    chunks.append(data[pos + 7:pos + 7 + length])
    pos += 7 + length
    if kind in (1, 4):
      record = wandb_internal_pb2.Record()
      record.ParseFromString(b''.join(chunks))
      records.append(record)
      chunks = []
  return records


def _wandb_history(path):
  history = []
  for record in _read_wandb_records(path):
    if record.WhichOneof('record_type') == 'history':
      history.append({(item.key or '/'.join(item.nested_key)):
                      json.loads(item.value_json)
                      for item in record.history.item})
  return history


class TestWandbLogger:

  def test_offline_run(self, tmp_path, monkeypatch):
    pytest.importorskip('wandb')
    monkeypatch.setenv('WANDB_MODE', 'offline')
    monkeypatch.setenv('WANDB_SILENT', 'true')
    monkeypatch.setenv('WANDB_DIR', str(tmp_path))
    monkeypatch.setenv('WANDB_CONFIG_DIR', str(tmp_path / 'config'))
    monkeypatch.setenv('WANDB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.setenv('WANDB_DATA_DIR', str(tmp_path / 'data'))
    monkeypatch.delenv('WANDB_API_KEY', raising=False)

    logger = loggers.WandbLogger(tmp_path, config={'lr': np.float32(0.5)})
    assert isinstance(logger, loggers.Logger)
    assert logger.mode == 'offline'
    logger.write_scalars(1, {'loss': np.float32(0.5), 'acc': 0.25})
    logger.write_scalars(2, {'loss': 0.25, 'acc': np.array(0.75)})
    logger.write_table('accuracy_matrix', _accuracy_matrix(), step=0)
    logger.write_scalars(3, {'loss': 0.125})
    logger.flush()
    logger.close()
    logger.close()  # Idempotent.

    run_dirs = glob.glob(str(tmp_path / 'wandb' / 'offline-run-*'))
    assert len(run_dirs) == 1, os.listdir(tmp_path)
    (wandb_file,) = glob.glob(os.path.join(run_dirs[0], '*.wandb'))
    assert os.path.getsize(wandb_file) > 0
    assert glob.glob(os.path.join(run_dirs[0], 'files', 'media', 'table',
                                  'accuracy_matrix_*.table.json'))

    # wandb-core writes the transaction log from its own process; on a loaded
    # machine the last records can land just after `finish` returns.
    deadline = time.monotonic() + 30
    while True:
      history = _wandb_history(wandb_file)
      by_step = {h['_step']: h for h in history}
      if sorted(by_step) == [1, 2, 3] or time.monotonic() > deadline:
        break
      time.sleep(0.5)
    assert sorted(by_step) == [1, 2, 3]
    assert by_step[1]['loss'] == 0.5 and by_step[1]['acc'] == 0.25
    assert by_step[2]['loss'] == 0.25 and by_step[2]['acc'] == 0.75
    # The table rides on the latest scalar step, with its own step alongside.
    assert by_step[2]['accuracy_matrix/_type'] == 'table-file'
    assert by_step[2]['accuracy_matrix/step'] == 0
    assert by_step[2]['accuracy_matrix/nrows'] == 3
    assert by_step[3]['loss'] == 0.125


# ---------------------------------------------------------------------------
# Registry / make_loggers / Comet.
# ---------------------------------------------------------------------------


class TestMakeLoggers:

  def test_new_names_registered(self):
    assert {'csv', 'tensorboard', 'wandb', 'comet'} <= set(
        loggers.available_loggers())

  def test_make_csv_and_tensorboard(self, tmp_path):
    pytest.importorskip('tensorboardX')
    printed = []
    logger = loggers.make_loggers('console,csv,tensorboard', tmp_path)
    assert [type(l) for l in logger.loggers] == [
        loggers.ConsoleLogger, loggers.CsvLogger, loggers.TensorBoardLogger]
    logger.loggers[0].print_fn = printed.append
    logger.write_scalars(1, {'loss': 0.5})
    logger.write_table('accuracy_matrix', _accuracy_matrix(), step=0)
    logger.close()
    assert printed and (tmp_path / 'metrics.csv').exists()
    assert glob.glob(str(tmp_path / 'tensorboard' / 'events.out.tfevents.*'))

  def test_file_backends_need_workdir(self):
    with pytest.raises(ValueError, match='workdir'):
      loggers.make_loggers(['csv'])
    with pytest.raises(ValueError, match='workdir'):
      loggers.make_loggers(['tensorboard'])

  def test_comet_missing_gives_clear_error(self, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'comet_ml', None)  # Import fails.
    with pytest.raises(ImportError, match=r"pip install 'jcl\[loggers\]'") as e:
      loggers.make_loggers(['csv', 'comet'], tmp_path)
    assert 'comet_ml' in str(e.value) and 'CometLogger' in str(e.value)

  def test_missing_package_error_names_extra(self, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorboardX', None)
    with pytest.raises(ImportError, match='tensorboardX') as e:
      loggers.TensorBoardLogger(tmp_path)
    assert "pip install 'jcl[loggers]'" in str(e.value)
    monkeypatch.setitem(sys.modules, 'wandb', None)
    with pytest.raises(ImportError, match=r"jcl\[loggers\]"):
      loggers.WandbLogger(tmp_path)
