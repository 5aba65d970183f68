"""A suite: one budget; models x optimizers (x lr grid) x seeds, expanded into runs.

    python -m runners.suite suite=tiny [key=value ...]          # run it
    python -m runners.suite suite=gpt2_small plan=true          # print the plan, run nothing

Suite keys (besides one run's config, suites/config.yaml):
  optimizers          a list of names, a mapping name -> hyper-parameters, or `all`;
                      `lr` may be a number, a list (a grid) or `tuned` (results/<suite>/tuned.yaml)
  optimizer_defaults  hyper-parameters given to every optimizer that accepts them
  models              a list of model presets (default: the `model` group's)
  tokens_per_param    a ladder: each model's budgets are these x its parameters, the largest one
                      main wsd run per (model, optimizer, seed), the others its cooldown branches
                      (runners/ladder.py); lrs tuned on tune.models, the other models' from
                      the lr law fitted over them (runners/lr_law.py)
  target, extrapolation_limit   the scale the analysis extrapolates the ladder to, and how far
  seeds               a list, or a count N for seeds 0..N-1; seed s gives every optimizer the
                      same initial weights and data order
  only                run just these optimizers of the suite
  launcher            local | torchrun | slurm (suites/launcher/)
  force               start even when the plan says the device is too slow

Every run is checked before any starts and every problem is reported at once; nothing is
written if any run is invalid. Finished runs are skipped and interrupted ones resume.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import yaml

import optimizers
from models import PRESETS
from runners import plan as planning
from runners import ladder, lr_law, resume, schema
from runners.config import ConfigError, resolve_run, run_id
from runners.data import DataError, open_data, prepare_on_first_use
from runners.hydra_app import SUITES_DIR, compose_config
from runners.launch import LaunchFailed, launch
from runners.run_folder import FINISHED, RunFolder, atomic_write, free_bytes
from runners.branches import cosine_checks, with_branches
from runners.train import check_device

SUITE_KEYS = ("optimizers", "optimizer_defaults", "models", "seeds", "only", "launcher", "force",
              "plan", "status", "plan_device", "report", "tune", "workers", "baseline", "branches",
              "cosine_check", "tokens_per_param", "target", "extrapolation_limit")
SHIPPED_TUNED = SUITES_DIR / "tuned.yaml"
# Starting a suite on a device where the plan says it takes longer than this needs force=true.
SLOW_SUITE_SECONDS = 3600


def _seeds(value, errors: list[str]) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            errors.append(f"seeds={value}: a count must be at least 1")
            return []
        return list(range(value))
    if not isinstance(value, list) or not value:
        errors.append(f"seeds={value!r}: give a list of integers, e.g. [0, 1, 2], or a count")
        return []
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        errors.append(f"seeds={value!r}: every seed must be an integer >= 0")
        return []
    if len(set(value)) != len(value):
        errors.append(f"seeds={value!r}: a seed is listed twice")
        return []
    return value


def optimizer_arms(suite_cfg: dict, errors: list[str]) -> dict[str, dict]:
    """The suite's optimizers, each with its hyper-parameters (optimizer_defaults merged in)."""
    listed = suite_cfg.get("optimizers")
    if listed is None:  # a single optimizer from the `optimizer` group
        listed = {suite_cfg["optimizer"]["name"]: {k: v for k, v in suite_cfg["optimizer"].items()
                                                     if k != "name"}}
    if listed == "all":
        listed = optimizers.names()
    if isinstance(listed, list) and all(isinstance(n, str) for n in listed):
        listed = {name: {} for name in listed}
    if not isinstance(listed, dict) or not listed:
        errors.append(f"optimizers={listed!r}: give a list of names, a mapping name -> "
                      "hyper-parameters, or all")
        return {}
    only = suite_cfg.get("only")
    if only is not None:
        if not isinstance(only, list) or not all(isinstance(n, str) for n in only):
            errors.append(f"only={only!r}: give a list of optimizer names, e.g. [adamw,adam_mini]")
            return {}
        listed = {n: listed.get(n, {}) for n in only}
    shared = suite_cfg.get("optimizer_defaults") or {}
    if not isinstance(shared, dict):
        errors.append(f"optimizer_defaults={shared!r}: give a mapping of hyper-parameters")
        shared = {}
    out = {}
    for name, hparams in listed.items():
        if hparams is not None and not isinstance(hparams, dict):
            errors.append(f"optimizers.{name}={hparams!r}: give a mapping of hyper-parameters")
            continue
        hparams = hparams or {}
        try:
            spec = optimizers.spec_of({"name": name, **hparams})
        except optimizers.SpecError as e:  # an optimizer from config: the message starts with its key
            errors.append(f"optimizers.{name}.{e}")
            continue
        except ValueError as e:
            errors.append(f"optimizers.{name}: {e}" + (" (or name a class by import path: "
                          f"optimizers.{name}._target_=package.module.Class)" if not hparams else ""))
            continue
        if "_target_" in hparams and (problem := _target_arm_problem(suite_cfg, name, hparams, spec)):
            errors.append(problem)
            continue
        out[name] = {**{k: v for k, v in shared.items() if optimizers.accepts(spec, k)}, **hparams}
    return out


