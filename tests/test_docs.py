"""The API reference builds offline from the docstrings (docs/make_api.py, pdoc)."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_api_reference_builds(tmp_path):
  pytest.importorskip('pdoc')
  out = subprocess.run(
    [sys.executable, os.path.join(REPO, 'docs', 'make_api.py'), str(tmp_path)],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 0, out.stderr
  pages = {
    'index.html': 'jcl',
    'jcl.html': 'continual learning in pure JAX',
    'jcl/train.html': 'run_chunk_fn',
    'jcl/specs.html': 'register_spec',
    'jcl/algorithms/ewc.html': 'EWC',
    'jcl/algorithms/base.html': 'sgd_step',
    'jcl/models/mlp.html': 'widths',
    'jcl/config.html': 'model_preset',
    'jcl/cli.html': 'DEFINE_config',
  }
  for page, text in pages.items():
    path = tmp_path / page
    assert path.is_file(), page
    assert text in path.read_text(), (page, text)
