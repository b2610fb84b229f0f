"""Tests for jcl.metrics against accuracy matrices worked out by hand.

Convention: R[i, j] = accuracy on task i after training task j (fractions).
"""

import numpy as np
import pytest

from jcl import metrics

NAN = float('nan')

# 3 tasks. Forgetting here equals -BWT (each task peaks right after training).
R3 = np.array(
  [
    [0.9, 0.8, 0.7],
    [0.2, 0.9, 0.6],
    [0.1, 0.3, 0.8],
  ]
)
B3 = np.array([0.1, 0.1, 0.2])
REF3 = np.array([0.95, 0.95, 0.9])

# 4 tasks. Task 0 peaks after task 1 and task 1 after task 2, so forgetting
# differs from -BWT; R[2, 0] = 0.95 is a pre-training accuracy that must not
# count as "best accuracy" in forgetting.
R4 = np.array(
  [
    [0.80, 0.85, 0.70, 0.60],
    [0.30, 0.90, 0.95, 0.75],
    [0.95, 0.35, 0.70, 0.65],
    [0.20, 0.30, 0.40, 0.90],
  ]
)
B4 = np.array([0.25, 0.25, 0.25, 0.25])
REF4 = np.array([0.85, 0.95, 0.80, 0.90])


class TestThreeTasks:
  def test_average_accuracy(self):
    # (0.7 + 0.6 + 0.8) / 3 = 2.1 / 3
    assert metrics.average_accuracy(R3) == pytest.approx(0.7)
    assert metrics.retained_accuracy(R3) == pytest.approx(0.7)

  def test_backward_transfer(self):
    # ((0.7 - 0.9) + (0.6 - 0.9)) / 2 = -0.5 / 2
    assert metrics.backward_transfer(R3) == pytest.approx(-0.25)
    assert metrics.bti(R3) == pytest.approx(-0.25)

  def test_forward_transfer(self):
    # ((R[1,0] - b1) + (R[2,1] - b2)) / 2 = ((0.2 - 0.1) + (0.3 - 0.2)) / 2
    assert metrics.forward_transfer(R3, B3) == pytest.approx(0.1)

  def test_forgetting(self):
    # f0 = max(0.9, 0.8) - 0.7 = 0.2;  f1 = 0.9 - 0.6 = 0.3.
    f = metrics.forgetting(R3)
    assert f.shape == (2,)
    np.testing.assert_allclose(f, [0.2, 0.3])
    assert metrics.average_forgetting(R3) == pytest.approx(0.25)
    assert metrics.max_forgetting(R3) == pytest.approx(0.3)

  def test_learning_accuracy(self):
    # (0.9 + 0.9 + 0.8) / 3 = 2.6 / 3
    assert metrics.learning_accuracy(R3) == pytest.approx(2.6 / 3)

  def test_intransigence(self):
    # [0.95 - 0.9, 0.95 - 0.9, 0.9 - 0.8] = [0.05, 0.05, 0.1]
    np.testing.assert_allclose(metrics.intransigence(R3, REF3), [0.05, 0.05, 0.1])
    assert metrics.average_intransigence(R3, REF3) == pytest.approx(0.2 / 3)

  def test_summarize(self):
    s = metrics.summarize(R3, b=B3, reference=REF3)
    assert s == pytest.approx(
      {
        'acc': 0.7,
        'bwt': -0.25,
        'fwt': 0.1,
        'forgetting': 0.25,
        'max_forgetting': 0.3,
        'learning_accuracy': 2.6 / 3,
        'intransigence': 0.2 / 3,
      }
    )
    assert all(type(v) is float for v in s.values())