def _target_arm_problem(suite_cfg: dict, name: str, hparams: dict, spec) -> str | None:
    """What an arm named by `_target_` needs beyond its own keys: a name of its own (the run_id's
    and the report's), and a range for the tuner when its lr is tuned."""
    if problem := schema.taken_name(name, "optimizers."):
        return f"optimizers.{name}: {problem}"
    if hparams["lr"] == "tuned" and spec.lr_range is None and (suite_cfg.get("tune") or {}).get("lr_range") is None:
        return (f"optimizers.{name}.lr_range: missing: its lr is tuned, so give the range it is tuned "
                "over, [lo, hi] (or tune.lr_range)")
    return None


def suite_seeds(suite_cfg: dict) -> list:
    seeds = suite_cfg.get("seeds")
    seeds = [suite_cfg["seed"]] if seeds is None else seeds
    return list(range(seeds)) if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds


def budget_tokens(budget: dict) -> int | None:
    """The budget in tokens, whole steps of global_batch x seq_len (as resolve_run makes it)."""
    per_step = budget["global_batch"] * budget["seq_len"]
    steps = budget["steps"] if budget["tokens"] is None else int(budget["tokens"] // per_step)
    return None if steps is None else steps * per_step


def _read_yaml(path: Path) -> dict:
    return (yaml.safe_load(path.read_text()) if path.exists() else None) or {}


def _tuned_lr(suite_cfg: dict, model: str, name: str, tokens: int, errors: list[str]) -> float | None:
    """The lr tuned for this model and optimizer at exactly its budget of `tokens` (tuned.yaml is
    keyed model -> budget tokens -> optimizer): an lr tuned at another budget is refused. The
    suite's own tuning (results/<suite>/tuned.yaml) comes first, then the lrs shipped with the
    project (suites/tuned.yaml, suite -> the same layout, made by `make tune`)."""
    path = Path(suite_cfg["results_dir"]) / suite_cfg["suite"] / "tuned.yaml"
    budgets = set()
    schedule = suite_cfg["budget"]["schedule"]
    for tuned in (_read_yaml(path), _read_yaml(SHIPPED_TUNED).get(suite_cfg["suite"]) or {}):
        found = {b: arms[name] for b, arms in (tuned.get(model) or {}).items() if name in (arms or {})}
        entry = found.get(str(tokens))
        if entry is not None and entry.get("schedule", schedule) != schedule:
            errors.append(f"optimizers.{name}.lr=tuned: the lr for {model}/{name} at {tokens:,} tokens was tuned "
                          f"under budget.schedule={entry['schedule']}, and this suite runs {schedule}: run "
                          f"`make tune suite={suite_cfg['suite']}` first")
            return None
        if entry is not None:
            return entry["lr"]
        budgets |= set(found)
    seen = ", ".join(f"{int(b):,}" for b in sorted(budgets, key=int))
    elsewhere = f" (tuned at {seen} tokens only)" if budgets else ""
    errors.append(f"optimizers.{name}.lr=tuned: {path} has no lr for {model}/{name} at this budget of "
                  f"{tokens:,} tokens{elsewhere}: run `make tune suite={suite_cfg['suite']}` first")
    return None


def _lrs(suite_cfg: dict, rung: dict, name: str, hparams: dict, laws: dict, errors: list[str]) -> list:
    # an arm named by `_target_` always says its lr (optimizers.from_config)
    lr = hparams["lr"] if "lr" in hparams else optimizers.spec(name).defaults["lr"]
    if lr == "tuned" and rung["tokens"] is None:  # a ladder rung in error: its error says why
        return []
    if lr == "tuned" and not rung["tuned"]:  # a model tune.models leaves out: the lr law's
        law = laws.get(name)
        return [] if law is None else [law_lr(law, rung)]
    if lr == "tuned":
        found = _tuned_lr(suite_cfg, rung["model"], name, rung["tokens"], errors)
        return [found] if found is not None else []
    grid = lr if isinstance(lr, list) else [lr]
    if not grid or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in grid):
        errors.append(f"optimizers.{name}.lr={lr!r}: give a number, a list of numbers, or tuned")
        return []
    return grid


