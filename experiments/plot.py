"""Redraws the plots of finished runs from their `results.json`.

  python -m experiments.plot /tmp/ewc
  python -m experiments.plot /tmp/ewc /tmp/er --compare=/tmp/compare.png

Each WORKDIR may hold a single run or a replicated one (several seeds and/or a
hyperparameter grid, from `jcl.replicas`); `jcl.plots.plot_results` writes:

* single run: `accuracy_matrix.png`, `task_accuracy.png` (and
  `task_il_accuracy_matrix.png` for runs with task-IL evaluation);
* replicated run, one setting (seeds only): the same names, drawn as the
  mean ± std over the seeds;
* replicated run, several settings: `accuracy_matrix_<k>.png`,
  `task_accuracy_<k>.png` (and `task_il_accuracy_matrix_<k>.png`) for the
  k-th ranked setting (k from 1, its row in the run's table), and
  `settings.png` comparing the settings. Diverged seeds are left out of the
  means; a setting whose seeds all diverged gets no figures.

With several WORKDIRs, also the comparison of their average accuracy over seen
tasks (by default `compare.png` in the first WORKDIR's parent), where a
replicated run contributes its best setting with a ± std band across seeds.
Every path written is printed. Needs matplotlib (`pip install "jcl[plots]"`).
"""

import os
from typing import Sequence

from absl import app
from absl import flags

from jcl import plots

_COMPARE = flags.DEFINE_string(
  'compare',
  None,
  'PNG for the comparison of the runs (default with several WORKDIRs: '
  'compare.png next to the first WORKDIR).',
)
_LABELS = flags.DEFINE_list('labels', None, 'Legend labels for --compare, one per WORKDIR.')


def main(argv: Sequence[str]) -> None:
  workdirs = list(argv[1:])
  if not workdirs:
    raise app.UsageError(
      'usage: python -m experiments.plot WORKDIR [WORKDIR ...] [--compare=out.png]'
    )
  try:
    for workdir in workdirs:
      for path in plots.plot_results(workdir):
        print(path)
    compare = _COMPARE.value
    if compare is None and len(workdirs) > 1:
      compare = os.path.join(os.path.dirname(os.path.abspath(workdirs[0])), 'compare.png')
    if compare:
      print(plots.compare_runs(workdirs, compare, labels=_LABELS.value))
  except (FileNotFoundError, ValueError) as e:
    raise app.UsageError(str(e)) from e


if __name__ == '__main__':
  app.run(main)
