"""Compose configs from suites/ with Hydra (no working-directory change, no output folders), so
every entry point takes the same `key=value` overrides, and check them against the schema.

The `model` and `optimizer` groups are made from the model presets and the optimizer registry
(every registered optimizer is a choice, with its defaults), so `optimizer=lamb optimizer.eps=1e-8`
works and `optimizer.epz=1e-8` is refused. Hydra's struct mode refuses unknown keys on the command
line; runners.schema checks what the files bring and every value.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import yaml

from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

import optimizers
from models import PRESETS
from runners import schema
from runners.schema import ConfigError

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"
# Mappings whose keys are the user's own (hyper-parameters, sbatch options): a key=value
# override adds to them instead of being refused.
FREE_FORM = ("optimizer_defaults", "optimizers", "launcher.sbatch", "baseline")
# Keys a -m sweep may vary: they become the suite's grid.
SWEEPABLE = ("optimizer", "optimizer.lr", "model", "seed")
SUITE_SYNTAX = ("a suite file (suites/suite/NAME.yaml) varies optimizers, their lrs, models and seeds: "
                "optimizers: {adamw: {lr: [1e-3, 3e-3]}, lamb: {}}, models: [nano], seeds: [0, 1, 2]")


def _store_generated_groups() -> None:
    """Called at every composition, so optimizers registered after import are choices too."""
    store = ConfigStore.instance()
    for name, preset in PRESETS.items():
        store.store(group="model", name=name, node={"name": name, **preset.__dict__})
    for name in optimizers.names():
        defaults = {k: list(v) if isinstance(v, tuple) else v
                    for k, v in optimizers.spec(name).defaults.items()}
        store.store(group="optimizer", name=name, node={"name": name, **defaults})


@contextlib.contextmanager
def hydra_session(config_dir: str | list[str] | None = None):
    """Hydra's own object over suites/ (and a user's folders before it, which may add or
    replace suites and groups); cleared on exit."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery

    _store_generated_groups()
    search_path = create_config_search_path(str(SUITES_DIR))
    for given in reversed([config_dir] if isinstance(config_dir, str) else config_dir or []):
        folder = Path(given.removeprefix("file://")).expanduser().absolute()
        if not folder.is_dir():
            raise ConfigError([f"--config-dir {given}: not a folder; give a folder of suite "
                               "files laid out like suites/ (e.g. suite/NAME.yaml)"])
        search_path.prepend(provider="command-line", path=f"file://{folder}",
                            anchor=SearchPathQuery(provider="schema"))
    GlobalHydra.instance().clear()
    try:
        yield Hydra.create_main_hydra2(task_name="optarena", config_search_path=search_path)
    finally:
        GlobalHydra.instance().clear()


def parse(overrides: list[str]) -> list:
    """Hydra's override grammar, one override at a time so that a problem names its override."""
    parser, parsed, errors = OverridesParser.create(), [], []
    for text in overrides:
        odd = next((c for c in text if not c.isascii()), None)
        if odd is not None:
            errors.append(f"{text}: {odd!r} is not an ASCII character; type keys and values in "
                          "ASCII (e.g. optimizer.lr=1e-3)")
            continue
        try:
            parsed += parser.parse_overrides([text])
        except HydraException as e:
            errors.append(f"{text}: cannot be read as key=value ({_first_line(e)}); lists are "
                          "[a,b], mappings {k: v}; quote a value that has spaces")
    if errors:
        raise ConfigError(errors)
    return parsed


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _key(o) -> str:
    return o.key_or_group


def _groups(hydra) -> dict[str, list[str]]:
    return {g: sorted(hydra.config_loader.get_group_options(g))
            for g in hydra.list_all_config_groups() if not g.startswith("hydra")}


def _raw_compose(hydra, overrides: list[str]) -> dict:
    cfg = hydra.compose_config(config_name="config", overrides=overrides, run_mode=RunMode.RUN,
                               from_shell=False, with_log_configuration=False)
    choice = cfg.hydra.runtime.choices.get("optimizer")
    with open_dict(cfg):
        cfg.pop("hydra", None)
    out = OmegaConf.to_container(cfg, resolve=True)
    opt = out.get("optimizer")
    if isinstance(opt, dict) and isinstance(opt.get("_target_"), str) and "name" not in opt:
        # An optimizer named by import path is called as its config file is (optimizer/NAME.yaml),
        # or else by that path, which no registered name can be (the run_id's name part)
        opt["name"] = choice or opt["_target_"]
    return out