def expand(suite_cfg: dict) -> list[dict]:
    """One raw run config per (model, optimizer, lr, seed), in the suite's order."""
    runs, errors = _expand(suite_cfg)
    if errors:
        raise ConfigError(errors)
    return runs


def model_section(suite_cfg: dict, model: str) -> dict:
    """`model`'s section in this suite: its preset's, with what the model group's section sets
    apart from its own preset (the user's model.KEY=... overrides)."""
    group = suite_cfg["model"]
    if model == group["name"]:
        return group
    preset = PRESETS[group["name"]].__dict__ if group["name"] in PRESETS else {}
    return {"name": model, **{k: v for k, v in group.items() if k != "name" and preset.get(k, v) != v}}


def _tune_models(suite_cfg: dict, models: list[str], errors: list[str]) -> list[str]:
    """The models whose lrs are tuned (tune.models; null: every model of the suite)."""
    listed = (suite_cfg.get("tune") or {}).get("models")
    if listed is None:
        return models
    for m in [m for m in listed if m not in models]:
        errors.append(f"tune.models: {m} is not among the suite's models ({', '.join(models)}): "
                      "name the models to tune among them")
    return [m for m in listed if m in models]


def rungs(suite_cfg: dict, models: list[str], errors: list[str]) -> list[dict]:
    """Per model: its section, parameters, main-run budget (a ladder's largest rung, else the
    suite's) and its tokens, the steps of each ladder rung, and whether its lrs are tuned (else
    the lr law's)."""
    tuned = _tune_models(suite_cfg, models, errors)
    tpp = suite_cfg.get("tokens_per_param")
    if tpp:
        ladder.check(suite_cfg, errors)
    out = []
    for model in models:
        section = model_section(suite_cfg, model)
        try:
            n = ladder.params(section)
        except (ValueError, TypeError) as e:  # a shape that cannot be built: its runs say why
            n = None
            if tpp:  # and a ladder cannot size its budgets
                errors.append(f"tokens_per_param: {model} cannot be built ({e}), so its parameters cannot be "
                              "counted: fix its model section")
        rung = {"model": model, "section": section, "params": n, "budget": suite_cfg["budget"], "steps": {},
                "tuned": model in tuned}
        if tpp and n is not None:
            rung["steps"] = ladder.rung_steps(suite_cfg, model, rung["params"], errors)
            if rung["steps"]:
                rung["budget"] = {**suite_cfg["budget"], "tokens": None, "steps": max(rung["steps"].values())}
        rung["tokens"] = budget_tokens(rung["budget"])
        out.append(rung)
    return out


