"""A model-update session: EWC on an MLP, digits arriving a task at a time.

  python -m experiments.update --state_dir=/tmp/digits --config=configs/session.py \
      --data=npz:digits.npz?classes=0,1

The `session` section fixes what a stream of unknown length needs up front:
the output units, the capacity of per-task state (memories, heads), the
scenario and the input normalization. Swap `algo` for any method (e.g.
`--config.algo=...` in a config file of your own).
"""

from jcl.config import default_config


def get_config():
  config = default_config('split_mnist')
  config.session = dict(num_classes=10, max_tasks=10, scenario='class', normalize=True)
  config.model.widths = (256, 256)
  config.algo = dict(name='er', memory_size=200, replay_batch_size=10)
  config.optimizer.learning_rate = 0.05
  config.train.epochs = 1
  config.train.batch_size = 10
  config.log.progress = False
  return config
