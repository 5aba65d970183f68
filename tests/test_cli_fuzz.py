"""Bad command lines and bad suite files: each is one `error:` line naming the key, exit status 2,
no traceback, and nothing written (no run folder, no results folder, no tuning database, no
outputs/). In-process through runners.cli.main, the code path of the three entry points, plus a
few through real interpreters."""

import subprocess
import sys

import pytest

from runners import cli, suite, train, tune
from tests.conftest import REPO, SMALL_RUN, TINY

ENTRIES = {"train": train.main, "suite": suite.run_suite, "tune": tune.tune}

# (entry, override, what the error line must name)
OVERRIDES = [
    ("train", "budgt.tokens=2e4", "unknown key budgt.tokens: did you mean budget.tokens?"),
    ("train", "train.micro_bach=4", "unknown key train.micro_bach: did you mean train.micro_batch?"),
    ("train", "budget.tokenz=5", "did you mean budget.tokens?"),
    ("train", "train.log_every=0", "train.log_every=0"),
    ("train", "train.log_every=abc", "train.log_every='abc'"),
    ("train", "train.ckpt_every=0", "train.ckpt_every=0"),
    ("train", "train.ckpt_every=-1", "train.ckpt_every=-1"),
    ("train", "budget.grad_clip=nan", "budget.grad_clip=nan"),
    ("train", "budget.grad_clip=-1", "budget.grad_clip=-1"),
    ("train", "budget.diverge_factor=-1", "budget.diverge_factor=-1"),
    ("train", "budget.diverge_factor=abc", "budget.diverge_factor='abc'"),
    ("train", "budget.tokens=nan", "budget.tokens=nan"),
    ("train", "budget.tokens=inf", "budget.tokens=inf"),
    ("train", "budget.steps=2.5", "budget.steps=2.5"),
    ("train", "budget.steps=-5", "budget.steps=-5"),
    ("train", "budget.warmup=1.5", "budget.warmup=1.5"),
    ("train", "budget.warmup=500", "budget.warmup=500 steps is not shorter"),
    ("train", "budget.schedule=linear", "budget.schedule='linear'"),
    ("train", "budget.min_lr_ratio=2", "budget.min_lr_ratio=2"),
    ("train", "budget.seq_len=64", "budget.seq_len=64 exceeds the model's block_size=32"),
    ("train", "budget.global_batch=10 train.micro_batch=4", "budget.global_batch=10 is not divisible"),
    ("train", "train.device=tpu", "train.device='tpu'"),
    ("train", "train.device=cuda:1", "train.device=cuda:1"),
    ("train", "train.dtype=float8", "train.dtype='float8'"),
    ("train", "train.wandb=true", "train.wandb=true"),
    ("train", "train.wandb.mode=cloud", "train.wandb.mode='cloud'"),
    ("train", "train.parallel=zero3", "train.parallel='zero3'"),
    ("train", "train.compile=maybe", "train.compile='maybe'"),
    ("train", "model.n_layer=0", "model.n_layer=0"),
    ("train", "model.n_embd=-8", "model.n_embd=-8"),
    ("train", "model.n_embd=65", "model.n_embd=65 is not a multiple of model.n_head"),
    ("train", "model.dropout=1.5", "model.dropout=1.5"),
    ("train", "model=gpt5", "unknown model 'gpt5'"),
    ("train", "optimizer.betas=[0.9]", "optimizer.betas=[0.9]"),
    ("train", "optimizer.lr=[]", "optimizer.lr=[]"),
    ("train", "optimizer.lr=１e-3", "optimizer.lr=１e-3"),
    ("train", "optimizer.lr=-0.1", "lr=-0.1 is outside"),
    ("train", "optimizer.momentum=0.9", "unknown key optimizer.momentum"),
    ("train", "optimizer.name=adamx", "unknown optimizer 'adamx'"),
    ("train", "optimizer=lamb2", "unknown optimizer 'lamb2'"),
    ("train", "optimizer.lr=1e-3,3e-3", "optimizer.lr=1e-3,3e-3: a sweep; add -m"),
    ("train", "optimizer._target_=nopkg.Lion optimizer.lr=1e-3", "optimizer._target_=nopkg.Lion: cannot import nopkg"),
    ("train", "optimizer._target_=torch.optim.AdamW", "optimizer.lr: missing: give the peak lr"),
    ("train", "optimizer._target_=torch.optim.AdamW optimizer.lr=1e-3 optimizer.name=adamw",
     "optimizer.name='adamw': the name of a registered optimizer; name yours another way (optimizer.name=my_adamw)"),
    ("train", "data.val_tokens=20", "data.val_tokens=20 gives no full validation window"),
    ("train", "data.val_tokens=0", "data.val_tokens=0"),
    ("train", "data.seed=-1", "data.seed=-1"),
    ("train", "data.name=tinystories", "unknown data set 'tinystories'"),
    ("train", "results_dir=/dev/null/x", "results_dir='/dev/null/x'"),
    ("train", "seed=-3", "seed=-3"),
    ("train", "suite=a/b", "unknown suite 'a/b'"),
    ("train", "+suite=x", "suite"),
    ("train", "plan_device=tpu", "plan_device='tpu'"),
    ("train", "optimizers=[adamw,lamb]", "optimizers=[adamw, lamb]: a suite key"),
    ("train", "launcher=torchrun", "launcher=torchrun: runners.train runs in this process"),
    ("train", "a=[1,2", "a=[1,2: cannot be read"),
    ("train", "optimizer_defaults=[1,2]", "optimizer_defaults=[1,2]"),
    ("suite", "seeds=100000", "seeds=100000"),
    ("suite", "seeds=0", "seeds=0"),
    ("suite", "cosine_check=true", "cosine_check=true: there are no cooldown branches to check"),
    ("suite", "cosine_check=maybe", "cosine_check='maybe'"),
    ("suite", "seeds=[0,0]", "seeds=[0, 0]"),
    ("suite", "only=adamw", "only='adamw'"),
    ("suite", "only=[adamx]", "optimizers.adamx"),
    ("suite", "models=[gpt5]", "unknown model 'gpt5'"),
    ("suite", "optimizer.lr=3e-4", "optimizer.lr=3e-4: suite tiny lists its optimizers"),
    ("suite", "force=yes", "force='yes'"),
    ("suite", "optimizers=[adam_mini,lamb] baseline=adamw", "baseline=adamw: not among the suite's optimizers (adam_mini, lamb)"),
    ("suite", "baseline={optimizer:adamw,lr:best}", "lr: best}: lr='best': choose one of default, shared, grid, tuned"),
    ("suite", "baseline=[adamw]", "baseline=[adamw]: give an optimizer's name"),
    ("suite", "baseline=17", "baseline=17: give an optimizer's name"),
    ("suite", "launcher=torchrun launcher.nproc_per_node=0", "launcher.nproc_per_node=0"),
    ("suite", "launcher=slurm launcher.nodes=0", "launcher.nodes=0"),
    ("suite", "launcher=slurm launcher.mem_gb=-1", "launcher.mem_gb=-1"),
    ("suite", "launcher=nomad", "unknown launcher 'nomad'"),
    ("suite", "-m budget.tokens=1e5,2e5", "-m budget.tokens=...: only optimizer, optimizer.lr, model, seed"),
    ("suite", "tokens_per_param=[1,2]", "tokens_per_param and budget.steps=30: a ladder's budgets are"),
    ("suite", "budget.steps=null tokens_per_param=[1e-9,1]", "tokens_per_param=1e-09: nano's"),
    ("suite", "tokens_per_param=[1,1]", "tokens_per_param=[1, 1]: give distinct positive numbers"),
    ("suite", "target={params:1e9,tokens:1e10,device:tpu}", "device='tpu': choose one of h200"),
    ("suite", "target={model:gpt5,tokens:1e10,device:h100}", "model='gpt5': choose one of"),
    ("suite", "extrapolation_limit=0", "extrapolation_limit=0: give a factor >= 1"),
    ("suite", "tune.models=[gpt5]", "tune.models: gpt5 is not among the suite's models (nano)"),
    ("tune", "tune.models=[gpt5]", "tune.models: gpt5 is not among the suite's models (nano)"),
    ("tune", "tune.trials=0", "tune.trials=0"),
    ("tune", "tune.sampler=random", "tune.sampler='random'"),
    ("tune", "tune.bogus=1", "unknown key tune.bogus"),
    ("tune", "tune.lr_range=[1e-2,1e-3]", "tune.lr_range=[0.01, 0.001]"),
    ("tune", "tune.storage=redis", "tune.storage='redis'"),
    ("tune", "tune.budget_fraction=0", "tune.budget_fraction=0"),
    ("tune", "tune.pruner=hyperband", "tune.pruner=hyperband with budget.schedule=wsd"),
    ("tune", "-m optimizer.lr=1e-3,1e-2", "tuning searches the lr itself"),
]