def lr_laws(suite_cfg: dict, listed: dict[str, dict], rungs_: list[dict], errors: list[str]) -> dict:
    """optimizer -> its lr law over the tuned rungs, for each optimizer whose lr is `tuned`, when
    some rung is not tuned (runners/lr_law.py)."""
    tuned = [r for r in rungs_ if r["tuned"]]
    if len(tuned) == len(rungs_) or any(r["tokens"] is None or r["params"] is None for r in rungs_):
        return {}
    laws = {}
    for name in (n for n, hp in listed.items() if hp.get("lr") == "tuned"):
        found = [{"model": r["model"], "params": r["params"], "tokens": r["tokens"], "lr": lr} for r in tuned
                 if (lr := _tuned_lr(suite_cfg, r["model"], name, r["tokens"], errors)) is not None]
        if len(found) < len(tuned):
            continue  # a tuned rung has no lr yet: its error says to tune it
        try:
            laws[name] = lr_law.fit(name, found)
        except lr_law.LawError as e:
            errors.append(f"tune.models={[r['model'] for r in tuned]}: the lr law of {e}: add a model of "
                          "another size to tune.models, or set tune.models=null to tune every model")
    return laws


def law_lr(law: lr_law.Law, rung: dict) -> float:
    """The law's lr for a rung, to 3 significant digits (as tuned lrs are written)."""
    return float(f"{law.lr(rung['params'], rung['tokens']):.3g}")


def _expand(suite_cfg: dict) -> tuple[list[dict], list[str]]:
    # A field in error still yields runs (one seed, the default lr), so that the runs' own
    # problems are found too and every error of the suite is reported at once.
    errors: list[str] = []
    seeds = suite_cfg.get("seeds")
    seeds = _seeds([suite_cfg.get("seed", 0)] if seeds is None else seeds, errors) or [0]
    listed = optimizer_arms(suite_cfg, errors)
    base_arm = (suite_cfg.get("baseline") or {}).get("optimizer")
    whole = optimizer_arms({**suite_cfg, "only": None}, []) if suite_cfg.get("only") else listed
    if whole and base_arm is not None and base_arm not in whole:  # only=[...] may leave it out
        errors.append(f"baseline={base_arm}: not among the suite's optimizers ({', '.join(whole)}): add it, "
                      "or name another baseline")
    models = suite_cfg.get("models") or [suite_cfg["model"]["name"]]
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        errors.append(f"models={models!r}: give a list of model presets, e.g. [gpt2_small]")
        models = []
    for m in [m for m in models if m not in PRESETS]:
        errors.append(f"models: unknown model {m!r}: choose among {', '.join(PRESETS)}")
    models = [m for m in models if m in PRESETS]
    base = {k: v for k, v in suite_cfg.items() if k not in SUITE_KEYS}
    rungs_ = rungs(suite_cfg, models, errors)
    laws = lr_laws(suite_cfg, listed, rungs_, errors)
    runs = []
    for rung in rungs_:
        for name, hparams in listed.items():
            for lr in _lrs(suite_cfg, rung, name, hparams, laws, errors):
                for seed in seeds:
                    cfg = copy.deepcopy(base)
                    cfg["model"] = copy.deepcopy(rung["section"])
                    cfg["budget"] = copy.deepcopy(rung["budget"])
                    cfg["optimizer"] = {"name": name, **hparams, "lr": lr}
                    cfg["seed"] = seed
                    runs.append(cfg)
    return runs, errors


def world_size(suite_cfg: dict) -> int:
    launcher = suite_cfg.get("launcher") or {}
    if launcher.get("name") == "torchrun":
        return launcher.get("nproc_per_node", 2)
    if launcher.get("name") == "slurm":
        return launcher.get("nodes", 1) * launcher.get("tasks_per_node", 1)
    return 1


