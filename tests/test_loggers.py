"""Tests for jcl.loggers."""
import io
import json
import sys

import numpy as np
import pytest

from jcl import loggers
from jcl import metrics

NAN = float('nan')


def _read_jsonl(path):
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f]


class RecordingLogger:
  """A fake logger that records every call."""

  def __init__(self):
    self.calls = []

  def write_scalars(self, step, scalars):
    self.calls.append(('scalars', step, dict(scalars)))

  def write_table(self, name, table, step=None):
    self.calls.append(('table', name, step))

  def flush(self):
    self.calls.append(('flush',))

  def close(self):
    self.calls.append(('close',))


class TestProtocol:

  def test_implementations_satisfy_protocol(self, tmp_path):
    assert isinstance(loggers.ConsoleLogger(), loggers.Logger)
    assert isinstance(loggers.JsonlLogger(tmp_path), loggers.Logger)
    assert isinstance(loggers.MultiLogger([]), loggers.Logger)
    assert isinstance(RecordingLogger(), loggers.Logger)


class TestJsonlLogger:

  def test_scalars_read_back(self, tmp_path):
    workdir = tmp_path / 'a' / 'b'  # Created by the logger.
    logger = loggers.JsonlLogger(workdir)
    logger.write_scalars(1, {'loss': np.float32(0.5), 'acc': np.float64(0.25),
                             'n': np.int64(3), 'lr': 1e-3})
    logger.write_scalars(np.int64(2), {'loss': NAN, 'x': np.float32(np.nan),
                                       'y': np.array(0.75)})
    logger.flush()
    records = _read_jsonl(workdir / 'metrics.jsonl')
    assert len(records) == 2
    first, second = records
    assert set(first) == {'step', 'time', 'loss', 'acc', 'n', 'lr'}
    assert first['step'] == 1
    assert isinstance(first['time'], float)
    assert first['loss'] == 0.5 and isinstance(first['loss'], float)
    assert first['acc'] == 0.25
    assert first['n'] == 3 and isinstance(first['n'], int)
    assert first['lr'] == 1e-3
    assert second == {'step': 2, 'time': second['time'], 'loss': None,
                      'x': None, 'y': 0.75}
    text = (workdir / 'metrics.jsonl').read_text()
    assert 'NaN' not in text and 'null' in text
    logger.close()

  def test_table_read_back(self, tmp_path):
    r = metrics.empty_accuracy_matrix(3)
    r[:, 0] = [0.5, 0.25, 0.125]
    logger = loggers.JsonlLogger(tmp_path)
    logger.write_table('accuracy_matrix', r, step=0)
    logger.write_table('summary', {'acc': np.float32(0.5), 'per_task':
                                   np.array([0.5, np.nan])})
    logger.close()
    records = _read_jsonl(tmp_path / 'tables.jsonl')
    assert len(records) == 2
    assert records[0]['name'] == 'accuracy_matrix'
    assert records[0]['step'] == 0
    assert isinstance(records[0]['time'], float)
    assert records[0]['table'] == [[0.5, None, None], [0.25, None, None],
                                   [0.125, None, None]]
    assert records[1]['step'] is None
    assert records[1]['table'] == {'acc': 0.5, 'per_task': [0.5, None]}
    # No scalars written: metrics.jsonl is only created on first use.
    assert not (tmp_path / 'metrics.jsonl').exists()

  def test_appends_across_instances(self, tmp_path):
    with loggers.JsonlLogger(tmp_path) as logger:
      logger.write_scalars(1, {'a': 1.0})
    with loggers.JsonlLogger(tmp_path) as logger:
      logger.write_scalars(2, {'a': 2.0})
    records = _read_jsonl(tmp_path / 'metrics.jsonl')
    assert [r['step'] for r in records] == [1, 2]
    assert [r['a'] for r in records] == [1.0, 2.0]

  def test_close_closes_files(self, tmp_path):
    logger = loggers.JsonlLogger(tmp_path)
    logger.write_scalars(0, {'a': 1.0})
    logger.write_table('t', [[0.5]])
    files = list(logger._files.values())
    assert len(files) == 2
    logger.close()
    assert all(f.closed for f in files)
    logger.close()  # Idempotent.
    with pytest.raises(ValueError, match='closed'):
      logger.write_scalars(1, {'a': 1.0})

  def test_reserved_keys(self, tmp_path):
    logger = loggers.JsonlLogger(tmp_path)
    with pytest.raises(ValueError, match='reserved'):
      logger.write_scalars(0, {'step': 1.0})
    logger.close()


