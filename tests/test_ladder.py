"""Ladders (runners/ladder.py, runners/lr_law.py): model sizes x budgets in tokens per parameter,
one wsd main run per (model, optimizer, seed) and cooldown branches at the smaller budgets; lrs
tuned on some rungs and the lr law's on the others; a real ladder of three small models runs and
its report shows where each lr came from and what tuning it cost."""

import json
import math

import numpy as np
import pytest
import yaml

from models import PRESETS, GPT
from runners import lr_law
from runners.config import ConfigError, run_id
from runners.hydra_app import compose_config
from runners.schedule import cooldown_start
from runners.suite import resolve_all, rungs, run_suite

MODELS = ["nano_xxs", "nano_xs", "nano_s"]
# 4 x 32 = 128 tokens a step: nano_xxs's 25,056 parameters at 0.1 tokens each are 20 steps
TPP = (0.05, 0.1)
LADDER = [f"models=[{','.join(MODELS)}]", "model=nano_xxs", f"tokens_per_param=[{TPP[0]},{TPP[1]}]",
          "budget.tokens=null", "budget.steps=null", "budget.schedule=wsd", "budget.seq_len=32",
          "budget.global_batch=4", "budget.warmup=0.1", "budget.eval_every=10", "data.val_tokens=1024",
          "data.test_tokens=1024", "train.progress=false", "seeds=[0]", "workers=1", "baseline=adamw"]


def _params(model: str) -> int:
    return GPT(PRESETS[model]).num_params()  # built for real, not on the meta device


def test_a_ladder_is_one_main_run_per_model_and_optimizer_and_branches_at_the_smaller_budgets(tmp_path):
    cfg = compose_config([*LADDER, f"results_dir={tmp_path}", "optimizers={adamw: {lr: 1e-3}, lamb: {lr: 2e-3}}"])
    runs = resolve_all(cfg, check_data=False)
    mains, branches = [r for r in runs if not r.get("branch")], [r for r in runs if r.get("branch")]
    assert len(mains) == len(branches) == 3 * 2
    for model in MODELS:
        steps = {tpp: round(tpp * _params(model) / 128) for tpp in TPP}
        for main in (m for m in mains if m["model"]["name"] == model):
            assert main["model"] == {"name": model, **PRESETS[model].__dict__}  # the preset's own shape
            assert main["budget"]["steps"] == steps[TPP[1]] and main["budget"]["tokens"] == steps[TPP[1]] * 128
            assert main["train"]["keep_ckpt_at"] == [cooldown_start(steps[TPP[0]], 0.2)]
            [branch] = [b for b in branches if b["branch"]["parent"] == run_id(main)]
            assert branch["budget"]["steps"] == steps[TPP[0]] and branch["optimizer"] == main["optimizer"]
            assert branch["branch"]["from_step"] == cooldown_start(steps[TPP[0]], 0.2)
            assert branch["budget"]["warmup_steps"] == main["budget"]["warmup_steps"]


@pytest.mark.parametrize("overrides,needles", [
    (["budget.schedule=cosine", "branches=[0.5]", "budget.steps=100"], [
        "tokens_per_param: budget.schedule=cosine: a ladder reads its budgets off the cooldown branches of one "
        "warmup-stable-decay run: set budget.schedule=wsd",
        "tokens_per_param and branches=[0.5]: a ladder makes its own branches",
        "tokens_per_param and budget.steps=100: a ladder's budgets are tokens_per_param x each model's parameters: "
        "set budget.steps=null"]),
    (["tokens_per_param=[0.2,0.201]"], ["tokens_per_param: 0.2 and 0.201 are both 39 steps for nano_xxs"]),
    (["tokens_per_param=[0.02,0.2]", "budget.warmup=10"], [
        "tokens_per_param=0.02: 4 steps for nano_xxs, whose cooldown would start at step 3, inside the main run's "
        "warmup"]),
    (["tokens_per_param=[0,1]", "target={params: 1e9, model: gpt2_xl, tokens: 1e10, device: h100}",
      "extrapolation_limit=0.5"], ["tokens_per_param=[0, 1]: give distinct positive numbers", "give one of params",
                                   "extrapolation_limit=0.5: give a factor >= 1"]),
    (["tune.models=[nano_m]", "tokens_per_param=[0.001,0.2]"], [
        "tune.models: nano_m is not among the suite's models",
        "tokens_per_param=0.001: nano_xxs's 25,056 parameters x 0.001 = 25 tokens, under one step of 4 x 32 tokens"]),
])
def test_what_a_ladder_cannot_do_is_refused_naming_the_key_and_the_fix(overrides, needles, tmp_path):
    with pytest.raises(ConfigError) as e:
        resolve_all(compose_config([*LADDER, f"results_dir={tmp_path}", "optimizers={adamw: {lr: 1e-3}}",
                                    *overrides]), check_data=False)
    for needle in needles:
        assert any(needle in line for line in e.value.errors), (needle, e.value.errors)


