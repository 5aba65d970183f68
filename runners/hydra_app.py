"""Compose configs from suites/ with Hydra's compose API (no working-directory changes, no
output folders), so every entry point takes the same `key=value` overrides."""

from __future__ import annotations

import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from runners.config import ConfigError

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"


def _forced(override: str) -> str:
    """`optimizer.lr=3e-4` or `optimizer_defaults={wd: 0.1}` sets or adds a value: group files
    need not list every key. Group choices (`model=gpt2_small`) and Hydra's own prefixes
    (`+`, `~`) are left alone."""
    key = override.split("=", 1)[0]
    groups = {p.name for p in SUITES_DIR.iterdir() if p.is_dir()}
    if "=" in override and key not in groups and not key.startswith(("+", "~")):
        return "++" + override
    return override


def compose_config(overrides: list[str], config_name: str = "config") -> dict:
    try:
        with initialize_config_dir(config_dir=str(SUITES_DIR), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=[_forced(o) for o in overrides])
        return OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as e:
        first = str(e).strip().splitlines()[0]
        missing = re.search(r"Could not find '(\w+)/(\w+)'", first)
        if missing:
            group, name = missing.groups()
            choices = sorted(p.stem for p in (SUITES_DIR / group).glob("*.yaml"))
            first = f"unknown {group} {name!r}: choose one of {', '.join(choices)} (suites/{group}/)"
        raise ConfigError([first]) from None
