"""The `jcl` command, and the `--config` flag of the binaries.

  jcl train --config=quickstart --workdir=/tmp/qs
  jcl train --config=der:split_mnist_class,500 --config.model=cnn --workdir=/tmp/der
  jcl reproduce --config=lamaml:lamaml --seeds=5 --check
  jcl update | search | plot | bench ...

`jcl COMMAND ARGS` runs the binary `python -m experiments.<binary> ARGS` (see
`COMMANDS`), with its flags; `jcl COMMAND --help` lists them.

`DEFINE_config` is the `--config` flag of every binary: ml_collections'
config file flag, where the file is a path or the name of a config of the
`configs` package (`NAME[:ARG]`: `configs/NAME.py` with `get_config(ARG)`,
`configs.resolve`), and where `--config.model=NAME` switches the model
section to the preset of model NAME (`jcl.config.model_preset`: its fields
at the model's defaults), so that its fields can be overridden next
(`--config.model=cnn --config.model.channels=16,32`). `--config.model.name=NAME`
naming another model than the config's does the same.
"""

from __future__ import annotations

import runpy
import sys
from typing import Sequence

from absl import flags
import ml_collections
from ml_collections import config_flags

from jcl import config as config_lib

# Flags defined by `DEFINE_config` belong to the binary that calls it.
flags.disclaim_key_flags()

# command -> (module run as `python -m`, what it does)
COMMANDS = {
  'train': ('experiments.train', 'train a config (one run, seeds, a grid; JAX or PyTorch)'),
  'reproduce': ('experiments.reproduce', "reproduce a config's published number over seeds"),
  'update': ('experiments.update', 'learn new tasks on top of a saved state (sessions)'),
  'search': ('experiments.search', "search a config's hyperparameters with Optuna"),
  'plot': ('experiments.plot', 'redraw and compare the plots of finished runs'),
  'bench': ('experiments.bench_peers', 'speed and memory against a minimal loop and peers'),
}


class ModelSection(ml_collections.ConfigDict):
  """A config's model section while the command line is read: the value
  of `--config.model=NAME` is the preset NAME."""


class _ModelParser(flags.ArgumentParser):
  def parse(self, argument):
    if isinstance(argument, ml_collections.ConfigDict):  # the default: the config's
      return argument
    return _locked(ModelSection(config_lib.model_preset(argument)))

  def flag_type(self):
    return 'model name'


config_flags.register_flag_parser_for_type(ModelSection, _ModelParser())


def _locked(section: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  section.lock()
  return section


def model_switch(argv: Sequence[str], name: str = 'config') -> tuple[str, bool] | None:
  """The last model named on the command line: `(model, always)`, `always`
  for `--config.model=NAME` (the preset, even of the config's model), not
  for `--config.model.name=NAME` (the preset only of another model)."""
  keys = {f'{name}.model': True, f'{name}.model.name': False}
  found = None
  for i, arg in enumerate(argv):
    if arg == '--':
      break
    if not arg.startswith('-'):
      continue
    key, eq, value = arg.lstrip('-').partition('=')
    if key in keys:
      if not eq:
        value = argv[i + 1] if i + 1 < len(argv) else None
      if value is not None:
        found = (value, keys[key])
  return found


class ConfigParser(flags.ArgumentParser):
  """ml_collections' config file parser (`files`), with names
  (`configs.resolve`) and model presets (`model_switch`, applied before the
  types of the overrides are read)."""

  def __init__(self, name: str, files: flags.ArgumentParser):
    self.name, self.files = name, files

  def flag_type(self):
    return self.files.flag_type()

  def parse(self, path):
    import configs  # the package of jcl's configs, installed with it

    config = self.files.parse(configs.resolve(path))
    if isinstance(config, ml_collections.ConfigDict) and isinstance(
      config.get('model'), ml_collections.ConfigDict
    ):
      model = config.model
      switch = model_switch(flags.FLAGS.read_flags_from_files(sys.argv, force_gnu=False), self.name)
      if switch is not None and (switch[1] or switch[0] != model.get('name')):
        model = config_lib.model_preset(switch[0])
      config.model = _locked(ModelSection(model))
    return config


def DEFINE_config(  # pylint: disable=invalid-name
  name: str = 'config',
  help_string: str = (
    'Experiment config: the name of a config of jcl (NAME[:ARG], e.g. quickstart or '
    'der:split_mnist_class,500) or the path of a config file (PATH[:ARG]); then '
    '--config.FIELD=VALUE overrides, --config.model=cnn switches the model.'
  ),
  flag_values: flags.FlagValues = flags.FLAGS,
) -> flags.FlagHolder:
  """The `--config` flag (see the module docstring)."""
  holder = config_flags.DEFINE_config_file(
    name, None, help_string, flag_values=flag_values, lock_config=True
  )
  flag = flag_values[name]
  flag.parser = ConfigParser(name, flag.parser)
  return holder


def usage() -> str:
  width = max(map(len, COMMANDS))
  lines = [f'  {c:<{width}}  {what}' for c, (_, what) in COMMANDS.items()]
  return (
    'usage: jcl COMMAND [FLAGS]   (jcl COMMAND --help lists its flags)\n\ncommands:\n'
    + '\n'.join(lines)
  )


def main(argv: Sequence[str] | None = None) -> int:
  """`jcl COMMAND ARGS`: `python -m <the command's module> ARGS`."""
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ('-h', '--help', 'help'):
    print(usage(), file=sys.stdout if len(argv) > 1 else sys.stderr)
    return 0 if len(argv) > 1 else 2
  command = argv[1]
  if command not in COMMANDS:
    print(f'jcl: unknown command {command!r}\n\n{usage()}', file=sys.stderr)
    return 2
  sys.argv = [f'jcl {command}', *argv[2:]]
  runpy.run_module(COMMANDS[command][0], run_name='__main__', alter_sys=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
