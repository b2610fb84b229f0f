"""The `jcl` command and the `--config` flag: configs by name or path, models
switched from the command line, and the installed wheel run outside the repo."""

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys

from absl import flags
import pytest

import configs
from jcl import cli
from jcl import experiment
from jcl.run_spec import RunSpec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -----------------------------------------------------------------------------
# Config names.
# -----------------------------------------------------------------------------


def test_names_are_the_configs():
  names = configs.names()
  assert {'quickstart', 'der', 'ewc', 'lamaml', 'session'} <= set(names)
  assert not {'common', 'replay'} & set(names)  # shared helpers, no get_config


def test_resolve():
  assert configs.resolve('quickstart') == os.path.join(configs.FOLDER, 'quickstart.py')
  assert configs.resolve('der:split_mnist_class,500') == (
    os.path.join(configs.FOLDER, 'der.py') + ':split_mnist_class,500'
  )
  for path in ('configs/der.py:split_mnist_class', 'my_config.py', '/abs/x.py:arg'):
    assert configs.resolve(path) == path
  with pytest.raises(ValueError, match="no config named 'quikstart'; known: agem, bench, der"):
    configs.resolve('quikstart')


def test_model_switch():
  assert cli.model_switch(['p', '--config=x', '--config.model.widths=(3,)']) is None
  assert cli.model_switch(['p', '--config.model=cnn']) == ('cnn', True)
  assert cli.model_switch(['p', '--config.model', 'cnn', '-config.model.name=mlp']) == (
    'mlp',
    False,
  )
  assert cli.model_switch(['p', '--', '--config.model=cnn']) is None


# -----------------------------------------------------------------------------
# The --config flag.
# -----------------------------------------------------------------------------


def parse(monkeypatch, *args):
  """The config of `--config` parsed from `args`, as a binary gets it."""
  argv = ['prog', *args]
  monkeypatch.setattr(sys, 'argv', argv)
  flag_values = flags.FlagValues()
  holder = cli.DEFINE_config(flag_values=flag_values)
  flag_values(argv)
  return holder.value


def test_config_by_name_is_the_file(monkeypatch):
  by_name = parse(monkeypatch, '--config=der:split_mnist_class,500')
  by_path = parse(monkeypatch, f'--config={REPO}/configs/der.py:split_mnist_class,500')
  assert by_name.to_dict() == by_path.to_dict()
  assert by_name.algo.memory_size == 500
  with pytest.raises(flags.IllegalFlagValueError, match="no config named 'nope'"):
    parse(monkeypatch, '--config=nope')


def test_switch_model_and_override_its_fields(monkeypatch):
  config = parse(
    monkeypatch,
    '--config=quickstart',
    '--config.model=cnn',
    '--config.model.channels=16,32',
    '--config.model.hidden=64',
  )
  spec = RunSpec.from_config(config)
  assert spec.model.name == 'cnn'
  assert dict(spec.model.options) == {'channels': (16, 32), 'hidden': 64, 'dropout': 0.0}
  bench = spec.build_benchmark()
  model = experiment.build_model({'name': spec.model.name, **spec.model.options}, bench)
  assert (type(model).__name__, model.channels, model.hidden) == ('CNN', (16, 32), 64)


def test_switch_by_name_field(monkeypatch):
  """`--config.model.name=X` naming another model takes X's preset (the MLP's
  widths no longer break it), so X's fields can follow."""
  config = parse(
    monkeypatch,
    '--config=quickstart',
    '--config.model.name=resnet18_reduced',
    '--config.model.nf=4',
  )
  assert config.model.to_dict() == {'name': 'resnet18_reduced', 'nf': 4}


def test_same_model_keeps_the_config_fields(monkeypatch):
  """quickstart's MLP is 2x256: overriding a field or naming the same model keeps
  the rest; `--config.model=mlp` asks for the preset (the MLP's defaults)."""
  config = parse(monkeypatch, '--config=quickstart', '--config.model.widths=(64,)')
  assert config.model.to_dict() == {'name': 'mlp', 'widths': (64,), 'dropout': 0.0}
  config = parse(monkeypatch, '--config=quickstart', '--config.model.name=mlp')
  assert config.model.widths == (256, 256)
  config = parse(monkeypatch, '--config=quickstart', '--config.model=mlp')
  assert config.model.widths == (100, 100) and config.model.activation == 'relu'