def test_the_lr_law_is_recovered_from_rungs_drawn_from_it():
    rng = np.random.default_rng(0)
    n, d = rng.uniform(1e5, 1e9, 8), rng.uniform(1e7, 1e11, 8)  # N and D varied apart: the full law
    lrs = 0.3 * n ** -0.35 * d ** 0.1
    law = lr_law.fit("adamw", [{"model": f"m{i}", "params": a, "tokens": b, "lr": c}
                               for i, (a, b, c) in enumerate(zip(n, d, lrs))])
    assert law.form == "A * N^a * D^b" and math.isclose(math.exp(law.log_a), 0.3, rel_tol=1e-6)
    assert law.exponents == pytest.approx({"N": -0.35, "D": 0.1}, abs=1e-9)
    # D = 20 N at every rung, as in a ladder: N^a D^b = 20^b N^(a + b), fitted in N alone
    noisy = 0.3 * n ** -0.35 * (20 * n) ** 0.1 * np.exp(rng.normal(0, 0.05, 8))
    law = lr_law.fit("adamw", [{"model": f"m{i}", "params": a, "tokens": 20 * a, "lr": c}
                               for i, (a, c) in enumerate(zip(n, noisy))])
    assert law.form == "A * N^a" and law.exponents["N"] == pytest.approx(-0.25, abs=0.03)
    assert law.lr(1e7, 2e8) == pytest.approx(0.3 * 1e7 ** -0.35 * 2e8 ** 0.1, rel=0.1)
    assert [p["residual"] for p in law.as_dict()["points"]] == pytest.approx(
        list(np.log(noisy) - np.log([p["fitted"] for p in law.points])))
    with pytest.raises(lr_law.LawError, match="two sizes or more"):
        lr_law.fit("adamw", [{"model": "m", "params": 1e6, "tokens": t, "lr": 1e-3} for t in (1e7, 2e7)])


def _tuned_from_law(cfg: dict, models: list[str], law) -> dict:
    """A tuned.yaml whose lrs lie on `law(N, D)` at each model's main-run budget."""
    out = {}
    for r in rungs(cfg, models, []):
        lr = float(f"{law(r['params'], r['tokens']):.3g}")
        out[r["model"]] = {str(r["tokens"]): {name: {"lr": lr, "trials": 4, "tokens": 4 * r["tokens"],
                                                     "device_seconds": 12.5, "schedule": "wsd"}
                                              for name in ("adamw", "adam_mini")}}
    return out


def known_law(n: float, d: float) -> float:  # the law the synthetic tuning follows
    return 4.0 * n ** -0.5


@pytest.fixture(scope="module")
def real_ladder(tmp_path_factory, shakespeare_bytes):
    """The three small models, adamw and adam_mini: the two smaller tuned (a tuned.yaml drawn
    from `known_law`), nano_s from the lr law; run and reported."""
    results = tmp_path_factory.mktemp("ladder")
    args = [*LADDER, f"results_dir={results}", "optimizers={adamw: {lr: tuned}, adam_mini: {lr: tuned}}",
            "tune.models=[nano_xxs,nano_xs]", "target={model: gpt2_small, tokens: 2.5e9, device: h100}"]
    cfg = compose_config(args)
    (results / "adhoc").mkdir()
    (results / "adhoc" / "tuned.yaml").write_text(yaml.safe_dump(_tuned_from_law(cfg, MODELS[:2], known_law)))
    return results / "adhoc", run_suite(args), rungs(cfg, MODELS, [])


def test_an_untuned_rung_takes_the_laws_lr_and_the_suite_writes_the_law(real_ladder):
    folder, runs, rungs_ = real_ladder
    s = rungs_[2]
    # tuned lrs are rounded to 3 digits, so the law through them is the known one only nearly
    fitted = json.loads((folder / "lr_law.json").read_text())
    assert fitted["laws"]["adamw"]["exponents"]["N"] == pytest.approx(-0.5, abs=0.01)
    assert [g["lr"] for g in fitted["given"] if g["optimizer"] == "adamw"] == [
        pytest.approx(known_law(s["params"], s["tokens"]), rel=0.01)]
    assert {r["optimizer"]["lr"] for r in runs if r["model"]["name"] == "nano_s"} == {fitted["given"][0]["lr"]}
    declared = json.loads((folder / "suite.json").read_text())
    assert declared == {"baseline": {"optimizer": "adamw"}, "tokens_per_param": list(TPP),
                        "target": {"model": "gpt2_small", "params": 124475904, "tokens": 2.5e9, "device": "h100",
                                   "world_size": 1},
                        "extrapolation_limit": 1000, "params": {m: _params(m) for m in MODELS}}


def test_the_report_labels_the_laws_lr_and_shows_each_rungs_tuning_cost(real_ladder):
    from analysis.compare import compare

    folder, runs, _ = real_ladder
    assert all(json.loads((folder / run_id(r) / "run.json").read_text())["status"] == "completed" for r in runs)
    arms = {(c.tokens, a.model, a.optimizer): a for c in compare(folder) for a in c.arms.itertuples()}
    main = {r["model"]["name"]: r["budget"]["tokens"] for r in runs if not r.get("branch")}
    for (tokens, model, _), a in arms.items():
        kind = "tuned" if model != "nano_s" else "lr law"
        assert a.lr_source.startswith(kind + ("" if tokens == main[model] else f" at its main run's {main[model]:,}"))
        cost = (4, 4 * tokens, 12.5) if kind == "tuned" and tokens == main[model] else (math.nan,) * 3
        assert (a.tuning_trials, a.tuning_tokens, a.tuning_device_s) == pytest.approx(cost, nan_ok=True)
    assert "A * N^a over 2 tuned rungs" in arms[(main["nano_s"], "nano_s", "adamw")].lr_source
    md = (folder / "report.md").read_text()
    assert "lr law of adamw: lr = A * N^a" in md and "| nano_s |" in md and "from the law" in md
    assert "The lr of each rung" in md and (folder / "report.html").stat().st_size > 0
