"""Training-time augmentation: the spec, the ops' semantics (JAX, NumPy, torch),
where it applies (training forward passes, replay; never evaluation) and a
run on real digits through the binary's path."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcl import algorithms
from jcl import augment
from jcl import experiment
from jcl import models
from jcl import specs
from jcl import train_state as ts_lib
from jcl.algorithms import base
from jcl.algorithms import buffer as buffer_lib
from jcl.algorithms import der as der_lib
from jcl.algorithms import er as er_lib
from jcl.config import default_config
from jcl.data import augment as spec_lib
from jcl.run_spec import RunSpec, TrainConfig, record_differences
from jcl.types import Batch

SHAPE = (5, 6, 2)  # H, W, C
NUM_CLASSES = 3
# Compiled once per shape (op-by-op dispatch is slower than compiling here).
AUGMENT = jax.jit(augment.augment, static_argnums=0)
DRAW = jax.jit(augment.draw, static_argnums=(0, 2))


def images(batch=4, seed=0):
  """`[B, 5, 6, 2]` float32, no zero pixel (so the fill is visible)."""
  rng = np.random.default_rng(seed)
  return rng.uniform(1.0, 2.0, (batch, *SHAPE)).astype(np.float32)


def shifted(image, dy, dx, padding, fill):
  """The crop at offset (dy, dx) written out: a shift with `fill` outside."""
  h, w, c = image.shape
  out = np.empty_like(image)
  for i in range(h):
    for j in range(w):
      si, sj = i + dy - padding, j + dx - padding
      out[i, j] = image[si, sj] if 0 <= si < h and 0 <= sj < w else fill
  return out


# -----------------------------------------------------------------------------
# The spec.
# -----------------------------------------------------------------------------


def test_spec_forms_and_canonical_strings():
  assert spec_lib.canonical('crop_flip') == 'crop:4,flip:0.5'
  assert spec_lib.canonical('flip:0.25, crop:1') == 'flip:0.25,crop:1'  # order kept
  assert spec_lib.canonical((('crop', 2), ('flip',))) == 'crop:2,flip:0.5'
  for off in (None, '', 'none', 'None'):
    assert spec_lib.canonical(off) is None and spec_lib.make(off) is None
  assert TrainConfig(augment='crop_flip').augment == 'crop:4,flip:0.5'
  assert TrainConfig().augment is None
  config = default_config('split_mnist')
  assert config.train.augment is None  # the dataclass default, copied
  config.train.augment = 'crop:2'
  spec = RunSpec.from_config(config)
  assert spec.train.augment == 'crop:2'
  assert spec.record()['train.augment'] == 'crop:2'  # it changes the numbers
  plain = RunSpec.from_config(default_config('split_mnist')).record()
  assert record_differences(plain, spec.record()) == [
    "train.augment: None in the checkpoint, 'crop:2' now"
  ]


@pytest.mark.parametrize(
  'bad, message',
  [
    ('rotate', "unknown op 'rotate'; known: crop, flip"),
    ('crop:-1', "crop padding must be an integer >= 0, got '-1'"),
    ('crop:1.5', 'crop padding must be an integer >= 0'),
    ('crop', 'crop needs its padding'),
    ('crop:x', "crop: parameter must be a number, got 'x'"),
    ('flip:2', 'flip probability must be in \\[0, 1\\]'),
    ('crop:1,crop:2', "op\\(s\\) \\['crop'\\] given more than once"),
  ],
)
def test_bad_specs_are_refused_naming_the_field(bad, message):
  config = {'benchmark': {'name': 'split_mnist'}, 'model': {'name': 'mlp'}}
  with pytest.raises(ValueError, match=f"^train: invalid 'augment': {message}"):
    RunSpec.from_config({**config, 'train': {'augment': bad}})


# -----------------------------------------------------------------------------
# The ops.
# -----------------------------------------------------------------------------


def test_flip_is_the_mirror():
  image = jnp.asarray(images(1)[0])
  np.testing.assert_array_equal(augment.flip(image, jnp.bool_(True)), image[:, ::-1])
  np.testing.assert_array_equal(augment.flip(image, jnp.bool_(False)), image)


def test_crop_of_the_padded_image_is_a_shift_with_fill():
  image, p = images(1)[0], 2
  offsets = np.array([(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)], np.int32)
  for fill in (np.zeros(2, np.float32), np.array([-1.5, 3.0], np.float32)):
    crops = jax.jit(jax.vmap(lambda o: augment.crop(jnp.asarray(image), o, p, jnp.asarray(fill))))(
      offsets
    )
    for (dy, dx), got in zip(offsets, np.asarray(crops)):
      np.testing.assert_array_equal(got, shifted(image, dy, dx, p, fill))
  np.testing.assert_array_equal(crops[len(offsets) // 2], image)  # offset (p, p): the image


def test_every_offset_is_reachable_samples_differ_and_a_key_decides():
  aug = spec_lib.make('crop:2,flip')
  draws = DRAW(aug, jax.random.PRNGKey(0), 1000)
  offsets = {tuple(o) for o in np.asarray(draws['crop']).tolist()}
  assert offsets == {(dy, dx) for dy in range(5) for dx in range(5)}
  assert np.asarray(draws['crop']).min() == 0 and np.asarray(draws['crop']).max() == 4
  assert 0.4 < float(np.mean(draws['flip'])) < 0.6
  # The same image in every row: different rows get different draws.
  x = jnp.asarray(np.repeat(images(1), 16, axis=0))
  out = np.asarray(AUGMENT(aug, jax.random.PRNGKey(1), x))
  assert len({row.tobytes() for row in out}) > 8
  # Deterministic for a key; another key, other draws.
  np.testing.assert_array_equal(AUGMENT(aug, jax.random.PRNGKey(1), x), out)
  assert not np.array_equal(AUGMENT(aug, jax.random.PRNGKey(2), x), out)
  # Off: the inputs themselves.
  assert augment.augment(None, jax.random.PRNGKey(1), x) is x


def test_jit_vmap_and_the_numpy_reference_agree():
  aug = spec_lib.make('crop:2,flip')
  x = jnp.asarray(images(16))
  key = jax.random.PRNGKey(3)
  compiled = AUGMENT(aug, key, x)
  draws = DRAW(aug, key, 16)
  numpy_draws = {k: np.asarray(v) for k, v in draws.items()}
  np.testing.assert_array_equal(spec_lib.apply_numpy(aug, np.asarray(x), numpy_draws), compiled)
  # vmapped over a leading replica axis (seeds): each replica as alone.
  keys = jax.random.split(key, 3)
  xs = jnp.stack([x, x + 1, x + 2])
  batched = jax.jit(jax.vmap(lambda k, v: augment.augment(aug, k, v)))(keys, xs)
  for r in range(3):
    np.testing.assert_array_equal(batched[r], AUGMENT(aug, keys[r], xs[r]))


def test_padding_rows_are_harmless():
  aug = spec_lib.make('crop:2,flip')
  x = images(16)
  x[12:] = 0.0  # the padding rows of a last batch (mask 0)
  key = jax.random.PRNGKey(4)
  out = np.asarray(AUGMENT(aug, key, jnp.asarray(x)))
  np.testing.assert_array_equal(out[12:], 0.0)  # zero rows stay zero (fill 0)
  x[12:] = 7.0  # whatever the padding rows hold, the real rows see the same draws
  np.testing.assert_array_equal(AUGMENT(aug, key, jnp.asarray(x))[:12], out[:12])


def test_torch_ops_are_the_same_transform():
  torch = pytest.importorskip('torch')
  from jcl.torch import augment as torch_augment
  from jcl.torch import random as torch_random

  aug = spec_lib.make('crop:2,flip', fill=[0.25, -1.0])
  x = images(8)
  draws = DRAW(aug, jax.random.PRNGKey(5), 8)
  want = jax.jit(augment.apply, static_argnums=0)(aug, jnp.asarray(x), draws)
  got = torch_augment.apply(
    aug, torch.from_numpy(x), {k: torch.from_numpy(np.array(v)) for k, v in draws.items()}
  )
  np.testing.assert_array_equal(got.numpy(), want)
  numpy_draws = {k: np.asarray(v) for k, v in draws.items()}
  np.testing.assert_array_equal(spec_lib.apply_numpy(aug, x, numpy_draws), want)
  # Its own draws: in range, per sample, deterministic for a key.
  rng = torch_random.TorchRandom(0)
  own = torch_augment.draw(aug, rng, rng.key(3, torch_augment.AUGMENT_SALT), 500)
  assert {tuple(o) for o in own['crop'].tolist()} == {(a, b) for a in range(5) for b in range(5)}
  assert 0.4 < own['flip'].double().mean().item() < 0.6
  same = torch_augment.draw(aug, rng, rng.key(3, torch_augment.AUGMENT_SALT), 500)
  assert torch.equal(own['crop'], same['crop']) and torch.equal(own['flip'], same['flip'])
  # Training passes of a state with `augment` see the step's augmented inputs.
  from jcl.torch import models as torch_models
  from jcl.torch import train_state as torch_ts

  model = torch_models.make_model('mlp', SHAPE, widths=(8,), num_classes=3, seed=0)
  state = torch_ts.create_train_state(model, specs.OptimizerSpec(), num_classes=3, augment=aug)
  xs, t = torch.from_numpy(x), torch.zeros(8, dtype=torch.int64)
  seen = torch_augment.augment(aug, state.rng, state.step_key(torch_augment.AUGMENT_SALT), xs)
  assert not torch.equal(seen, xs)
  with torch.no_grad():
    trained, _ = torch_ts.apply_model(state, xs, t, train=True)
    assert torch.equal(trained, model(seen, t, train=True))
    assert torch.equal(torch_ts.apply_model(state, xs, t, train=False)[0], model(xs, t))


# -----------------------------------------------------------------------------
# Where it applies.
# -----------------------------------------------------------------------------

AUG = spec_lib.make('crop:2,flip')
CONTEXT = algorithms.Context(SHAPE, NUM_CLASSES, num_tasks=2)


@functools.lru_cache(maxsize=None)  # states are immutable; each build compiles
def state_with(aug=AUG, seed=0):
  model = models.MLP(widths=(8,), num_classes=NUM_CLASSES)
  return ts_lib.create_train_state(
    model,
    specs.OptimizerSpec(learning_rate=0.1),
    jax.random.PRNGKey(seed),
    SHAPE,
    NUM_CLASSES,
    augment=aug,
  )


def batch_of(seed, size=6):
  rng = np.random.default_rng(seed)
  return Batch(
    jnp.asarray(images(size, seed)),
    jnp.asarray(rng.integers(0, NUM_CLASSES, size), jnp.int32),
    jnp.zeros((size,), jnp.int32),
    jnp.ones((size,), jnp.float32),
  )


def test_training_passes_augment_evaluation_does_not():
  state, plain = state_with(), state_with(None)
  x, t = batch_of(0).x, jnp.zeros((6,), jnp.int32)
  rng = jax.random.PRNGKey(9)

  @jax.jit
  def outputs(state, x, rng):
    train = ts_lib.apply_model(state, state.params, x, t, train=True, rng=rng)[0]
    evaluate = ts_lib.apply_model(state, state.params, x, t, train=False)[0]
    return train, evaluate, augment.training_inputs(state.augment, x, rng)

  trained, evaluated, seen = outputs(state, x, rng)
  assert not np.array_equal(seen, x)
  expected, _, _ = outputs(plain, seen, rng)  # the model on the augmented inputs
  np.testing.assert_array_equal(trained, expected)
  np.testing.assert_array_equal(evaluated, outputs(plain, x, rng)[1])  # evaluation: x itself
  with pytest.raises(ValueError, match='needs a key'):
    ts_lib.apply_model(state, state.params, x, t, train=True)


@functools.partial(jax.jit, static_argnums=(3, 4))
def replay_inputs(state, buffer, batch, salt, size):
  """What a replay step's forward pass sees: `[batch; memory drawn with salt]`
  and its inputs augmented with the pass's key."""
  memory, _ = buffer_lib.sample(buffer, state.step_rng(salt), size)
  joint = base.concat_batches(batch, memory)
  return joint, augment.training_inputs(AUG, joint.x, state.step_rng())


