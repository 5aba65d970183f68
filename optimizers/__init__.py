"""Optimizers for the comparison: `build(name, model, **hparams)` and the registry behind it.

Each built-in module registers itself on import; a user's own optimizer joins with
`register(OptimizerSpec(...))`, from an installed package's `optarena.optimizers` entry point
(optimizers/plugins.py), or with no code here at all, named in a config by `_target_`
(optimizers/from_config.py).
"""

from .registry import (
    OptimizerSpec, accepts, build, names, options, predict_state, predict_state_bytes, register,
    resolve_hparams, spec, spec_of, state_bytes,
)

# Built-ins, in the order suites list them.
from . import adamw  # noqa: E402,F401
from . import adam_mini  # noqa: E402,F401
from . import adafactor  # noqa: E402,F401
from . import came  # noqa: E402,F401
from . import sm3  # noqa: E402,F401
from . import lamb  # noqa: E402,F401
from . import ademamix  # noqa: E402,F401

# Beyond the seven: what papers and benchmarks compare against since 2025.
from . import muon  # noqa: E402,F401
from . import soap  # noqa: E402,F401
from . import lion  # noqa: E402,F401
from . import schedule_free  # noqa: E402,F401
from . import mars  # noqa: E402,F401
from . import adopt  # noqa: E402,F401

from .from_config import SPEC_KEYS, SpecError  # noqa: E402

__all__ = [
    "OptimizerSpec", "SPEC_KEYS", "SpecError", "accepts", "build", "names", "options", "predict_state",
    "predict_state_bytes", "register", "resolve_hparams", "spec", "spec_of", "state_bytes",
]

# Last: a plugin imports this package to register, and finds it whole.
from . import plugins  # noqa: E402

plugins.load()