def resolve_all(suite_cfg: dict, check_data: bool = True) -> list[dict]:
    """Every run of the suite resolved, or one ConfigError listing every problem of every run.
    Runs that differ only in their seed are resolved once."""
    runs, errors = _expand(suite_cfg)
    resolved, done = [], {}
    for raw in runs:
        key = json.dumps({**raw, "seed": None}, sort_keys=True, default=str)
        if key not in done:
            try:
                done[key] = resolve_run(raw, world_size=world_size(suite_cfg), check_data=check_data)
            except ConfigError as e:
                done[key] = None
                errors.extend(e.errors)
        if done[key] is not None:
            run = {**copy.deepcopy(done[key]), "seed": raw["seed"]}
            if raw["data"]["seed"] is None:  # the data order follows the seed too
                run["data"]["seed"] = raw["seed"]
            resolved.append(run)
    if errors:
        raise ConfigError(list(dict.fromkeys(errors)))
    if suite_cfg.get("tokens_per_param"):
        steps = {r["model"]: r["steps"] for r in rungs(suite_cfg, list({c["model"]["name"]: 0 for c in resolved}), [])}
        mains, branches = ladder.with_rungs(suite_cfg, resolved, steps)
    else:
        mains, branches = with_branches(suite_cfg, resolved)
    # parents first: a branch starts from its parent's checkpoint
    return mains + branches + cosine_checks(suite_cfg, branches)


def _data_key(cfg: dict) -> tuple:
    return cfg["data"]["name"], cfg["data"].get("path"), cfg["model"]["vocab_size"], cfg["budget"]["seq_len"]


def _check_data(resolved: list[dict]) -> dict[tuple, dict]:
    """The data check that resolve_all(check_data=False) skipped, once per distinct data set;
    each one's fingerprint."""
    errors, fingerprints = [], {}
    for key in {_data_key(c) for c in resolved}:
        try:
            fingerprints[key] = open_data(*key).fingerprint
        except DataError as e:
            errors.append(f"data: {e}")
    if errors:
        raise ConfigError(errors)
    return fingerprints


def _check_resumes(todo: list[dict], fingerprints: dict[tuple, dict], device_type: str | None,
                   ws: int) -> None:
    """Each run to resume against its newest checkpoint (runners.resume: other data, or a train.*
    change that alters the numbers): every refusal at once, before any run starts. The device is
    compared only where the runs execute here (device_type None: on a cluster's nodes); each run
    checks again against the checkpoint it resumes from."""
    errors = []
    for cfg in todo:
        entries = run_folder(cfg).checkpoints()
        if not entries or "final" in entries[0]["progress"]:  # nothing to resume
            continue
        progress = entries[0]["progress"]
        ran_here = device_type or (progress.get("execution") or {}).get("device")
        try:
            resume.drift(cfg, progress, resume.execution(cfg, ran_here, ws), fingerprints[_data_key(cfg)],
                         run_id(cfg))
        except ConfigError as e:
            errors.extend(e.errors)
    if errors:
        raise ConfigError(errors)


def run_folder(cfg: dict) -> RunFolder:
    return RunFolder(Path(cfg["results_dir"]) / cfg["suite"] / run_id(cfg))


def disk_warning(suite_cfg: dict, checkpoints: list[int]) -> str | None:
    """A warning when the disk under results_dir has less free than the checkpoints of the runs to
    run need (`checkpoints`: each one's bytes): each run keeps its final checkpoint, and while it
    saves one it holds three (the new one, the newest and the one before)."""
    need = sum(checkpoints) + 2 * max(checkpoints, default=0)
    free = free_bytes(Path(suite_cfg["results_dir"]))
    if need <= free:
        return None
    return (f"warning: {planning.human_bytes(free)} free under {suite_cfg['results_dir']}, and the "
            f"checkpoints of the {len(checkpoints)} runs to run need about {planning.human_bytes(need)} "
            "(each keeps its final one; one that is saving holds three)")


def run_status(cfg: dict) -> str:
    status = run_folder(cfg).status()
    if status is None:
        return "new"
    return "finished" if status in FINISHED else "resumable"


