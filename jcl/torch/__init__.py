"""jcl.torch: the PyTorch backend of jcl.

The same algorithms as `jcl.algorithms`, built from the same `jcl.specs`,
trained on the same `jcl.data` streams, with the same definitions, so that a
run on either backend gives the same numbers up to float32 rounding. It
imports no JAX (`jcl.specs`, `jcl.data` and `jcl.metrics` import neither
framework); converters move parameters between flax and PyTorch.

Modules: `models` (MLP, CNN, reduced ResNet-18 and their heads),
`convert` (flax variables <-> state_dict), `optim` (optax's SGD/Adam chain),
`train_state`, `random` (counter-based keys, injectable), `algorithms`,
`evaluation`, `fit` (the loop of `jcl.train.fit`), `experiment` (configs to
runs, `results.json`).

    from jcl.torch import algorithms, fit, models, train_state
    model = models.make_model('mlp', (28, 28, 1), widths=(100, 100), num_classes=10, seed=0)
    state = train_state.create_train_state(model, OptimizerSpec(), num_classes=10, seed=0)
    context = algorithms.Context((28, 28, 1), num_classes=10, num_tasks=5)
    result = fit.fit(algorithms.build(spec, context), state, benchmark, fit.TrainConfig())

or from a config: `python -m experiments.train --config=... --backend=torch`.
"""
