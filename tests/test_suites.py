"""Suites: expansion at equal budgets, validation of every field, planning, idempotent launches."""

import json
import signal
import subprocess
import sys
import time

import pytest

from analysis.compare import compare

from runners.config import ConfigError, run_id
from runners.hydra_app import compose_config
from runners.suite import expand, resolve_all, run_folder, run_status, run_suite
from tests.conftest import REPO, SMALL_RUN, TINY


def suite(tmp_path, *overrides):
    return compose_config([*TINY, *SMALL_RUN, f"results_dir={tmp_path}", *overrides])


def test_expansion_is_models_x_optimizers_x_lrs_x_seeds_at_one_budget(tmp_path):
    cfg = suite(tmp_path, "optimizers={adamw:{lr:[1e-3,3e-3]},adam_mini:{}}", "seeds=2",
                "optimizer_defaults={weight_decay:0.05}")
    runs = resolve_all(cfg)
    assert [(r["optimizer"]["name"], r["optimizer"]["lr"], r["seed"]) for r in runs] == [
        ("adamw", 1e-3, 0), ("adamw", 1e-3, 1), ("adamw", 3e-3, 0), ("adamw", 3e-3, 1),
        ("adam_mini", 1e-3, 0), ("adam_mini", 1e-3, 1)]
    assert all(r["optimizer"]["weight_decay"] == 0.05 for r in runs)
    # Equal budgets: everything but the optimizer and the seed is the same for every run.
    for key in ("model", "data", "budget"):
        same = [{**r[key], "seed": None} if key == "data" else r[key] for r in runs]
        assert all(x == same[0] for x in same)
    assert [r["data"]["seed"] for r in runs] == [r["seed"] for r in runs]  # seed s: data order s too


def test_only_and_seed_count_overrides(tmp_path):
    runs = expand(suite(tmp_path, "only=[adamw,adam_mini]", "seeds=3"))
    assert sorted({r["optimizer"]["name"] for r in runs}) == ["adam_mini", "adamw"]
    assert sorted(r["seed"] for r in runs if r["optimizer"]["name"] == "adamw") == [0, 1, 2]


def test_ademamix_warmups_are_derived_from_the_budget(tmp_path):
    run = resolve_all(suite(tmp_path, "only=[ademamix]", "budget.steps=30"))[0]
    assert run["optimizer"]["alpha_warmup"] == run["optimizer"]["beta3_warmup"] == 30


def test_lr_tuned_reads_tuned_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"optimizers.adamw.lr=tuned: .*tuned.yaml has no lr .*make tune"):
        expand(suite(tmp_path, "optimizers={adamw:{lr:tuned}}"))
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "tuned.yaml").write_text("nano:\n  '7680':\n    adamw: {lr: 0.0042}\n")
    assert expand(suite(tmp_path, "optimizers={adamw:{lr:tuned}}"))[0]["optimizer"]["lr"] == 0.0042


# Each malformed suite is rejected with a message naming the field.
MALFORMED = [
    (["model=gpt5"], "unknown model 'gpt5'"),
    (["models=[gpt2_small,gpt9]"], "unknown model 'gpt9'"),
    (["optimizers=[adamw,adamx]"], "optimizers.adamx: unknown optimizer 'adamx'"),
    (["optimizers=3"], "optimizers=3: give a list of names"),
    (["data.name=tinystories"], "unknown data set 'tinystories'"),
    (["budget.tokens=4096", "budget.steps=30"], "budget: tokens=4096 and steps=30 are both set"),
    (["budget.steps=null"], "budget: set budget.tokens or budget.steps"),
    (["optimizers={adamw:{lr:null}}"], "optimizers.adamw.lr=None: give a number"),
    (["optimizers={adamw:{lr:[1e-3,fast]}}"], "optimizers.adamw.lr=[0.001, 'fast']"),
    (["optimizers={adamw:{lr:-1.0}}"], "optimizer 'adamw': lr=-1.0 is outside"),
    (["budget.global_batch=10", "train.micro_batch=4"], "budget.global_batch=10 is not divisible"),
    (["seeds=abc"], "seeds='abc': give a list of integers"),
    (["seeds=[0,0]"], "seeds=[0, 0]: a seed is listed twice"),
    (["seeds=[-1]"], "every seed must be an integer >= 0"),
    (["budget.steps=-3"], "budget.steps=-3: must be an integer >= 1"),
    (["budget.warmup=40"], "budget.warmup=40 steps is not shorter than the run"),
    (["budget.warmup=1.5"], "budget.warmup=1.5: must be steps (an integer >= 0) or a fraction in [0, 1)"),
    (["budget.schedule=linear"], "budget.schedule='linear': choose one of cosine, constant, wsd"),
    (["budget.min_lr_ratio=2"], "budget.min_lr_ratio=2: must be a number in [0, 1]"),
    (["budget.seq_len=64"], "budget.seq_len=64 exceeds the model's block_size=32"),
    (["data.val_tokens=0"], "data.val_tokens=0: must be an integer >= 1"),
    (["optimizers={adamw:{momentum:0.9}}"], "unknown key optimizer.momentum: adamw has lr, betas"),
    (["optimizers={adam_mini:{betas:[0.9,1.5]}}"], "optimizer 'adam_mini': betas[1]=1.5"),
    (["only=adamw"], "only='adamw': give a list of optimizer names"),
    (["launcher.name=kubernetes"], "launcher="),
    (["train.parallel=tensor"], "train.parallel='tensor': choose one of ddp, fsdp"),
    (["budget.grad_clip=-1"], "budget.grad_clip=-1: must be a number > 0, or null for no clipping"),
]