def plan_text(suite_cfg: dict, resolved: list[dict], device: str) -> str:
    b = resolved[0]["budget"]
    ws = world_size(suite_cfg)
    rows = [("model", "optimizer", "lr", "seed", "run_id", "status", "est. time", "micro-batch",
             "peak mem/rank" if ws > 1 else "peak mem", "fits", "checkpoint")]
    total, flops, disk, to_write, found_by = 0.0, 0.0, 0, [], {}
    for cfg in resolved:
        est, status = planning.estimate(cfg, device, ws), run_status(cfg)
        if est.state_found_by:
            found_by[f"state of {cfg['optimizer']['name']}: {est.state_found_by}"] = None
        total += est.seconds
        flops += est.flops
        disk += est.checkpoint
        if status != "finished":
            to_write.append(est.checkpoint)
        rows.append((cfg["model"]["name"], cfg["optimizer"]["name"], f"{cfg['optimizer']['lr']:g}",
                     cfg["seed"], run_id(cfg), status, planning.human_seconds(est.seconds), est.micro_batch,
                     planning.human_bytes(est.peak), "yes" if est.fits else "NO",
                     planning.human_bytes(est.checkpoint)))
    head = (f"suite {suite_cfg['suite']}: {len(resolved)} runs on {device} x {ws}; budget "
            f"{b['tokens']:,} tokens = {b['steps']:,} steps of {b['global_batch']} x {b['seq_len']}, "
            f"{b['schedule']} schedule, warmup {b['warmup_steps']} steps")
    foot = (f"total: {flops:.3g} FLOPs, about {planning.human_seconds(total)} on {device}; "
            f"checkpoints: {planning.human_bytes(disk)} on disk under {suite_cfg['results_dir']}")
    warning = disk_warning(suite_cfg, to_write)
    per_rank = planning.memory_note(resolved[0], ws)
    return "\n".join([head, planning.text_table(rows), foot, *([per_rank] if per_rank else []), *found_by,
                      *([warning] if warning else [])])


def plan_device(suite_cfg: dict) -> str:
    device = suite_cfg.get("plan_device") or "auto"
    if device == "auto":
        want = suite_cfg["train"]["device"]
        return "cuda" if want != "cpu" and torch.cuda.is_available() else "cpu"
    return device


def summary_table(resolved: list[dict]) -> str:
    rows = [("run", "optimizer", "status", "final val loss", "tokens/s", "peak mem MiB", "state MiB")]
    for cfg in resolved:
        info = run_folder(cfg).record() or {}
        s = info.get("summary") or {}

        def fmt(v, f):
            return "-" if v is None else format(v, f)

        rows.append((run_id(cfg), cfg["optimizer"]["name"], info.get("status", "new"),
                     fmt(s.get("final_val_loss"), ".4f"), fmt(s.get("tokens_per_s"), ".0f"),
                     fmt(s.get("peak_mem_bytes") and s["peak_mem_bytes"] / 2**20, ".0f"),
                     fmt(s.get("opt_state_bytes") and s["opt_state_bytes"] / 2**20, ".2f")))
    return planning.text_table(rows)


def refuse_slow_cpu_start(what: str, work: str, seconds: float, device: str, force, shrink: str) -> None:
    """Work planned to take more than SLOW_SUITE_SECONDS on a machine with no GPU starts only with
    force=true: it is almost always a GPU suite started on the wrong machine."""
    if device == "cpu" and seconds > SLOW_SUITE_SECONDS and not force:
        raise ConfigError([f"{what}: no GPU is visible and {work} would take about "
                           f"{planning.human_seconds(seconds)} on this CPU: run it on a GPU machine, "
                           f"shrink it ({shrink}), or add force=true to start anyway"])


def declare(suite_cfg: dict) -> None:
    """results/<suite>/suite.json: what the suite declares of its results beyond the runs
    themselves (the baseline; a ladder's tokens per parameter, each model's parameters, the
    target to extrapolate to and how far), for the report; and lr_law.json, the lr laws the
    untuned rungs took their lrs from. The latest launch's declaration holds."""
    folder = Path(suite_cfg["results_dir"]) / suite_cfg["suite"]
    folder.mkdir(parents=True, exist_ok=True)
    listed = optimizer_arms(suite_cfg, [])
    rungs_ = rungs(suite_cfg, suite_cfg.get("models") or [suite_cfg["model"]["name"]], [])
    doc = {"baseline": suite_cfg.get("baseline"), "tokens_per_param": suite_cfg.get("tokens_per_param"),
           "target": suite_cfg.get("target"), "extrapolation_limit": suite_cfg.get("extrapolation_limit"),
           "params": {r["model"]: r["params"] for r in rungs_}}
    atomic_write(folder / "suite.json", json.dumps(doc, indent=2) + "\n")
    laws = lr_laws(suite_cfg, listed, rungs_, [])
    if laws:
        given = [{"model": r["model"], "params": r["params"], "tokens": r["tokens"], "optimizer": name,
                  "lr": law_lr(law, r)} for r in rungs_ if not r["tuned"] for name, law in laws.items()]
        atomic_write(folder / lr_law.FILE, json.dumps({"laws": {n: law.as_dict() for n, law in laws.items()},
                                                       "given": given}, indent=2) + "\n")
    else:
        (folder / lr_law.FILE).unlink(missing_ok=True)