# (file name, text of suites/suite/<name>.yaml in a user's folder, what the error must name)
SUITE_FILES = [
    ("badyaml", "a: [1\n", "badyaml.yaml, line 2, column 1: invalid YAML"),
    ("empty", "", "suite/empty.yaml: not a suite file"),
    ("bare", "hello\n", "suite/bare.yaml: not a suite file"),
    ("nopackage", "optimizers: all\n", "suite/nopackage.yaml: not a suite file"),
    ("alist", "- 1\n- 2\n", "suite/alist.yaml: not a suite file"),
    ("defaults_list", "# @package _global_\noptimizer_defaults: [1, 2]\n",
     "suite/defaults_list.yaml: optimizer_defaults: [1, 2] must be a mapping"),
    ("topkey", "# @package _global_\nsedes: 3\n", "unknown key sedes: did you mean seeds?"),
    ("budgetkey", "# @package _global_\nbudget:\n  tokenz: 5\n", "unknown key budget.tokenz"),
    ("arm", "# @package _global_\noptimizers: {adamw: 3}\n", "optimizers.adamw=3"),
    ("armname", "# @package _global_\noptimizers: {adamx: {}}\n", "optimizers.adamx"),
    ("armlr", "# @package _global_\noptimizers: {adamw: {lr: abc}}\n", "optimizers.adamw.lr='abc'"),
    ("armoption", "# @package _global_\noptimizers: {adamw: {momentum: 0.9}}\n", "unknown key optimizer.momentum"),
    ("seeds", "# @package _global_\nseeds: [0, 0]\n", "seeds=[0, 0]"),
    ("seedcount", "# @package _global_\nseeds: three\n", "seeds='three'"),
    ("models", "# @package _global_\nmodels: [gpt5]\n", "unknown model 'gpt5'"),
    ("defaultsmodel", "# @package _global_\ndefaults:\n  - override /model: gpt5\n", "unknown model 'gpt5'"),
    ("warmup", "# @package _global_\nbudget:\n  warmup: 1.5\n", "budget.warmup=1.5"),
    ("tune", "# @package _global_\ntune:\n  trials: 0\n", "tune.trials=0"),
    ("only", "# @package _global_\nonly: adamw\n", "only='adamw'"),
    ("trainkey", "# @package _global_\ntrain:\n  devise: cpu\n", "unknown key train.devise: did you mean train.device?"),
    ("tunedmissing", "# @package _global_\noptimizers: {adamw: {lr: tuned}}\n", "optimizers.adamw.lr=tuned"),
    # optimizers named by import path (optimizers/from_config.py)
    ("targetimport", "# @package _global_\noptimizers: {my_lion: {_target_: nopkg.optim.Lion, lr: 1e-3}}\n",
     "optimizers.my_lion._target_=nopkg.optim.Lion: cannot import nopkg: no module named 'nopkg'; put the folder"),
    ("targetattr", "# @package _global_\noptimizers: {my_adamw: {_target_: torch.optim.AdamX, lr: 1e-3}}\n",
     "optimizers.my_adamw._target_=torch.optim.AdamX: cannot import torch.optim.AdamX: torch.optim has no AdamX "
     "(did you mean torch.optim.Adam?)"),
    ("targetpath", "# @package _global_\noptimizers: {my_adamw: {_target_: AdamW, lr: 1e-3}}\n",
     "optimizers.my_adamw._target_=AdamW: give the import path of a class or function, package.module.Name"),
    ("targetrule", "# @package _global_\noptimizers: {my_adamw: {_target_: torch.optim.AdamW, lr: 1e-3, "
     "param_groups: decy}}\n", "optimizers.my_adamw.param_groups=decy: choose one of decay, no_decay, muon_style, "
     "or {_target_: pkg.fn} for fn(model) -> param groups (did you mean decay?)"),
    ("targetadamw", "# @package _global_\noptimizers: {my_muon: {_target_: torch.optim.Muon, lr: 0.02, "
     "param_groups: {rule: muon_style, adamw: {lrr: 1e-3}}}}\n",
     "optimizers.my_muon.param_groups={\"rule\": \"muon_style\", \"adamw\": {\"lrr\": 0.001}}: muon_style takes "
     "{adamw: {lr, betas, eps, weight_decay}}, not lrr"),
    ("targetgroupfn", "# @package _global_\noptimizers: {my_adamw: {_target_: torch.optim.AdamW, lr: 1e-3, "
     "param_groups: {_target_: nopkg.groups}}}\n", "optimizers.my_adamw.param_groups._target_=nopkg.groups: cannot import"),
    ("targetlr", "# @package _global_\noptimizers: {my_adamw: {_target_: torch.optim.AdamW}}\n",
     "optimizers.my_adamw.lr: missing: give the peak lr"),
    ("targetrange", "# @package _global_\noptimizers: {my_adamw: {_target_: torch.optim.AdamW, lr: 1e-3, "
     "lr_range: [1e-2, 1e-3]}}\n", "optimizers.my_adamw.lr_range=[0.01, 0.001]: give [lo, hi] with 0 < lo < hi"),
    ("targettuned", "# @package _global_\noptimizers: {my_adamw: {_target_: torch.optim.AdamW, lr: tuned}}\n",
     "optimizers.my_adamw.lr_range: missing: its lr is tuned"),
    ("targetname", "# @package _global_\noptimizers: {adamw: {_target_: torch.optim.AdamW, lr: 1e-3}}\n",
     "optimizers.adamw: the name of a registered optimizer; name yours another way (optimizers.my_adamw)"),
    ("targetoption", "# @package _global_\noptimizers: {my_adamw: {_target_: torch.optim.AdamW, lr: 1e-3, "
     "wieght_decay: 0.1}}\n", "unknown key optimizer.wieght_decay: my_adamw has no wieght_decay; did you mean "
     "optimizer.weight_decay?"),
    ("targetkind", "# @package _global_\noptimizers: {my_adamw: {_target_: torch.optim.AdamW, lr: 1e-3, "
     "betas: [0.9]}}\n", "optimizer.betas=[0.9]: must be a list of 2 finite numbers (my_adamw)"),
    ("targetvalue", "# @package _global_\noptimizers: {my_adamw: {_target_: torch.optim.AdamW, lr: -1.0}}\n",
     "optimizer: my_adamw (torch.optim.AdamW) cannot be built with these hyper-parameters on a miniature model: "
     "ValueError: Invalid learning rate: -1.0"),
]