@pytest.mark.parametrize("overrides,message", MALFORMED, ids=[m[1][:40] for m in MALFORMED])
def test_malformed_suite_is_rejected_naming_the_field(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as err:
        run_suite([*TINY, *SMALL_RUN, f"results_dir={tmp_path}", "report=false", *overrides])
    assert any(message in line for line in err.value.errors), err.value.errors
    assert not any(tmp_path.iterdir()), "nothing may be written for an invalid suite"


def test_every_error_of_a_suite_is_reported_at_once(tmp_path):
    # First every key and value (the schema), then every run of a suite whose values are valid.
    with pytest.raises(ConfigError) as err:
        run_suite([*TINY, *SMALL_RUN, f"results_dir={tmp_path}", "budget.steps=-3",
                   "budget.schedule=linear", "train.log_every=0"])
    assert len(err.value.errors) == 3, err.value.errors
    with pytest.raises(ConfigError) as err:
        run_suite([*TINY, *SMALL_RUN, f"results_dir={tmp_path}", "seeds=[0,0]",
                   "optimizers=[adamw,adamx]", "models=[nano,gpt9]", "budget.warmup=40"])
    assert len(err.value.errors) == 4, err.value.errors


def test_plan_runs_nothing_and_flags_what_does_not_fit(tmp_path, capsys):
    run_suite(["suite=gpt2_xl", f"results_dir={tmp_path}", "plan=true", "plan_device=rtx4090"])
    out = capsys.readouterr().out
    assert "24,576,000,000 tokens = 50,000 steps of 480 x 1024" in out
    assert out.count(" NO") == 7 and "gpt2_xl-adam_mini-lr0.0001-s0-" in out
    assert "checkpoints: 104.5 GiB on disk" in out  # weights + state, 17.4 GiB with AdamW's
    assert not any(tmp_path.iterdir())
    run_suite(["suite=gpt2_small", f"results_dir={tmp_path}", "plan=true", "plan_device=h100"])
    assert capsys.readouterr().out.count(" yes") == 7


def test_gpt2_small_without_a_gpu_does_not_start(tmp_path):
    with pytest.raises(ConfigError, match=r"no GPU is visible .* would take about .* force=true"):
        run_suite(["suite=gpt2_small", f"results_dir={tmp_path}"])
    assert not any(tmp_path.iterdir())


def test_plan_memory_prediction_against_measurement(tmp_path):
    """CPU: predicted weights + grads + state + activations vs the peak RSS a run adds, and the
    predicted checkpoint size vs the file."""
    script = f"""
import json, sys
sys.path.insert(0, {str(REPO)!r})
from runners.hydra_app import compose_config
from runners.config import resolve_run
from runners import plan, train
cfg = resolve_run(compose_config(["model=nano", "model.n_layer=4", "model.n_embd=256",
    "model.vocab_size=50304", "budget.seq_len=128", "budget.global_batch=8", "budget.tokens=null",
    "budget.steps=3", "data.val_tokens=4096", "train.progress=false", "results_dir={tmp_path}",
    "data=shakespeare_gpt2", "model.block_size=128"]))
est = plan.estimate(cfg, "cpu")
import psutil
before = psutil.Process().memory_info().rss  # what the process holds before the run starts
info = train.run(cfg)
after = info["summary"]["peak_mem_bytes"]  # the run's own peak RSS
from runners.checkpoint import STATE_FILE
from runners.suite import run_folder
ckpt = (run_folder(cfg).ckpt_dir / STATE_FILE).stat().st_size
print(json.dumps({{"predicted": est.peak, "measured": after - before, "status": info["status"],
                  "ckpt_predicted": est.checkpoint, "ckpt": ckpt}}))
"""
    from runners.data import prepare
    prepare("shakespeare_gpt2")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = figures["measured"] / figures["predicted"]
    print("measured / predicted peak:", ratio, figures)
    assert 0.7 < ratio < 1.5, figures
    assert 0.99 < figures["ckpt"] / figures["ckpt_predicted"] < 1.02, figures  # the plan's disk column


def test_launching_twice_runs_each_run_once(tmp_path):
    args = [*TINY, *SMALL_RUN, f"results_dir={tmp_path}", "only=[adamw,adam_mini]",
            "budget.steps=10", "baseline={optimizer:adam_mini,lr:default}"]
    runs = run_suite(args)
    assert (tmp_path / "tiny" / "report.html").exists()  # a suite ends with its report
    # the report compares with the suite's declared baseline, not adamw
    assert compare(tmp_path / "tiny")[0].baseline == {"nano": "adam_mini lr=0.001"}
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("run.json")}
    assert len(stamps) == 2 and all(run_status(r) == "finished" for r in runs)
    run_suite([*args, "report=false"])
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("run.json")} == stamps