def run_suite(overrides: list[str], multirun: bool = False, config_dir: str | None = None) -> list[dict]:
    suite_cfg = compose_config(overrides, config_dir, multirun=multirun)
    prepare_on_first_use(suite_cfg["data"].get("name", ""), suite_cfg["data"].get("path"))
    # The data is checked last: a plan, or the advice to use a GPU, needs none.
    resolved = resolve_all(suite_cfg, check_data=False)
    device = plan_device(suite_cfg)
    if suite_cfg.get("plan"):
        print(plan_text(suite_cfg, resolved, device))
        if suite_cfg.get("tokens_per_param"):
            rungs_ = rungs(suite_cfg, list({c["model"]["name"]: 0 for c in resolved}), [])
            print(ladder.plan_table(suite_cfg, resolved, {r["model"]: r["steps"] for r in rungs_},
                                    {r["model"]: r["params"] for r in rungs_}, device, world_size(suite_cfg)))
        return resolved
    if suite_cfg.get("status"):
        from runners.status import status_text

        print(status_text(suite_cfg, resolved))
        return resolved
    # A run whose run.json does not say it finished is launched, even when its final checkpoint
    # says it did: launching it only rebuilds its run.json.
    todo = [c for c in resolved if (run_folder(c).read_info() or {}).get("status") not in FINISHED]
    seconds = sum(planning.estimate(c, device, world_size(suite_cfg)).seconds for c in todo)
    if suite_cfg["launcher"]["name"] == "local":  # runs at once share the machine's cores
        seconds /= min(suite_cfg["workers"], max(len(todo), 1))
    refuse_slow_cpu_start(f"suite {suite_cfg['suite']}", f"its {len(todo)} runs", seconds, device,
                          suite_cfg.get("force"), "budget.tokens=..., only=[...]")
    fingerprints = _check_data(resolved)
    local = (suite_cfg.get("launcher") or {}).get("name", "local") == "local"
    device_type = check_device(suite_cfg["train"]["device"]).type if local else None
    _check_resumes(todo, fingerprints, device_type, world_size(suite_cfg))
    print(f"suite {suite_cfg['suite']}: {len(resolved)} runs, {len(resolved) - len(todo)} finished, "
          f"{len(todo)} to run (about {planning.human_seconds(seconds)} on {device})", flush=True)
    if warning := disk_warning(suite_cfg, [planning.estimate(c, device).checkpoint for c in todo]):
        print(warning, flush=True)
    declare(suite_cfg)
    failed = []  # the suite goes on past a failed run, and reports them all at the end
    launcher = {**suite_cfg["launcher"], **({"workers": suite_cfg["workers"]}
                                            if suite_cfg["launcher"]["name"] == "local" else {})}
    try:
        # cooldown branches once their parents have run (and kept the checkpoints they start from)
        for phase in ([c for c in todo if not c.get("branch")], [c for c in todo if c.get("branch")]):
            try:
                if phase:
                    launch(phase, launcher)
            except LaunchFailed as e:
                failed.append(str(e))
    finally:
        print(summary_table(resolved))
    if suite_cfg.get("report", True):
        from analysis.report import main as report

        if report([str(Path(suite_cfg["results_dir"]) / suite_cfg["suite"])]) != 0:
            failed.append("the report could not be written (the error above says why)")
    if failed:
        raise LaunchFailed("\n".join(failed))
    return resolved


ENTRY = run_suite

if __name__ == "__main__":
    from runners.cli import main

    main(run_suite, "suite")