class TestFourTasks:
  def test_average_accuracy(self):
    # (0.60 + 0.75 + 0.65 + 0.90) / 4 = 2.90 / 4
    assert metrics.average_accuracy(R4) == pytest.approx(0.725)

  def test_backward_transfer(self):
    # ((0.60-0.80) + (0.75-0.90) + (0.65-0.70)) / 3 = -0.40 / 3
    assert metrics.backward_transfer(R4) == pytest.approx(-0.4 / 3)
    assert metrics.bti(R4) == metrics.backward_transfer(R4)

  def test_forward_transfer(self):
    # ((0.30-0.25) + (0.35-0.25) + (0.40-0.25)) / 3 = 0.30 / 3
    assert metrics.forward_transfer(R4, B4) == pytest.approx(0.1)

  def test_forward_transfer_uses_subdiagonal_only(self):
    r = R4.copy()
    r[3, 0] = NAN  # Not used by FWT (only R[i, i-1] is).
    r[2, 0] = 0.0
    assert metrics.forward_transfer(r, B4) == pytest.approx(0.1)

  def test_forgetting(self):
    # f0 = max(0.80, 0.85, 0.70) - 0.60 = 0.25
    # f1 = max(0.90, 0.95) - 0.75 = 0.20  (R[1, 0] = 0.30 is pre-training)
    # f2 = max(0.70) - 0.65 = 0.05        (not R[2, 0] = 0.95: pre-training)
    np.testing.assert_allclose(metrics.forgetting(R4), [0.25, 0.20, 0.05])
    assert metrics.average_forgetting(R4) == pytest.approx(0.5 / 3)
    assert metrics.max_forgetting(R4) == pytest.approx(0.25)
    # Forgetting is not simply -BWT when accuracy peaks after training.
    assert metrics.average_forgetting(R4) != pytest.approx(-metrics.backward_transfer(R4))

  def test_learning_accuracy(self):
    # (0.80 + 0.90 + 0.70 + 0.90) / 4 = 3.30 / 4
    assert metrics.learning_accuracy(R4) == pytest.approx(0.825)

  def test_intransigence(self):
    # [0.85-0.80, 0.95-0.90, 0.80-0.70, 0.90-0.90]
    np.testing.assert_allclose(metrics.intransigence(R4, REF4), [0.05, 0.05, 0.10, 0.0], atol=1e-12)
    assert metrics.average_intransigence(R4, REF4) == pytest.approx(0.05)

  def test_summarize(self):
    assert metrics.summarize(R4, b=B4, reference=REF4) == pytest.approx(
      {
        'acc': 0.725,
        'bwt': -0.4 / 3,
        'fwt': 0.1,
        'forgetting': 0.5 / 3,
        'max_forgetting': 0.25,
        'learning_accuracy': 0.825,
        'intransigence': 0.05,
      }
    )

  def test_summarize_skips_metrics_without_inputs(self):
    s = metrics.summarize(R4)
    assert set(s) == {'acc', 'bwt', 'forgetting', 'max_forgetting', 'learning_accuracy'}
    assert set(metrics.summarize(R4, b=B4)) == set(s) | {'fwt'}
    assert set(metrics.summarize(R4, reference=REF4)) == set(s) | {'intransigence'}

  def test_accepts_nested_lists(self):
    assert metrics.average_accuracy(R4.tolist()) == pytest.approx(0.725)


class TestPartialMatrix:
  """R4 after 3 of 4 tasks: the last column is not trained yet."""

  R = np.where(np.arange(4) < 3, R4, NAN)  # Column 3 -> NaN.

  def test_num_trained_tasks(self):
    assert metrics.num_trained_tasks(self.R) == 3
    assert metrics.num_trained_tasks(R4) == 4

  def test_metrics_use_trained_columns(self):
    r = self.R
    # ACC = (0.70 + 0.95 + 0.70) / 3
    assert metrics.average_accuracy(r) == pytest.approx(2.35 / 3)
    # BWT = ((0.70 - 0.80) + (0.95 - 0.90)) / 2
    assert metrics.backward_transfer(r) == pytest.approx(-0.025)
    # FWT = ((0.30 - 0.25) + (0.35 - 0.25)) / 2
    assert metrics.forward_transfer(r, B4) == pytest.approx(0.075)
    # f0 = max(0.80, 0.85) - 0.70 = 0.15; f1 = 0.90 - 0.95 = -0.05 (improved).
    np.testing.assert_allclose(metrics.forgetting(r), [0.15, -0.05])
    assert metrics.average_forgetting(r) == pytest.approx(0.05)
    assert metrics.max_forgetting(r) == pytest.approx(0.15)
    # LA = (0.80 + 0.90 + 0.70) / 3
    assert metrics.learning_accuracy(r) == pytest.approx(0.8)
    # I = [0.05, 0.05, 0.10]
    np.testing.assert_allclose(metrics.intransigence(r, REF4), [0.05, 0.05, 0.10])

  def test_equals_leading_block(self):
    assert metrics.summarize(self.R, b=B4, reference=REF4) == pytest.approx(
      metrics.summarize(R4[:3, :3], b=B4[:3], reference=REF4[:3])
    )

  def test_two_untrained_columns_and_unevaluated_future_tasks(self):
    r = self.R.copy()
    r[:, 2] = NAN
    r[3, 0] = NAN  # Task 3 not evaluated before training: allowed.
    assert metrics.num_trained_tasks(r) == 2
    # ACC = (0.85 + 0.90) / 2;  BWT = 0.85 - 0.80.
    assert metrics.average_accuracy(r) == pytest.approx(0.875)
    assert metrics.backward_transfer(r) == pytest.approx(0.05)
    assert metrics.forgetting(r) == pytest.approx([-0.05])

  def test_input_not_modified(self):
    r = self.R.copy()
    metrics.summarize(r, b=B4, reference=REF4)
    np.testing.assert_array_equal(r, self.R)