def _second_run_past_step(results, step: int) -> bool:
    states = {}
    for info_file in results.rglob("run.json"):
        info = json.loads(info_file.read_text())
        metrics = info_file.parent / "metrics.jsonl"
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        try:
            states[info["status"]] = json.loads(lines[-1])["step"] if lines else 0
        except json.JSONDecodeError:  # a row being written
            states[info["status"]] = 0
    return len(states) == 2 and states.get("completed") is not None and states.get("running", 0) >= step


def test_killing_a_suite_midway_then_relaunching_finishes_the_rest(tmp_path):
    args = [*TINY, *SMALL_RUN, f"results_dir={tmp_path}", "only=[adamw,adam_mini,sm3]",
            "budget.steps=60", "train.ckpt_every=5", "report=false"]
    proc = subprocess.Popen([sys.executable, "-m", "runners.suite", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while time.time() < deadline:  # kill it during the second run, past its first checkpoint
        if _second_run_past_step(tmp_path, 12):
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the suite never reached step 12 of its second run")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = next(p for p in tmp_path.rglob("run.json") if json.loads(p.read_text())["status"] == "completed")
    first_stamp = first.stat().st_mtime_ns
    runs = run_suite(args)
    assert all(run_status(r) == "finished" for r in runs) and len(runs) == 3
    assert first.stat().st_mtime_ns == first_stamp  # the finished run was not redone
    for metrics in tmp_path.rglob("metrics.jsonl"):
        steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
        assert steps == list(range(61))  # resumed without duplicated rows


def test_local_workers_give_the_same_runs_as_one_process(tmp_path, shakespeare_bytes):
    args = [*TINY, "only=[adamw,sm3,lamb]", *SMALL_RUN, "budget.steps=8", "budget.eval_every=4",
            "report=false"]
    one = run_suite([*args, f"results_dir={tmp_path / 'one'}"])
    two = run_suite([*args, f"results_dir={tmp_path / 'two'}", "workers=2"])
    for a, b in zip(one, two):
        rows = [(run_folder(c).path / "metrics.jsonl").read_text().splitlines() for c in (a, b)]
        strip = [[{k: v for k, v in json.loads(r).items() if not k.startswith(("time_", "tokens_per_s",
                   "wall_time", "peak_mem"))} for r in side] for side in rows]
        assert strip[0] == strip[1] and len(strip[0]) == 9, run_id(a)


def test_plan_warns_when_the_disk_cannot_hold_the_checkpoints(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("runners.suite.free_bytes", lambda path: 50 * 2**30)
    run_suite(["suite=gpt2_xl", f"results_dir={tmp_path}", "plan=true", "plan_device=h100"])
    # 104.5 GiB of final checkpoints, plus two of the largest (ademamix's 23.2 GiB) while it saves
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"warning: 50.0 GiB free under {tmp_path}, and the checkpoints of the 7 runs to run need about "
        "150.9 GiB (each keeps its final one; one that is saving holds three)")
    monkeypatch.setattr("runners.suite.free_bytes", lambda path: 200 * 2**30)
    run_suite(["suite=gpt2_xl", f"results_dir={tmp_path}", "plan=true", "plan_device=h100"])
    assert "warning:" not in capsys.readouterr().out
