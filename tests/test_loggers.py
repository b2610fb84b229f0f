"""Tests for jcl.loggers: the interface, console / JSONL writers, the factory,
`accuracy_matrix_image` and `ProgressBar`. CSV / TensorBoard / W&B are in
test_logger_backends.py."""

import io
import json
import logging
import sys

import numpy as np
import pytest

from jcl import loggers

NAN = float('nan')


def _read_jsonl(path):
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f]


class RecordingWriter:
  """A fake writer that records every call (implements the protocol without the base)."""

  def __init__(self, **kwargs):
    self.kwargs = kwargs
    self.calls = []

  def write_scalars(self, step, scalars):
    self.calls.append(('scalars', step, dict(scalars)))

  def write_images(self, step, images):
    self.calls.append(('images', step, sorted(images)))

  def write_texts(self, step, texts):
    self.calls.append(('texts', step, dict(texts)))

  def write_hparams(self, hparams):
    self.calls.append(('hparams', dict(hparams)))

  def flush(self):
    self.calls.append(('flush',))

  def close(self):
    self.calls.append(('close',))


class TestProtocol:
  def test_implementations_satisfy_protocol(self, tmp_path):
    assert isinstance(loggers.ConsoleWriter(), loggers.MetricWriter)
    assert isinstance(loggers.JsonlWriter(tmp_path), loggers.MetricWriter)
    assert isinstance(loggers.CsvWriter(tmp_path), loggers.MetricWriter)
    assert isinstance(loggers.MultiWriter([]), loggers.MetricWriter)
    assert isinstance(loggers.BaseWriter(), loggers.MetricWriter)
    assert isinstance(RecordingWriter(), loggers.MetricWriter)

  def test_old_interface_is_gone(self):
    class OldLogger:
      def write_scalars(self, step, scalars):
        pass

      def write_table(self, name, table, step=None):
        pass

      def flush(self):
        pass

      def close(self):
        pass

    assert not isinstance(OldLogger(), loggers.MetricWriter)
    for name in ('Logger', 'make_loggers', 'register_logger', 'ConsoleLogger', 'CometLogger'):
      assert not hasattr(loggers, name), name

  def test_base_writer_is_a_noop(self):
    with loggers.BaseWriter() as w:
      w.write_scalars(0, {'a': 1.0})
      w.write_images(0, {'i': np.zeros((2, 2, 3), np.uint8)})
      w.write_texts(0, {'t': 'x'})
      w.write_hparams({'a.b': 1})
      w.flush()


class TestConsoleWriter:
  def test_scalars_line(self, capsys):
    loggers.ConsoleWriter().write_scalars(120, {'loss': 0.4312, 'accuracy': 0.91})
    assert capsys.readouterr().out == '[step 120] loss=0.4312 accuracy=0.91\n'

  def test_numpy_values_and_precision(self, capsys):
    w = loggers.ConsoleWriter()
    w.write_scalars(
      3,
      {
        'loss': np.float32(0.25),
        'n': np.int64(7),
        'x': np.array(1.5),
        'bad': NAN,
        'ok': True,
        'long': 0.123456789,
      },
    )
    loggers.ConsoleWriter(precision=2).write_scalars(4, {'long': 0.123456789})
    assert capsys.readouterr().out == (
      '[step 3] loss=0.25 n=7 x=1.5 bad=nan ok=True long=0.1235\n[step 4] long=0.12\n'
    )

  def test_empty_scalars_print_nothing(self, capsys):
    loggers.ConsoleWriter().write_scalars(0, {})
    assert capsys.readouterr().out == ''

  def test_texts_printed_images_and_hparams_ignored(self):
    lines = []
    with loggers.ConsoleWriter(print_fn=lines.append) as w:
      w.write_texts(7, {'accuracy_matrix': 'row 0\nrow 1', 'note': 'hi'})
      w.write_images(7, {'img': np.zeros((4, 4, 3), np.uint8)})
      w.write_hparams({'optimizer.lr': 0.1})
      w.flush()
    assert lines == ['[step 7] accuracy_matrix:\nrow 0\nrow 1', '[step 7] note:\nhi']

  def test_custom_print_fn(self, capsys):
    lines = []
    loggers.ConsoleWriter(print_fn=lines.append).write_scalars(1, {'a': 0.5})
    assert lines == ['[step 1] a=0.5']
    assert capsys.readouterr().out == ''