class TestConsoleLogger:

  def test_scalars_line(self, capsys):
    logger = loggers.ConsoleLogger()
    logger.write_scalars(120, {'loss': 0.4312, 'acc': 0.91})
    assert capsys.readouterr().out == '[step 120] loss=0.4312 acc=0.91\n'

  def test_numpy_values(self, capsys):
    logger = loggers.ConsoleLogger()
    logger.write_scalars(3, {'loss': np.float32(0.25), 'n': np.int64(7),
                             'x': np.array(1.5), 'bad': NAN})
    assert capsys.readouterr().out == '[step 3] loss=0.25 n=7 x=1.5 bad=nan\n'

  def test_every(self, capsys):
    logger = loggers.ConsoleLogger(every=10)
    for step in range(25):
      logger.write_scalars(step, {'a': 1.0})
    lines = capsys.readouterr().out.splitlines()
    assert lines == ['[step 0] a=1', '[step 10] a=1', '[step 20] a=1']

  def test_every_invalid(self):
    with pytest.raises(ValueError, match='every'):
      loggers.ConsoleLogger(every=0)

  def test_matrix_table(self, capsys):
    r = np.array([[0.9, 0.85], [0.1, 0.95]])
    loggers.ConsoleLogger().write_table('accuracy_matrix', r, step=1)
    out = capsys.readouterr().out
    assert out == ('[step 1] accuracy_matrix:\n' + metrics.format_matrix(r) +
                   '\n')
    assert 'task 1     10.0     95.0' in out

  def test_mapping_table(self, capsys):
    loggers.ConsoleLogger().write_table('summary', {'acc': 0.5, 'bwt': -0.1})
    assert capsys.readouterr().out == 'summary:\n  acc: 0.5\n  bwt: -0.1\n'

  def test_custom_print_fn(self, capsys):
    lines = []
    logger = loggers.ConsoleLogger(print_fn=lines.append)
    logger.write_scalars(1, {'a': 0.5})
    logger.flush()
    logger.close()
    assert lines == ['[step 1] a=0.5']
    assert capsys.readouterr().out == ''


class TestMultiLogger:

  def test_fan_out(self):
    a, b = RecordingLogger(), RecordingLogger()
    multi = loggers.MultiLogger([a, b])
    multi.write_scalars(5, {'loss': 1.0})
    multi.write_table('m', [[0.5]], step=2)
    multi.flush()
    multi.close()
    expected = [('scalars', 5, {'loss': 1.0}), ('table', 'm', 2), ('flush',),
                ('close',)]
    assert a.calls == expected
    assert b.calls == expected

  def test_context_manager_closes(self):
    a = RecordingLogger()
    with loggers.MultiLogger([a]) as multi:
      multi.write_scalars(0, {})
    assert a.calls[-1] == ('close',)


class TestMakeLoggers:

  def test_console_and_jsonl(self, tmp_path, capsys):
    multi = loggers.make_loggers(['console', 'jsonl'], tmp_path)
    assert isinstance(multi, loggers.MultiLogger)
    assert [type(l) for l in multi.loggers] == [loggers.ConsoleLogger,
                                                loggers.JsonlLogger]
    multi.write_scalars(1, {'acc': 0.5})
    multi.close()
    assert capsys.readouterr().out == '[step 1] acc=0.5\n'
    assert _read_jsonl(tmp_path / 'metrics.jsonl')[0]['acc'] == 0.5

  def test_comma_separated_string(self, tmp_path):
    multi = loggers.make_loggers('console, jsonl', tmp_path)
    assert len(multi.loggers) == 2
    multi.close()

  def test_empty(self):
    assert loggers.make_loggers([]).loggers == ()

  def test_unknown_name(self, tmp_path):
    with pytest.raises(ValueError) as e:
      loggers.make_loggers(['console', 'no_such_logger'], tmp_path)
    message = str(e.value)
    assert 'no_such_logger' in message
    assert "'console'" in message and "'jsonl'" in message

  def test_duplicate_name(self, tmp_path):
    with pytest.raises(ValueError, match='more than once'):
      loggers.make_loggers(['console', 'console'], tmp_path)

  def test_jsonl_needs_workdir(self):
    with pytest.raises(ValueError, match='workdir'):
      loggers.make_loggers(['jsonl'])

  def test_register_logger(self, monkeypatch):
    monkeypatch.setattr(loggers, '_FACTORIES', dict(loggers._FACTORIES))
    loggers.register_logger('recording', lambda workdir: RecordingLogger())
    assert 'recording' in loggers.available_loggers()
    multi = loggers.make_loggers(['recording'])
    assert isinstance(multi.loggers[0], RecordingLogger)
    with pytest.raises(ValueError, match='already registered'):
      loggers.register_logger('recording', lambda workdir: RecordingLogger())


class TestProgressBar:

  def test_disabled_is_noop(self, capsys, monkeypatch):
    # tqdm must not even be needed when the bar is disabled.
    monkeypatch.setitem(sys.modules, 'tqdm', None)
    with loggers.ProgressBar(total=10, enabled=False, force=True) as bar:
      assert not bar.enabled
      bar.update(3)
      bar.set_postfix({'loss': np.float32(0.5)})
    bar.close()
    captured = capsys.readouterr()
    assert captured.out == '' and captured.err == ''

  def test_disabled_when_not_a_tty(self, capsys):
    # Under pytest's capture, stdout is not a TTY.
    bar = loggers.ProgressBar(total=10)
    assert not bar.enabled
    bar.update()
    bar.close()
    assert capsys.readouterr().err == ''

  def test_forced(self):
    pytest.importorskip('tqdm')
    stream = io.StringIO()
    bar = loggers.ProgressBar(total=4, desc='train', force=True, file=stream)
    assert bar.enabled
    bar.update(2)
    bar.set_postfix({'loss': np.float32(0.5)})
    bar.close()
    bar.close()  # Idempotent.
    text = stream.getvalue()
    assert 'train' in text and '2/4' in text and 'loss=0.5' in text