def test_er_replays_augmented_samples_and_the_buffer_keeps_the_raw_inputs():
  algo = algorithms.build(specs.make_spec('er', memory_size=32, replay_batch_size=4), CONTEXT)
  state = state_with()
  algo_state = algo.init(state, None)
  step, sgd = jax.jit(algo.step), jax.jit(base.sgd_step())
  first, second = batch_of(1), batch_of(2)
  state, algo_state, _ = step(state, first, algo_state)
  # The step on `second`, done by hand: the memory ER draws, [current; memory]
  # augmented with the forward pass's key, then a plain SGD step.
  joint, seen = replay_inputs(state, algo_state.buffer, second, er_lib.SAMPLE_SALT, 4)
  assert float(joint.mask[6:].sum()) == 4
  assert not np.array_equal(seen[6:], joint.x[6:])  # the replayed samples are augmented
  by_hand = sgd(state.replace(augment=None), joint._replace(x=seen), None)[0]
  new_state, algo_state, _ = step(state, second, algo_state)
  for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(by_hand.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # ... and not the step on the plain inputs.
  plain = sgd(state.replace(augment=None), joint, None)[0]
  leaves = zip(jax.tree.leaves(plain.params), jax.tree.leaves(new_state.params))
  assert not all(np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in leaves)
  # The buffer holds the inputs as they came.
  np.testing.assert_array_equal(algo_state.buffer.x[:12], np.concatenate([first.x, second.x]))


def test_der_stores_the_logits_of_the_augmented_pass():
  algo = algorithms.build(specs.make_spec('der', memory_size=32, replay_batch_size=4), CONTEXT)
  state = state_with()
  algo_state = algo.init(state, None)
  batch = batch_of(3)
  joint, seen = replay_inputs(state, algo_state.buffer, batch, der_lib.DISTILL_SALT, 4)
  both = jnp.concatenate([seen[:6], joint.x[:6]])  # augmented, then as they came
  logits = jax.jit(state.apply_fn)({'params': state.params}, both, jnp.zeros(12, jnp.int32))
  _, algo_state, _ = jax.jit(algo.step)(state, batch, algo_state)
  np.testing.assert_allclose(algo_state.buffer.logits[:6], logits[:6], rtol=1e-5, atol=1e-6)
  assert not np.allclose(algo_state.buffer.logits[:6], logits[6:], atol=1e-4)  # not x's
  np.testing.assert_array_equal(algo_state.buffer.x[:6], batch.x)  # Mammoth's not_aug_inputs


# -----------------------------------------------------------------------------
# A run on real digits, through the binary's path.
# -----------------------------------------------------------------------------


def digits_config(augment_spec):
  import configs.er

  config = configs.er.get_config('split_mnist_class,50')  # bundled real-MNIST sample
  config.benchmark.num_tasks = 2
  config.benchmark.samples_per_task = 1000
  config.model.widths = (32,)
  config.train.augment = augment_spec
  config.log.loggers = ()
  config.log.progress = False
  config.log.plots = False
  return config


def test_a_run_with_augmentation_learns_and_is_deterministic():
  config = digits_config('crop:2,flip')
  first, again = experiment.run(config), experiment.run(config)
  print(first.accuracy_matrix, first.summary)
  # The run's state carried the augmentation; the crop fills with the input of
  # a black pixel (-mean / std: MNIST is standardized).
  aug = first.train_state.augment
  assert aug.ops == spec_lib.parse('crop:2,flip')
  np.testing.assert_allclose(aug.fill, [-0.1307 / 0.3081], atol=2e-3)
  np.testing.assert_array_equal(first.accuracy_matrix, again.accuracy_matrix)
  # 2 tasks of 5 digits, class-incremental (chance 0.1): each task learnt, and
  # the first one kept alive by replay (seen: 0.85, 0.62; 0.38 after task 1).
  assert first.summary['learning_accuracy'] > 0.6
  assert first.accuracy_matrix[0, 1] > 0.2
