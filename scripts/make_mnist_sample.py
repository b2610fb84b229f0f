r"""Builds the real-MNIST sample bundled as `jcl/data/assets/mnist_sample.npz`.

Reads the official IDX files with `jcl.data.load_idx_dir` and keeps a
class-balanced subset chosen with a fixed seed: `--train_per_class` training
and `--test_per_class` test images per digit, drawn without replacement and
kept in their original MNIST order. The indices into the official splits are
stored too (`train_indices`, `test_indices`) for provenance.

Usage (from the repository root):

  python scripts/make_mnist_sample.py --mnist_dir ../shared/data/mnist \
      --out jcl/data/assets/mnist_sample.npz
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jcl.data.idx import load_idx_dir  # pylint: disable=g-import-not-at-top


def balanced_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
  """`per_class` indices of each class, drawn without replacement, sorted.

  Args:
    labels: `[N]` integer labels.
    per_class: how many indices to keep per class.
    rng: the generator.

  Returns:
    `[num_classes * per_class]` sorted int64 indices into `labels`.
  """
  chosen = []
  for c in np.unique(labels):
    pool = np.flatnonzero(labels == c)
    if len(pool) < per_class:
      raise ValueError(f'class {c} has only {len(pool)} examples, {per_class} requested')
    chosen.append(rng.choice(pool, size=per_class, replace=False))
  return np.sort(np.concatenate(chosen))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
    '--mnist_dir',
    default='../shared/data/mnist',
    help='folder with the MNIST IDX files (.gz or not)',
  )
  parser.add_argument('--out', default='jcl/data/assets/mnist_sample.npz')
  parser.add_argument('--train_per_class', type=int, default=600)
  parser.add_argument('--test_per_class', type=int, default=100)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)

  mnist = load_idx_dir(args.mnist_dir, name='mnist')
  rng = np.random.default_rng(args.seed)
  train_idx = balanced_indices(mnist.y_train, args.train_per_class, rng)
  test_idx = balanced_indices(mnist.y_test, args.test_per_class, rng)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  np.savez_compressed(
    args.out,
    x_train=mnist.x_train[train_idx],
    y_train=mnist.y_train[train_idx],
    x_test=mnist.x_test[test_idx],
    y_test=mnist.y_test[test_idx],
    train_indices=train_idx.astype(np.int32),
    test_indices=test_idx.astype(np.int32),
    name=np.asarray('mnist'),
    num_classes=np.asarray(10),
    seed=np.asarray(args.seed),
  )
  print(
    f'wrote {args.out}: {len(train_idx)} train + {len(test_idx)} test '
    f'images, {os.path.getsize(args.out) / 1e6:.2f} MB'
  )


if __name__ == '__main__':
  main()