class TestJsonlWriter:
  def test_scalars_read_back_nan_is_null(self, tmp_path):
    workdir = tmp_path / 'a' / 'b'  # Created by the writer.
    w = loggers.JsonlWriter(workdir)
    w.write_scalars(
      1, {'loss': np.float32(0.5), 'acc': np.float64(0.25), 'n': np.int64(3), 'lr': 1e-3}
    )
    w.write_scalars(
      np.int64(2), {'loss': NAN, 'x': np.float32(np.nan), 'y': np.array(0.75), 'z': float('inf')}
    )
    w.flush()
    first, second = _read_jsonl(workdir / 'metrics.jsonl')
    assert set(first) == {'step', 'time', 'loss', 'acc', 'n', 'lr'}
    assert first['step'] == 1 and isinstance(first['time'], float)
    assert first['loss'] == 0.5 and isinstance(first['loss'], float)
    assert first['acc'] == 0.25 and first['lr'] == 1e-3
    assert first['n'] == 3 and isinstance(first['n'], int)
    assert second == {
      'step': 2,
      'time': second['time'],
      'loss': None,
      'x': None,
      'y': 0.75,
      'z': None,
    }
    text = (workdir / 'metrics.jsonl').read_text()
    assert 'NaN' not in text and 'Infinity' not in text and 'null' in text
    w.close()

  def test_texts_read_back(self, tmp_path):
    with loggers.JsonlWriter(tmp_path) as w:
      w.write_texts(3, {'accuracy_matrix': 'a\n  b', 'note': 'é'})
      w.write_texts(4, {'note': 'again'})
    records = _read_jsonl(tmp_path / 'texts.jsonl')
    assert [(r['step'], r['name'], r['text']) for r in records] == [
      (3, 'accuracy_matrix', 'a\n  b'),
      (3, 'note', 'é'),
      (4, 'note', 'again'),
    ]
    assert all(set(r) == {'step', 'time', 'name', 'text'} for r in records)
    assert not (tmp_path / 'metrics.jsonl').exists()  # Created on first use only.

  def test_hparams_overwritten_and_images_ignored(self, tmp_path):
    with loggers.JsonlWriter(tmp_path) as w:
      w.write_hparams(
        {
          'optimizer.lr': np.float32(0.5),
          'method': 'ewc',
          'seed': 0,
          'data.tasks': (0, 1),
          'bad': NAN,
        }
      )
      assert json.loads((tmp_path / 'hparams.json').read_text()) == {
        'optimizer.lr': 0.5,
        'method': 'ewc',
        'seed': 0,
        'data.tasks': [0, 1],
        'bad': None,
      }
      w.write_hparams({'method': 'si'})
      w.write_images(0, {'img': np.zeros((2, 2, 3), np.uint8)})
    assert json.loads((tmp_path / 'hparams.json').read_text()) == {'method': 'si'}
    assert sorted(p.name for p in tmp_path.iterdir()) == ['hparams.json']

  def test_appends_on_reopen(self, tmp_path):
    with loggers.JsonlWriter(tmp_path) as w:
      w.write_scalars(1, {'a': 1.0})
      w.write_texts(1, {'t': 'one'})
    with loggers.JsonlWriter(tmp_path) as w:
      w.write_scalars(2, {'a': 2.0})
      w.write_texts(2, {'t': 'two'})
    records = _read_jsonl(tmp_path / 'metrics.jsonl')
    assert [(r['step'], r['a']) for r in records] == [(1, 1.0), (2, 2.0)]
    assert [r['text'] for r in _read_jsonl(tmp_path / 'texts.jsonl')] == ['one', 'two']

  def test_close_closes_files(self, tmp_path):
    w = loggers.JsonlWriter(tmp_path)
    w.write_scalars(0, {'a': 1.0})
    w.write_texts(0, {'t': 'x'})
    files = list(w._files.values())
    assert len(files) == 2
    w.close()
    assert all(f.closed for f in files)
    w.close()  # Idempotent.
    for write in (
      lambda: w.write_scalars(1, {'a': 1.0}),
      lambda: w.write_texts(1, {'t': 'y'}),
      lambda: w.write_hparams({'a': 1}),
    ):
      with pytest.raises(ValueError, match='closed'):
        write()

  def test_reserved_keys(self, tmp_path):
    with loggers.JsonlWriter(tmp_path) as w:
      for key in ('step', 'time'):
        with pytest.raises(ValueError, match='reserved'):
          w.write_scalars(0, {key: 1.0})


