"""Neural networks for continual learning (flax.linen).

Every model is an `nn.Module` called as
`model.apply(variables, x, t, train=False, return_features=False)` with
`x` `[B, *input_shape]` float32 and `t` `[B]` int32 0-based task ids; it
returns logits `[B, num_classes]`, or `(logits, features [B, F])` with
`return_features=True`. Heads (single, multi-head, task-masked) are shared by
all models, see `jcl.models.heads`.
"""

from jcl.models import initializers
from jcl.models.cnn import CNN
from jcl.models.heads import MASK_VALUE
from jcl.models.heads import mask_logits
from jcl.models.heads import task_class_table
from jcl.models.heads import TaskClasses
from jcl.models.heads import TaskHead
from jcl.models.mlp import MLP
from jcl.models.registry import count_params
from jcl.models.registry import init_variables
from jcl.models.registry import make_model
from jcl.models.registry import model_names
from jcl.models.registry import register_model
from jcl.models.resnet import BasicBlock
from jcl.models.resnet import ResNet18Reduced

__all__ = [
  'BasicBlock',
  'CNN',
  'MASK_VALUE',
  'MLP',
  'ResNet18Reduced',
  'TaskClasses',
  'TaskHead',
  'count_params',
  'init_variables',
  'initializers',
  'make_model',
  'mask_logits',
  'model_names',
  'register_model',
  'task_class_table',
]
