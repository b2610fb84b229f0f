"""Experiment configs (ml_collections), each a file with `get_config(arg)`.

`--config=NAME[:ARG]` names the file `NAME.py` of this folder, with ARG given
to its `get_config` (`--config=der:split_mnist_class,500`); a path works as
well (`--config=configs/der.py:split_mnist_class,500`, `--config=my.py`).
`resolve` is the one place that turns a name into a path.
"""

import os

FOLDER = os.path.dirname(os.path.abspath(__file__))


def names() -> list[str]:
  """The names of the configs here (the files that define `get_config`)."""
  found = []
  for file in sorted(os.listdir(FOLDER)):
    if file.endswith('.py') and not file.startswith('_'):
      with open(os.path.join(FOLDER, file)) as f:
        if 'def get_config(' in f.read():
          found.append(file[:-3])
  return found


def resolve(config: str) -> str:
  """`PATH[:ARG]` of a `--config` value: a name `NAME[:ARG]` becomes the path
  of `NAME.py` here; an existing file, or anything that is not a Python
  identifier (`configs/x.py`, `my.py`), is returned as it is.

  >>> os.path.relpath(resolve('der:split_mnist_class,500'), FOLDER)
  'der.py:split_mnist_class,500'
  >>> resolve('configs/der.py:split_mnist_class')
  'configs/der.py:split_mnist_class'

  Raises:
    ValueError: a name with no config (the known names listed).
  """
  name, sep, arg = config.partition(':')
  if os.path.exists(name) or not name.isidentifier():
    return config
  path = os.path.join(FOLDER, f'{name}.py')
  if name not in names():
    raise ValueError(
      f'no config named {name!r}; known: {", ".join(names())} (or a path to a config file)'
    )
  return path + sep + arg