class TestMultiWriter:
  def test_fan_out(self):
    a, b = RecordingWriter(), RecordingWriter()
    multi = loggers.MultiWriter([a, b])
    multi.write_scalars(5, {'loss': 1.0})
    multi.write_images(5, {'m': np.zeros((2, 2, 3), np.uint8)})
    multi.write_texts(5, {'t': 'x'})
    multi.write_hparams({'a.b': 1})
    multi.flush()
    multi.close()
    expected = [
      ('scalars', 5, {'loss': 1.0}),
      ('images', 5, ['m']),
      ('texts', 5, {'t': 'x'}),
      ('hparams', {'a.b': 1}),
      ('flush',),
      ('close',),
    ]
    assert a.calls == expected and b.calls == expected

  def test_context_manager_closes(self):
    a = RecordingWriter()
    with loggers.MultiWriter([a]) as multi:
      multi.write_scalars(0, {})
    assert a.calls[-1] == ('close',)


class TestMakeWriter:
  def test_console_and_jsonl(self, tmp_path, capsys):
    w = loggers.make_writer(['console', 'jsonl'], tmp_path)
    assert isinstance(w, loggers.MultiWriter)
    assert [type(x) for x in w.writers] == [loggers.ConsoleWriter, loggers.JsonlWriter]
    w.write_scalars(1, {'acc': 0.5})
    w.close()
    assert capsys.readouterr().out == '[step 1] acc=0.5\n'
    assert _read_jsonl(tmp_path / 'metrics.jsonl')[0]['acc'] == 0.5

  @pytest.mark.parametrize(
    'names', ['console, jsonl', ('console,jsonl',), [' console ', '', 'jsonl,', ',']]
  )
  def test_comma_joined_names(self, tmp_path, names):
    w = loggers.make_writer(names, tmp_path)
    assert [type(x) for x in w.writers] == [loggers.ConsoleWriter, loggers.JsonlWriter]
    w.close()

  def test_single_writer_is_returned_as_is(self, tmp_path):
    w = loggers.make_writer('jsonl', tmp_path)
    assert type(w) is loggers.JsonlWriter and w.workdir == str(tmp_path)
    w.close()

  def test_empty(self):
    for names in ([], '', ('', ',')):
      w = loggers.make_writer(names)
      assert isinstance(w, loggers.MultiWriter) and w.writers == ()

  def test_unknown_name(self, tmp_path):
    with pytest.raises(ValueError) as e:
      loggers.make_writer('console,no_such_writer', tmp_path)
    message = str(e.value)
    assert 'no_such_writer' in message
    for name in ('console', 'jsonl', 'csv', 'tensorboard', 'wandb'):
      assert repr(name) in message
    assert not list(tmp_path.iterdir())  # Nothing built.

  def test_repeated_name(self, tmp_path):
    with pytest.raises(ValueError, match='more than once'):
      loggers.make_writer(['console', 'console,jsonl'], tmp_path)

  def test_file_writers_skipped_without_workdir(self, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger='jcl.loggers'):
      w = loggers.make_writer('jsonl,console,csv,tensorboard')
    assert type(w) is loggers.ConsoleWriter
    assert 'jsonl' in caplog.text and 'tensorboard' in caplog.text
    assert not list(tmp_path.iterdir())
    with caplog.at_level(logging.WARNING, logger='jcl.loggers'):
      w = loggers.make_writer('jsonl')
    assert isinstance(w, loggers.MultiWriter) and w.writers == ()

  def test_hparams_written_once(self, tmp_path):
    hparams = {'optimizer.lr': 0.1, 'method': 'ewc'}
    w = loggers.make_writer('jsonl', tmp_path, hparams=hparams)
    w.close()
    assert json.loads((tmp_path / 'hparams.json').read_text()) == hparams
    loggers.make_writer('jsonl', tmp_path / 'none').close()
    assert not (tmp_path / 'none' / 'hparams.json').exists()

  def test_register_writer(self, monkeypatch, tmp_path):
    monkeypatch.setattr(loggers, '_FACTORIES', dict(loggers._FACTORIES))
    loggers.register_writer(
      'recording', lambda workdir, **kwargs: RecordingWriter(workdir=workdir, **kwargs)
    )
    loggers.register_writer(
      'recording_files', lambda workdir, **_: RecordingWriter(), needs_workdir=True
    )
    assert {'recording', 'recording_files'} <= set(loggers.available_writers())
    w = loggers.make_writer(
      'recording', tmp_path, run_name='r', group='g', project='p', hparams={'a': 1}
    )
    assert isinstance(w, RecordingWriter)
    assert w.kwargs == {
      'workdir': str(tmp_path),
      'run_name': 'r',
      'group': 'g',
      'project': 'p',
      'hparams': {'a': 1},
    }
    assert w.calls == [('hparams', {'a': 1})]
    w = loggers.make_writer('recording,recording_files')
    assert isinstance(w, RecordingWriter) and w.kwargs['workdir'] is None
    with pytest.raises(ValueError, match='already registered'):
      loggers.register_writer('recording', lambda workdir, **_: RecordingWriter())
    loggers.register_writer('recording', lambda workdir, **_: RecordingWriter(), overwrite=True)

  def test_failure_closes_built_writers(self, monkeypatch, tmp_path):
    monkeypatch.setattr(loggers, '_FACTORIES', dict(loggers._FACTORIES))
    built = []

    def ok(workdir, **_):
      built.append(RecordingWriter())
      return built[-1]

    def broken(workdir, **_):
      raise RuntimeError('boom')

    loggers.register_writer('ok', ok)
    loggers.register_writer('broken', broken)
    with pytest.raises(RuntimeError, match='boom'):
      loggers.make_writer('ok,broken', tmp_path)
    assert built[0].calls == [('close',)]