def _fails_cleanly(entry: str, argv: list[str], needle: str, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = set(tmp_path.rglob("*"))
    monkeypatch.setattr(sys, "argv", [entry, *argv])
    with pytest.raises(SystemExit) as ended:
        cli.main(ENTRIES[entry], entry)
    out, err = capsys.readouterr()
    assert ended.value.code == 2, (err, out)
    lines = err.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), err
    assert any(needle in line for line in lines), (needle, err)
    assert "Traceback" not in err + out
    assert set(tmp_path.rglob("*")) == before, "something was written"
    return lines


@pytest.mark.parametrize("entry,override,needle", OVERRIDES, ids=[f"{e}:{o}" for e, o, _ in OVERRIDES])
def test_a_bad_override_is_one_error_line_and_writes_nothing(entry, override, needle, tmp_path,
                                                             monkeypatch, capsys, shakespeare_bytes):
    base = [*TINY, "only=[adamw]"] if entry != "train" else []
    lines = _fails_cleanly(entry, [*base, *SMALL_RUN, f"results_dir={tmp_path / 'results'}",
                                   *override.split()], needle, tmp_path, monkeypatch, capsys)
    assert len(lines) == 1, lines


@pytest.mark.parametrize("name,text,needle", SUITE_FILES, ids=[n for n, _, _ in SUITE_FILES])
def test_a_bad_suite_file_is_one_error_line_and_writes_nothing(name, text, needle, tmp_path,
                                                               monkeypatch, capsys, shakespeare_bytes):
    folder = tmp_path / "my_suites" / "suite"
    folder.mkdir(parents=True)
    (folder / f"{name}.yaml").write_text(text)
    lines = _fails_cleanly("suite", ["--config-dir", str(tmp_path / "my_suites"), f"suite={name}",
                                     *SMALL_RUN, f"results_dir={tmp_path / 'results'}"],
                           needle, tmp_path, monkeypatch, capsys)
    assert len(lines) == 1, lines