def _flat_keys(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        out.append(prefix + str(k))
        if isinstance(v, dict) and prefix + str(k) not in FREE_FORM:
            out += _flat_keys(v, f"{prefix}{k}.")
    return out


def _unknown_key(hydra, key: str, choices: list[str]) -> str:
    """'unknown key X: did you mean Y?', Y from the config the group choices make."""
    known = _flat_keys(_raw_compose(hydra, choices))
    close = schema.closest(key, known)
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    if close:
        return f"unknown key {key}: did you mean {close}?"
    siblings = [k.rsplit(".", 1)[-1] for k in known if parent and k.startswith(parent + ".")
                and k.count(".") == key.count(".")]
    return f"unknown key {key}: " + (f"{parent} has {', '.join(siblings)}" if siblings else
                                     "not a key of the config (see --help)")


def _explain(hydra, e: Exception, choices: list[str]) -> str:
    """Hydra's and OmegaConf's error as one line naming the key or file and the fix."""
    msg = str(e).strip()
    first = _first_line(e)
    if m := re.search(r"Could not override '([^']+)'", msg):
        return _unknown_key(hydra, m.group(1), choices)
    if m := re.search(r"Could not find '([^']+)/([^'/]+)'", msg) or re.search(
            r"In '[^']*': Could not find '([^']+)/([^'/]+)'", msg):
        group, name = m.groups()
        options = _groups(hydra).get(group, [])
        return f"unknown {group} {name!r}: choose one of {', '.join(options)}" + \
            schema.did_you_mean(name, options)
    if m := re.search(r"In '([^']+)': ConfigTypeError", msg):
        return f"{m.group(1)}.yaml: {_kind_mismatch(hydra, m.group(1), choices)}"
    if m := re.search(r"Could not load '([^']+)'", msg):
        return f"{m.group(1)}.yaml could not be loaded: {first}"
    cause = str(e.__cause__ or "").strip()
    if m := re.search(r"Error merging override (\S+)", msg):
        typed = m.group(1).removeprefix("++")  # the ++ of a free-form key is ours, not the user's
        return f"{typed}: {_first_line(e.__cause__) if cause else first}: give a value of the key's kind"
    if m := re.search(r"full_key: (\S+)", msg + "\n" + cause):
        return f"{m.group(1)}: {first}"
    return first.rstrip(":") if not first.endswith(":") else first + " " + " ".join(msg.splitlines()[1:2])


def _check_choices(parsed, groups: dict[str, list[str]]) -> None:
    errors = []
    for o in parsed:
        if _key(o) in groups and not o.is_delete():
            options = groups[_key(o)]
            for value in _values(o) if o.is_sweep_override() else [o.value()]:
                if value is not None and value not in options:
                    errors.append(f"unknown {_key(o)} {schema.show(value)}: choose one of "
                                  f"{', '.join(options)}" + schema.did_you_mean(value, options))
    if errors:
        raise ConfigError(errors)


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else "a config file"
    return f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}"


def _kind_mismatch(hydra, config_path: str, choices: list[str]) -> str:
    """The first key of a config file holding a list or value where the defaults hold a
    mapping (or the reverse): what OmegaConf refuses to merge, named."""
    loaded = hydra.config_loader.repository.load_config(config_path=config_path)
    given = OmegaConf.to_container(loaded.config) if loaded is not None else {}
    base = _raw_compose(hydra, [c for c in choices if not c.startswith("suite=")])

    def walk(a, b, prefix):
        for k, v in (a or {}).items():
            if k == "defaults" or k not in b:
                continue
            if isinstance(v, dict) != isinstance(b[k], dict):
                want = "a mapping" if isinstance(b[k], dict) else "not a mapping"
                return f"{prefix}{k}: {schema.show(v)} must be {want}"
            if isinstance(v, dict):
                found = walk(v, b[k], f"{prefix}{k}.")
                if found:
                    return found
        return None

    return walk(given if isinstance(given, dict) else {}, base, "") or \
        "a key holds a list or value where the defaults hold a mapping, or the reverse"


def _for_hydra(o) -> str:
    """The override as Hydra should apply it: free-form mappings take new keys."""
    text = o.input_line
    if o.is_add() or o.is_delete() or o.is_force_add():
        return text
    if any(_key(o) == f or _key(o).startswith(f + ".") for f in FREE_FORM):
        return "++" + text
    return text