class TestAccuracyMatrixImage:
  def _cell(self, image, i, j, cell):
    """The pixels of cell (i, j), without the grid lines."""
    return image[i * cell + 1 : (i + 1) * cell, j * cell + 1 : (j + 1) * cell]

  def test_shape_dtype_and_cells(self):
    r = np.full((3, 3), np.nan)
    r[np.tril_indices(3)] = [0.9, 0.5, 0.8, 0.1, 0.4, 0.7]
    image = loggers.accuracy_matrix_image(r, cell=10)
    assert image.shape == (30, 30, 3) and image.dtype == np.uint8
    for i in range(3):
      for j in range(3):
        pixels = self._cell(image, i, j, 10).reshape(-1, 3)
        assert (pixels == pixels[0]).all()  # One color per cell.
        if np.isnan(r[i, j]):
          assert pixels[0].tolist() == [128, 128, 128]  # NaN: mid-gray.
        else:
          assert len(set(pixels[0].tolist())) > 1  # A real color, not gray.
    # 1-pixel grid lines between cells (not on the outer border).
    assert (image[10, :] == 255).all() and (image[:, 20] == 255).all()
    assert not (image[0, :] == 255).all() and not (image[:, 29] == 255).all()
    assert (image[1:10, 1:10] == image[0, 0]).all()

  def test_higher_is_brighter(self):
    values = np.linspace(0.0, 1.0, 11)
    image = loggers.accuracy_matrix_image(values[None, :], cell=4)
    assert image.shape == (4, 44, 3)
    colors = image[2, 2::4].astype(np.float64)
    luminance = colors @ [0.299, 0.587, 0.114]
    assert (np.diff(luminance) > 0).all(), luminance
    assert luminance[0] < 60 and luminance[-1] > 180  # Dark to bright.
    clipped = loggers.accuracy_matrix_image([[-0.5, 1.5]], cell=4)  # Out of range: clipped.
    assert (clipped[2, 2] == image[2, 2]).all() and (clipped[2, 6] == image[2, 42]).all()

  def test_default_cell_and_jax_like_input(self):
    image = loggers.accuracy_matrix_image([[1.0, NAN], [0.5, 0.25]])
    assert image.shape == (48, 48, 3)

  def test_invalid(self):
    with pytest.raises(ValueError, match='shape'):
      loggers.accuracy_matrix_image(np.zeros(3))
    with pytest.raises(ValueError, match='cell'):
      loggers.accuracy_matrix_image(np.zeros((2, 2)), cell=1)


class TestImageConversion:
  def test_formats(self):
    rgb = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    assert loggers._as_rgb_uint8(rgb) is rgb
    gray = loggers._as_rgb_uint8(np.array([[0.0, 0.5], [1.0, 2.0]]))
    assert gray.shape == (2, 2, 3) and gray.dtype == np.uint8
    assert gray[..., 0].tolist() == [[0, 128], [255, 255]]
    assert (gray[..., 0] == gray[..., 2]).all()
    assert loggers._as_rgb_uint8(np.ones((2, 2, 1), np.float32)).tolist() == (
      np.full((2, 2, 3), 255).tolist()
    )
    with pytest.raises(ValueError, match='shape'):
      loggers._as_rgb_uint8(np.zeros((2, 2, 4)))


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
