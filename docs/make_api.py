"""Builds jcl's API reference (HTML) from the docstrings, offline, with pdoc.

  pip install pdoc            # or: pip install -e '.[test]'
  python docs/make_api.py     # -> build/api/index.html
  python docs/make_api.py OUT

Every public module of `jcl` gets a page (`jcl/algorithms/ewc.html`,
`jcl/train.html`, ...), the modules of `jcl.torch` too when PyTorch is
installed. Docstrings are read as Google style (`Args:`, `Returns:`).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import pkgutil
import sys
import warnings

DEFAULT_OUT = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'build', 'api'
)


def modules() -> list[str]:
  """The public modules of jcl (`jcl.torch`'s only with PyTorch installed)."""
  import jcl

  names = ['jcl']
  for info in pkgutil.walk_packages(jcl.__path__, 'jcl.'):
    if any(part.startswith('_') for part in info.name.split('.')):
      continue
    if info.name.startswith('jcl.torch') and importlib.util.find_spec('torch') is None:
      continue
    names.append(info.name)
  return names


def build(out: str = DEFAULT_OUT) -> pathlib.Path:
  """Writes the reference to `out`; returns the path of its index page."""
  import pdoc
  import pdoc.render

  pdoc.render.configure(docformat='google', search=True)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # type annotations pdoc cannot resolve (jax's, flax's)
    pdoc.pdoc(*modules(), output_directory=pathlib.Path(out))
  return pathlib.Path(out) / 'index.html'


if __name__ == '__main__':
  print(build(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT))
