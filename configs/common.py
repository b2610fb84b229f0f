"""Shared settings of the regularisation-family configs on the MNIST streams.

One training regime for every algorithm (MLP 2x100, SGD lr 0.01, batch 10,
one epoch per task) so that they are compared on equal terms, and penalty
strengths per stream. The Permuted-MNIST strengths come from a small grid on
real MNIST (10 tasks, 5000 training samples per task; see
tests/test_end_to_end.py for the figures); the other streams reuse them
untuned.

Note on EWC with SGD: the penalty is a quadratic of curvature
`ewc_lambda * F`, so plain SGD diverges once `lr * ewc_lambda * max(F) > 2`;
the per-sample Fisher (the right one) is far larger than the squared batch
gradient some libraries use, hence small lambdas here. Separate EWC sums the
Fishers of all tasks, online EWC decays them (gamma), which allows a larger
lambda.
"""

from jcl.config import default_config

EWC_LAMBDA = {'permuted_mnist': 2.0, 'rotated_mnist': 2.0, 'split_mnist': 2.0}
ONLINE_EWC = {
  'permuted_mnist': (20.0, 0.8),
  'rotated_mnist': (20.0, 0.8),
  'split_mnist': (20.0, 0.8),
}
SI_LAMBDA = {'permuted_mnist': 0.5, 'rotated_mnist': 0.5, 'split_mnist': 0.5}
MAS_LAMBDA = {'permuted_mnist': 0.05, 'rotated_mnist': 0.05, 'split_mnist': 0.05}
# LFL's lambda_e on the paper's Euclidean loss 1/2 ||h - h_old||^2 with the last layer frozen
# (ACC 81.3-81.5 for 0.005-0.03 on Permuted MNIST; 0.1: 77.3, 1: 34.0, 10 diverges).
LFL_LAMBDA = {'permuted_mnist': 0.02, 'rotated_mnist': 0.02, 'split_mnist': 0.02}


# Streams that reuse another's strengths (untuned): class-IL Split MNIST and
# GEM's single-pass Permuted MNIST.
TUNED_ON = {'split_mnist_class': 'split_mnist', 'permuted_mnist_online': 'permuted_mnist'}


def strength(table: dict, benchmark: str):
  """The penalty strength of `table` for `benchmark` (its tuned stream's)."""
  return table[TUNED_ON.get(benchmark, benchmark)]


def base_config(benchmark: str):
  config = default_config(benchmark)
  config.model.widths = (100, 100)
  config.optimizer.learning_rate = 0.01
  config.train.batch_size = 10
  config.train.epochs = 1
  return config