def test_every_problem_at_once(tmp_path, monkeypatch, capsys, shakespeare_bytes):
    lines = _fails_cleanly("train", [*SMALL_RUN, f"results_dir={tmp_path / 'r'}", "budget.grad_clip=nan",
                                     "train.log_every=0", "optimizer.betas=[0.9]"],
                           "budget.grad_clip=nan", tmp_path, monkeypatch, capsys)
    assert len(lines) == 3, lines


@pytest.mark.parametrize("module,args,needle", [
    ("runners.train", ["budgt.tokens=2e4"], "did you mean budget.tokens?"),
    ("runners.suite", ["suite=tiny", "seeds=100000"], "seeds=100000"),
    ("runners.tune", ["suite=tiny", "tune.trials=0"], "tune.trials=0"),
    ("runners.suite", ["optimizers={my_lion: {_target_: nopkg.Lion, lr: 1e-3}}"],
     "optimizers.my_lion._target_=nopkg.Lion: cannot import nopkg"),
])
def test_real_interpreters_exit_2_with_one_line(module, args, needle, tmp_path):
    out = subprocess.run([sys.executable, "-m", module, *args, f"results_dir={tmp_path / 'r'}"],
                         cwd=tmp_path, capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [l for l in out.stderr.strip().splitlines()
                                               if l.startswith("error: ")] and needle in out.stderr
    assert not any(tmp_path.iterdir())