def compose_config(overrides: list[str], config_dir: str | None = None, multirun: bool = False) -> dict:
    """The composed config, checked against the schema; ConfigError lists every problem.

    `multirun`: the -m sweeps of SWEEPABLE keys become the suite's grid (runners.cli)."""
    parsed = parse(overrides)
    # hydra.searchpath=[file:///dir, ...]: the same as --config-dir for each folder
    extra = [p for o in parsed if _key(o) == "hydra.searchpath" for p in o.value()]
    parsed = [o for o in parsed if _key(o) != "hydra.searchpath"]
    config_dir = [*([config_dir] if config_dir else []), *extra]
    sweeps = {_key(o): o for o in parsed if o.is_sweep_override()}
    if sweeps and not multirun:
        key, o = next(iter(sweeps.items()))
        raise ConfigError([f"{o.input_line}: a sweep; add -m to run each value as one suite, or "
                           f"write a list as {key}=[a,b]"])
    bad = [k for k in sweeps if k not in SWEEPABLE]
    if bad:
        raise ConfigError([f"-m {k}=...: only {', '.join(SWEEPABLE)} can be swept, the rest of a "
                           f"suite is one budget; {SUITE_SYNTAX}" for k in bad])
    # A sweep's first value stands in for the composition; the grid replaces it afterwards.
    line = [f"{_key(o)}={_values(o)[0]}" if o.is_sweep_override() else _for_hydra(o) for o in parsed]
    line = _one_of_tokens_or_steps(parsed, line)
    line = _optimizer_by_import_path(parsed, line)
    with hydra_session(config_dir) as hydra:
        groups = _groups(hydra)
        _check_choices(parsed, groups)
        choices = [o.input_line for o in parsed if _key(o) in groups and not sweeps.get(_key(o))]
        try:
            cfg = _raw_compose(hydra, line)
        except yaml.YAMLError as e:
            raise ConfigError([_yaml_problem(e)]) from None
        except (HydraException, OmegaConfBaseException) as e:
            raise ConfigError([_explain(hydra, e, choices)]) from None
        suite = next((o.value() for o in parsed if _key(o) == "suite" and not o.is_delete()), None)
        if suite is not None and not isinstance(cfg.get("suite"), str):
            raise ConfigError([f"suite/{suite}.yaml: not a suite file (empty, not a mapping, or "
                               "without its first line `# @package _global_`): start it like "
                               "suites/suite/tiny.yaml"])
    ignored = [o.input_line for o in parsed if not o.is_sweep_override()
               and (_key(o) == "optimizer" or _key(o).startswith("optimizer."))]
    if cfg.get("optimizers") is not None and ignored:
        raise ConfigError([f"{o}: suite {cfg['suite']} lists its optimizers, so the optimizer group "
                           "is not used: set optimizers.NAME.KEY=... for one arm, optimizer_defaults.KEY=... "
                           "for all, or only=[...] to pick arms" for o in ignored])
    if sweeps:
        cfg = apply_sweeps(cfg, {k: _values(o) for k, o in sweeps.items()}, parsed)
    return schema.validate(cfg)


def _values(o) -> list:
    return list(o.sweep_iterator())


def _one_of_tokens_or_steps(parsed, line: list[str]) -> list[str]:
    """`budget.steps=N` typed alone sets the budget in steps (and budget.tokens=T in tokens):
    the other one is cleared, whatever the budget group says."""
    typed = {_key(o) for o in parsed}
    for key, other in (("budget.steps", "budget.tokens"), ("budget.tokens", "budget.steps")):
        if key in typed and other not in typed:
            line = [*line, f"{other}=null"]
    return line


def _optimizer_by_import_path(parsed, line: list[str]) -> list[str]:
    """`optimizer._target_=pkg.Class optimizer.lr=...` typed: the optimizer section is made of what
    is typed alone (no group's defaults under it), and a group choice that is a user's own file
    (optimizer/NAME.yaml, perhaps a `_target_`) takes keys its file does not list, as a class takes
    options of its own; runners.schema checks each key against the optimizer."""
    keys = {_key(o): o for o in parsed}
    typed = "optimizer._target_" in keys and "optimizer" not in keys
    own_file = ("optimizer" in keys and not keys["optimizer"].is_sweep_override()
                and keys["optimizer"].value() not in optimizers.names())
    if not (typed or own_file):
        return line
    out = [text if not _key(o).startswith("optimizer.") or o.is_add() or o.is_delete() or o.is_force_add()
           else ("+" if typed else "++") + text for o, text in zip(parsed, line)]
    return (["~optimizer"] if typed else []) + out + line[len(parsed):]


def apply_sweeps(cfg: dict, sweeps: dict[str, list], parsed) -> dict:
    """A -m sweep as the suite's grid: optimizer=a,b -> the optimizers (or `only` when the
    suite lists its own), optimizer.lr=x,y -> each arm's lr grid, model=... -> models,
    seed=... -> seeds. The runs, their run_ids and their skipping are the suite file's."""
    cfg = dict(cfg)
    if "seed" in sweeps:
        cfg["seeds"] = sweeps["seed"]
    if "model" in sweeps:
        cfg["models"] = sweeps["model"]
    names, lrs = sweeps.get("optimizer"), sweeps.get("optimizer.lr")
    if not (names or lrs):
        return cfg
    if cfg.get("optimizers") is None:  # one optimizer, as runners.train runs: a grid of arms
        typed = {_key(o).split(".", 1)[1]: o.value() for o in parsed
                 if _key(o).startswith("optimizer.") and not o.is_sweep_override()}
        if lrs:
            typed["lr"] = lrs
        cfg["optimizers"] = {n: dict(typed) for n in names or [cfg["optimizer"]["name"]]}
        return cfg
    if names:
        cfg["only"] = names
    if lrs:
        arms = cfg["optimizers"]
        arms = optimizers.names() if arms == "all" else arms
        arms = {n: {} for n in arms} if isinstance(arms, list) else arms
        cfg["optimizers"] = {n: {**(hp or {}), "lr": lrs} for n, hp in arms.items()}
    return cfg
