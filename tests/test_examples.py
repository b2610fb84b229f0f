"""The examples run as a user runs them, and the README's own-loop snippet runs."""

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_example(name: str) -> str:
  """`python examples/<name>` from the repo's root; its stdout."""
  out = subprocess.run(
    [sys.executable, os.path.join('examples', name)],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 0, out.stderr
  return out.stdout


def test_custom_loop():
  out = run_example('custom_loop.py')
  rows = re.findall(r'^task (\d): last chunk loss ([\d.]+)$', out, re.M)
  assert [int(task) for task, _ in rows] == [0, 1, 2]
  acc, bwt = map(float, re.search(r'ACC ([\d.]+)  BWT ([-+][\d.]+)', out).groups())
  assert acc > 0.7  # EWC on 3 permutations (about 0.81); chance is 0.1
  assert bwt > -0.1


def test_own_algorithm():
  out = run_example('own_algorithm.py')
  found = dict(re.findall(r'^(\w+) +ACC ([\d.]+)', out, re.M))
  assert set(found) == {'naive', 'l2_anchor'}
  assert all(float(acc) > 0.7 for acc in found.values())  # about 0.78 each


def readme_snippet(title: str) -> str:
  with open(os.path.join(REPO, 'README.md')) as f:
    readme = f.read()
  section = readme[readme.index(f'## {title}') :]
  return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def test_readme_own_loop_snippet():
  code = readme_snippet('Using the step functions in your own loop')
  stream = 'num_tasks=3, samples_per_task=2000'
  assert stream in code
  code = code.replace(stream, 'num_tasks=3, samples_per_task=500')  # the same code, faster
  out = subprocess.run(
    [sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=300
  )
  assert out.returncode == 0, out.stderr
  last = out.stdout.strip().splitlines()[-1]  # "2 [acc0 acc1 acc2]" after the last task
  accuracies = [float(a) for a in re.findall(r'[\d.]+', last.partition(' ')[2])]
  assert len(accuracies) == 3 and min(accuracies) > 0.5


def test_own_algorithm_guide_code_runs():
  """The spec and `make` of docs/own_algorithm.md build an algorithm whose step runs."""
  with open(os.path.join(REPO, 'docs', 'own_algorithm.md')) as f:
    blocks = re.findall(r'```python\n(.*?)```', f.read(), re.S)
  code = '\n'.join(blocks[:2]) + (
    '\nimport jax, jcl.models, jcl.specs, jcl.train_state, jcl.types\n'
    'assert jcl.specs.make_spec("l2_anchor", strength=0.1) == L2AnchorSpec(0.1)\n'
    'state = jcl.train_state.create_train_state(jcl.models.MLP(widths=(8,)),\n'
    '  jcl.specs.OptimizerSpec(), jax.random.PRNGKey(0), (4,), 10)\n'
    'algo = make(L2AnchorSpec(0.1))\n'
    'a = algo.init(state, None)\n'
    'state, a = algo.begin_task(state, a, 0)\n'
    'batch = jcl.types.Batch(jax.numpy.ones((2, 4)), jax.numpy.zeros((2,), int),\n'
    '  jax.numpy.zeros((2,), int), jax.numpy.ones((2,)))\n'
    'state, a, m = jax.jit(algo.step)(state, batch, a)\n'
    'state, a = algo.end_task(state, a, None)\n'
    'print(float(m["loss"]), float(a.active))\n'
  )
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  loss, active = map(float, out.stdout.split())
  assert loss > 0 and active == 1.0