def test_unknown_model_is_named(monkeypatch):
  with pytest.raises(
    flags.IllegalFlagValueError, match="unknown model 'vgg'; known: cnn, mlp, resnet18_reduced"
  ):
    parse(monkeypatch, '--config=quickstart', '--config.model=vgg')


# -----------------------------------------------------------------------------
# The jcl command.
# -----------------------------------------------------------------------------


def test_usage(capsys):
  assert cli.main(['jcl']) == 2
  assert 'commands:' in capsys.readouterr().err
  assert cli.main(['jcl', '--help']) == 0
  out = capsys.readouterr().out
  assert all(f'  {command} ' in out for command in cli.COMMANDS)
  assert cli.main(['jcl', 'trian']) == 2
  assert "unknown command 'trian'" in capsys.readouterr().err


def test_every_command_is_a_binary():
  for module, _ in cli.COMMANDS.values():
    assert importlib.util.find_spec(module) is not None, module


def test_command_is_the_binary():
  """`jcl train --helpshort` is `python -m experiments.train --helpshort` (absl
  exits with 1 after the help)."""

  def run(*args):
    out = subprocess.run(
      [sys.executable, '-m', *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    return out.returncode, out.stdout

  command = run('jcl.cli', 'train', '--helpshort')
  assert command == run('experiments.train', '--helpshort')
  assert '--config: Experiment config: the name of a config' in command[1]
  assert run('jcl.cli', 'bench', '--help')[0] == 0


# -----------------------------------------------------------------------------
# The wheel.
# -----------------------------------------------------------------------------


def _has_bdist_wheel() -> bool:
  """Whether this environment builds wheels without build isolation (offline)."""
  try:
    from setuptools.command import bdist_wheel  # noqa: F401  (setuptools >= 70.1)

    return True
  except ImportError:
    return importlib.util.find_spec('wheel') is not None


@pytest.mark.slow
def test_wheel_installs_the_jcl_command(tmp_path):
  """`pip install` of the wheel (not editable) gives `jcl`, which runs a config
  by name from a folder outside the repo, importing nothing from the checkout."""
  source = tmp_path / 'source'
  source.mkdir()
  ignore = shutil.ignore_patterns('__pycache__')
  for name in ('jcl', 'configs', 'experiments'):
    shutil.copytree(os.path.join(REPO, name), source / name, ignore=ignore)
  for name in ('pyproject.toml', 'README.md'):
    shutil.copy(os.path.join(REPO, name), source / name)
  pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check']
  isolation = ['--no-build-isolation', '--no-index'] if _has_bdist_wheel() else []
  wheels = tmp_path / 'wheels'
  subprocess.run(
    [*pip, 'wheel', '--no-deps', *isolation, '-q', '-w', str(wheels), str(source)],
    check=True,
    timeout=300,
  )
  (wheel,) = wheels.glob('jcl-*.whl')

  # A venv of the base interpreter with the wheel; the third-party packages
  # come from this environment's site-packages through a .pth file, whose own
  # .pth files (the editable install of the checkout) are not run.
  env_dir = tmp_path / 'env'
  subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(env_dir)], check=True)
  python = env_dir / 'bin' / 'python'
  subprocess.run(
    [*pip, '--python', str(python), 'install', '--no-deps', '--no-index', '-q', str(wheel)],
    check=True,
    timeout=300,
  )
  (env_site,) = (env_dir / 'lib').glob('python3*/site-packages')
  (env_site / 'third_party.pth').write_text('\n'.join(site.getsitepackages()) + '\n')

  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  where = subprocess.run(
    [str(python), '-c', 'import jcl, configs, experiments; print(jcl.__file__, configs.__file__)'],
    cwd=elsewhere,
    env=env,
    capture_output=True,
    text=True,
    check=True,
  ).stdout.split()
  assert all(path.startswith(str(env_site)) for path in where), where

  workdir = tmp_path / 'run'
  command = [
    str(env_dir / 'bin' / 'jcl'),
    'train',
    '--config=quickstart',
    f'--workdir={workdir}',
    '--config.benchmark.num_tasks=2',
    '--config.train.epochs=1',
    '--config.log.plots=False',
  ]
  out = subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  assert f'results in {workdir}/results.json' in out.stdout
  with open(workdir / 'results.json') as f:
    results = json.load(f)
  assert results['config']['algo']['name'] == 'ewc'  # configs/quickstart.py, installed
  assert len(results['accuracy_matrix']) == 2 and results['summary']['acc'] > 0.5
