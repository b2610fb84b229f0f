"""jcl: continual learning in pure JAX.

Modules: `jcl.specs` (hyperparameters, no framework), `jcl.data` (NumPy
benchmarks and streams), `jcl.models` (flax), `jcl.algorithms` (pure step
functions), `jcl.train` (the scanned loop), `jcl.metrics`, `jcl.loggers`,
`jcl.callbacks`, `jcl.experiment` (configs to runs). Import what you use:
`import jcl` alone loads no framework.
"""

__version__ = '0.1.0'
