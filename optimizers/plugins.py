"""Optimizers from installed packages: the `optarena.optimizers` entry-point group.

A package declares, in its pyproject.toml,

    [project.entry-points."optarena.optimizers"]
    my_optimizers = "my_package.optarena_specs"          # a module that calls optimizers.register()
    # or "my_package.optarena_specs:specs", a callable returning an OptimizerSpec or a list of them

and once it is installed its optimizers are names like the built-ins: in suites, `make plan`,
`--help`'s optimizer group. Each entry point is loaded once, when `optimizers` is imported; one
that fails to load (or would replace an optimizer already registered) is a one-line warning on
stderr, and the others still load.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

from . import registry

GROUP = "optarena.optimizers"


def load() -> None:
    for ep in entry_points(group=GROUP):
        before = dict(registry._REGISTRY)
        try:
            loaded = ep.load()
            if callable(loaded):
                made = loaded()
                for spec in [made] if isinstance(made, registry.OptimizerSpec) else list(made):
                    if not isinstance(spec, registry.OptimizerSpec):
                        raise TypeError(f"{ep.value} returned {type(spec).__name__}, not an OptimizerSpec")
                    registry.register(spec)
        except Exception as e:  # the plugin's own code: whatever it raises, the others still load
            registry._REGISTRY.clear()
            registry._REGISTRY.update(before)
            why = str(e).strip().splitlines()
            _warn(ep, f"failed to load ({type(e).__name__}{': ' + why[0] if why else ''}); its optimizers "
                      "are not available")
            continue
        replaced = [name for name, spec in before.items() if registry._REGISTRY[name] is not spec]
        if replaced:
            registry._REGISTRY.update({name: before[name] for name in replaced})
            _warn(ep, f"would replace {', '.join(replaced)}, already registered: kept those; its other "
                      "optimizers are loaded")


def _warn(ep, what: str) -> None:
    dist = f" from {ep.dist.name}" if ep.dist is not None else ""
    print(f"warning: optimizer plugin {ep.name!r} ({ep.value}{dist}) {what}", file=sys.stderr)
