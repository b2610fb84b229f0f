"""Model-update session: learn new tasks on top of a saved continual-learning state.

  # first session: tasks 0 and 1, with a config that has a `session` section
  python -m experiments.update --state_dir=/tmp/digits --config=configs/session.py \
      --data=npz:/data/digits.npz?classes=0,1 --data=npz:/data/digits.npz?classes=2,3
  # weeks later: task 2, from the saved model, buffers, Fisher, keys...
  python -m experiments.update --state_dir=/tmp/digits --data=tfds:mnist?classes=4,5

Each session restores the model and the full algorithm state from
`--state_dir`, learns the new task(s), re-evaluates every task learned so far
and writes the new state, `results.json` and the plots there. See
`jcl/session.py` for the data formats and the guarantees.
"""

from absl import app
from absl import flags

from jcl import cli
from jcl import runs
from jcl import session

_CONFIG = cli.DEFINE_config(
  help_string='Experiment config with a `session` section (first session only): a name of '
  'jcl (NAME[:ARG]) or a path (PATH[:ARG]).'
)
_STATE_DIR = flags.DEFINE_string('state_dir', None, 'Directory of the session state.')
_DATA = flags.DEFINE_multi_string(
  'data',
  None,
  'Data of a new task (npz:PATH or tfds:NAME, optionally ?classes=0,1); repeat for several tasks.',
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  runs.quiet_unless_asked()
  with runs.errors_reported():
    result = session.update(_STATE_DIR.value, _DATA.value, _CONFIG.value)
  print(runs.format_summary(result))
  print(f'state written to {_STATE_DIR.value}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['state_dir', 'data'])
  runs.document_verbosity()
  app.run(main)