class TestSingleTask:
  def test_one_by_one(self):
    r = [[0.9]]
    assert metrics.average_accuracy(r) == pytest.approx(0.9)
    assert metrics.learning_accuracy(r) == pytest.approx(0.9)
    assert metrics.backward_transfer(r) == 0.0
    assert metrics.bti(r) == 0.0
    assert metrics.forward_transfer(r, [0.1]) == 0.0
    assert metrics.forgetting(r).shape == (0,)
    assert metrics.average_forgetting(r) == 0.0
    assert metrics.max_forgetting(r) == 0.0
    assert metrics.intransigence(r, [0.95]) == pytest.approx([0.05])

  def test_summarize_leaves_out_undefined_metrics(self):
    s = metrics.summarize([[0.9]], b=[0.1], reference=[0.95])
    assert s == pytest.approx({'acc': 0.9, 'learning_accuracy': 0.9, 'intransigence': 0.05})

  def test_first_column_of_larger_matrix(self):
    r = np.full((3, 3), NAN)
    r[:, 0] = [0.9, 0.2, 0.1]
    s = metrics.summarize(r, b=B3, reference=REF3)
    assert s == pytest.approx({'acc': 0.9, 'learning_accuracy': 0.9, 'intransigence': 0.05})


class TestEmptyAccuracyMatrix:
  def test_shape_and_fill(self):
    r = metrics.empty_accuracy_matrix(3)
    assert r.shape == (3, 3) and np.isnan(r).all()
    assert metrics.empty_accuracy_matrix(2, num_eval_tasks=4).shape == (4, 2)
    r[:, 0] = [0.5, 0.1, 0.2]
    assert metrics.average_accuracy(r) == pytest.approx(0.5)

  def test_invalid(self):
    with pytest.raises(ValueError, match='>= 1'):
      metrics.empty_accuracy_matrix(0)


class TestValidation:
  @pytest.mark.parametrize('r', [[0.5, 0.6], np.zeros((2, 2, 2)), 0.5])
  def test_not_2d(self, r):
    with pytest.raises(ValueError, match='2-D'):
      metrics.average_accuracy(r)

  def test_empty(self):
    with pytest.raises(ValueError, match='empty'):
      metrics.average_accuracy(np.zeros((0, 0)))

  def test_non_numeric(self):
    with pytest.raises(ValueError, match='numeric'):
      metrics.average_accuracy([['a', 'b'], ['c', 'd']])

  def test_infinite(self):
    r = R3.copy()
    r[1, 2] = np.inf
    with pytest.raises(ValueError, match=r'finite or NaN; R\[1, 2\]'):
      metrics.backward_transfer(r)

  def test_percentages_rejected(self):
    with pytest.raises(ValueError, match=r'fractions in \[0, 1\]'):
      metrics.average_accuracy(R3 * 100)
    with pytest.raises(ValueError, match=r'fractions in \[0, 1\]'):
      metrics.average_accuracy(-R3)

  def test_all_nan(self):
    with pytest.raises(ValueError, match='no trained column'):
      metrics.average_accuracy(np.full((3, 3), NAN))

  def test_gap_between_trained_columns(self):
    r = R3.copy()
    r[:, 1] = NAN
    with pytest.raises(ValueError, match='Column 1 of R is all NaN'):
      metrics.average_accuracy(r)

  def test_nan_in_trained_entry(self):
    r = R3.copy()
    r[0, 1] = NAN  # Task 0 was trained but not evaluated after task 1.
    with pytest.raises(ValueError, match=r'R\[0, 1\] is NaN'):
      metrics.average_accuracy(r)

  def test_fewer_rows_than_trained_columns(self):
    with pytest.raises(ValueError, match='rows'):
      metrics.average_accuracy(R3[:2, :])

  def test_fwt_needs_subdiagonal(self):
    r = R3.copy()
    r[2, 1] = NAN
    with pytest.raises(ValueError, match=r'R\[2, 1\] is NaN'):
      metrics.forward_transfer(r, B3)
    # Other metrics do not need the entries below the diagonal.
    assert metrics.average_accuracy(r) == pytest.approx(0.7)

  def test_b_length(self):
    with pytest.raises(ValueError, match='expected length 3, got 2'):
      metrics.forward_transfer(R3, [0.1, 0.1])
    with pytest.raises(ValueError, match='expected length 3, got 2'):
      metrics.summarize(R3, b=[0.1, 0.1])

  def test_b_not_1d(self):
    with pytest.raises(ValueError, match='1-D'):
      metrics.forward_transfer(R3, [[0.1, 0.1, 0.1]])

  def test_b_not_finite(self):
    with pytest.raises(ValueError, match=r'b\[1\] must be finite'):
      metrics.forward_transfer(R3, [0.1, NAN, 0.1])

  def test_reference_length(self):
    with pytest.raises(ValueError, match='reference'):
      metrics.intransigence(R3, [0.9] * 4)
    with pytest.raises(ValueError, match='reference'):
      metrics.summarize(R3, reference=[0.9] * 4)


class TestFormatMatrix:
  def test_table(self):
    text = metrics.format_matrix([[0.9, 0.85], [0.1, 0.95]])
    assert text == ('        after 0  after 1\ntask 0     90.0     85.0\ntask 1     10.0     95.0')

  def test_nan_and_precision(self):
    text = metrics.format_matrix([[0.9, NAN], [0.12345, NAN]], precision=2)
    lines = text.splitlines()
    assert lines[0].split() == ['after', '0', 'after', '1']
    assert lines[1].split() == ['task', '0', '90.00', '-']
    assert lines[2].split() == ['task', '1', '12.35', '-']

  def test_fractions(self):
    text = metrics.format_matrix([[0.5]], precision=3, percent=False)
    assert text.splitlines()[1].split() == ['task', '0', '0.500']

  def test_columns_line_up(self):
    r = np.full((11, 11), 0.5)
    lines = metrics.format_matrix(r).splitlines()
    assert len(lines) == 12
    assert len({len(line) for line in lines}) == 1
    assert lines[-1].startswith('task 10')

  def test_not_2d(self):
    with pytest.raises(ValueError, match='2-D'):
      metrics.format_matrix([0.5, 0.6])


class TestClassIncrementalForwardTransfer:
  """FWT is undefined in class-IL: task i's classes are masked out of the
  predictions until task i is trained, so R[i, i-1] = 0 and GEM's FWT would be
  -mean(b[1:]) for every method (the artifact this guards against)."""

  # The class-IL walk: zeros below the diagonal, b scored on every output unit.
  R = np.array([[0.99, 0.40, 0.30], [0.0, 0.98, 0.45], [0.0, 0.0, 0.97]])
  B = np.array([0.0, 0.16, 0.21])

  def test_summarize_reports_fwt_as_nan_in_class_il(self):
    assert metrics.forward_transfer(self.R, self.B) == pytest.approx(-np.mean(self.B[1:]))
    s = metrics.summarize(self.R, b=self.B, scenario='class')
    assert np.isnan(s['fwt'])
    assert {k: v for k, v in s.items() if k != 'fwt'} == pytest.approx(
      {k: v for k, v in metrics.summarize(self.R, b=self.B).items() if k != 'fwt'}
    )
    assert 'undefined in class-incremental' in metrics.undefined_metrics('class')['fwt']

  @pytest.mark.parametrize('scenario', [None, 'task', 'domain'])
  def test_other_scenarios_keep_gems_fwt(self, scenario):
    assert metrics.undefined_metrics(scenario) == {}
    assert metrics.summarize(R3, b=B3, scenario=scenario)['fwt'] == pytest.approx(0.1)

  def test_one_task_leaves_fwt_out(self):
    assert 'fwt' not in metrics.summarize(self.R[:, :1], b=self.B, scenario='class')

  def _context(self, scenario):
    from types import SimpleNamespace

    from jcl.loop import FitContext

    return FitContext(
      train_state=None,
      algo_state=None,
      num_tasks=3,
      accuracy_matrices=self.R[None].copy(),
      initial_accuracies=self.B[None].copy(),
      errors=[None],
      histories=[[]],
      benchmark=SimpleNamespace(scenario=scenario),
    )

  def test_run_summary_of_both_backends(self):
    # `FitContext.summaries` is the summary of every run (JAX, vmapped, torch).
    (summary,) = self._context('class').summaries()
    assert np.isnan(summary['fwt']) and summary['acc'] == pytest.approx(1.72 / 3)
    (summary,) = self._context('domain').summaries()
    assert summary['fwt'] == pytest.approx(-np.mean(self.B[1:]))

  def test_logged_metrics_and_console_note(self):
    from jcl.callbacks import LoggingCallback
    from jcl.loggers import ConsoleWriter

    lines = []
    ctx = self._context('class')
    ctx.task = 2
    callback = LoggingCallback([ConsoleWriter(print_fn=lines.append)])
    callback.on_fit_begin(ctx)
    callback.on_task_end(ctx)
    assert 'eval/fwt=nan' in lines[0]
    assert metrics.undefined_metrics('class')['fwt'] in lines[1]
