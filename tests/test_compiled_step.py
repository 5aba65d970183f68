"""train.compile_step: each optimizer's step through torch.compile (inductor, on the CPU) against
its eager step, a compiled run's exact resume, checkpoints moving between the two, and the
optimizers it refuses. Compiling is slow on the CPU: a small module (matrices and vectors, decayed
and not), few steps, each optimizer compiled once."""

import copy
import os
import shutil
import signal
import sys

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

import optimizers
from runners import cli
from runners.compiled_step import CHECKED, NOT_COMPILABLE, CompiledStep
from runners.config import ConfigError, resolve_run
from runners.train import Interrupted, run
from runners.train import main as train_main
from tests.test_train import _folder, _metrics, _params

STEPS = 4
RTOL = 1e-5  # measured: at most 3e-7 relative, from the lr rounded to float32 and fused arithmetic


class Small(nn.Module):
    """A GPT's kinds of tensors in miniature: two matrices of other shapes (decayed), a norm's
    weight (not decayed: decay_groups); three tensors, as each one adds kernels to compile."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Parameter(torch.randn(16, 8))
        self.proj = nn.Linear(8, 24, bias=False)
        self.norm = nn.Parameter(torch.ones(24))


def _train(name: str, compiled: bool):
    torch.manual_seed(0)
    model = Small()
    opt = optimizers.build(name, model, **optimizers.resolve_hparams(name))
    step = CompiledStep(opt) if compiled else opt.step
    graphs = []
    for s in range(STEPS):
        for group in opt.param_groups:  # as the loop sets it: a new float every step
            group["lr"] = 1e-2 * (s + 1) / STEPS
        g = torch.Generator().manual_seed(s)
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g)
        step()
        opt.zero_grad(set_to_none=True)
        graphs.append(counters["stats"]["unique_graphs"])
    return model, opt, graphs


def _assert_close_state(a: dict, b: dict) -> None:
    # the lr a float and the flags as the eager step has them (a tensor lr would compare equal)
    assert repr(a["param_groups"]) == repr(b["param_groups"])
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        assert a["state"][i].keys() == b["state"][i].keys()
        for k, v in a["state"][i].items():
            if torch.is_tensor(v):
                torch.testing.assert_close(v, b["state"][i][k], rtol=RTOL, atol=1e-7)
            else:
                assert v == b["state"][i][k]


@pytest.mark.parametrize("name", CHECKED)
def test_a_compiled_step_equals_the_eager_one_and_compiles_once(name):
    torch._dynamo.reset()
    counters.clear()
    eager_model, eager_opt, _ = _train(name, compiled=False)
    model, opt, graphs = _train(name, compiled=True)
    # the first step (it makes the state) runs eagerly, the second compiles, the rest reuse it
    assert graphs[0] == 0 and graphs[1] > 0 and graphs[-1] == graphs[1], graphs
    for p, q in zip(model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(p, q, rtol=RTOL, atol=1e-7)
    _assert_close_state(opt.state_dict(), eager_opt.state_dict())


def test_a_compiled_steps_state_steps_on_eagerly_and_back():
    """A checkpoint does not know which step wrote it: state from compiled steps continues eagerly,
    and the eager state continues compiled, as the eager steps would have gone on."""
    torch._dynamo.reset()
    eager_model, eager_opt, _ = _train("adamw", compiled=False)
    model, opt, _ = _train("adamw", compiled=True)
    g = torch.Generator().manual_seed(STEPS)
    grads = [torch.randn(p.shape, generator=g) for p in model.parameters()]

    def one_more_step(model, opt, step):
        for p, grad in zip(model.parameters(), grads):
            p.grad = grad.clone()
        step()
        return [p.detach().clone() for p in model.parameters()]

    def moved(source_model, source, compiled):  # a copy of the model, the state loaded
        target_model = Small()
        target_model.load_state_dict(source_model.state_dict())
        target = optimizers.build("adamw", target_model, **optimizers.resolve_hparams("adamw"))
        target.load_state_dict(copy.deepcopy(source.state_dict()))  # as a checkpoint file holds it
        return target_model, target, CompiledStep(target) if compiled else target.step

    to_eager, to_compiled = moved(model, opt, compiled=False), moved(eager_model, eager_opt, compiled=True)
    reference = one_more_step(eager_model, eager_opt, eager_opt.step)
    for after in (one_more_step(*to_eager), one_more_step(*to_compiled)):
        for p, q in zip(after, reference):
            torch.testing.assert_close(p, q, rtol=RTOL, atol=1e-7)


def test_every_new_compiled_step_compiles_however_many_came_before():
    """Dynamo compiles one code object for 8 optimizers at most, then runs eagerly, silently: a
    tuner's ninth trial would have stepped eagerly."""
    for _ in range(9):
        counters.clear()
        model = Small()
        opt = optimizers.build("lamb", model, **optimizers.resolve_hparams("lamb"))
        step = CompiledStep(opt)
        for _ in range(2):  # the eager first step, then the compiled one
            for p in model.parameters():
                p.grad = torch.ones_like(p)
            step()
        assert counters["stats"]["unique_graphs"] == 1


# A run's adamw on a one-layer GPT without biases: 9 tensors, so that compiling stays short.
RUN = ["model.n_layer=1", "model.bias=false", "budget.steps=6", "budget.eval_every=3",
       "train.ckpt_every=100", "optimizer=adamw"]


def _stop_at(step: int):
    """on_eval that SIGTERMs this process at `step`: the run checkpoints there and stops."""
    return lambda at, tokens, loss: os.kill(os.getpid(), signal.SIGTERM) if at == step else False


def test_a_compiled_step_run_resumes_exactly_and_its_checkpoints_resume_eagerly(small_cfg, tmp_path):
    compiled = [*RUN, "train.compile_step=true"]
    straight = small_cfg(*compiled, f"results_dir={tmp_path / 'straight'}")
    assert run(straight)["status"] == "completed"
    resumed = small_cfg(*compiled, f"results_dir={tmp_path / 'resumed'}")
    with pytest.raises(Interrupted):
        run(resumed, on_eval=_stop_at(3))
    shutil.copytree(tmp_path / "resumed", tmp_path / "eager")
    assert run(resumed)["status"] == "completed"
    assert _metrics(_folder(resumed)) == _metrics(_folder(straight))  # bit for bit
    a, b = _params(_folder(resumed)), _params(_folder(straight))
    assert all(torch.equal(a[k], b[k]) for k in a)

    # the compiled checkpoint at step 3 resumed by eager steps: the numbers move, within rounding
    eager = small_cfg(*RUN, "train.allow_drift=true", f"results_dir={tmp_path / 'eager'}")
    info = run(eager)
    drift = {"step": 3, "key": "train.compile_step", "from": True, "to": False, "alters_numbers": True}
    assert drift in info["drift"]
    c = _params(_folder(eager))
    assert all(torch.allclose(c[k], b[k], rtol=RTOL, atol=1e-6) for k in c)
    assert any(not torch.equal(c[k], b[k]) for k in c)


@pytest.mark.parametrize("name", [*NOT_COMPILABLE, "lion"])
def test_compile_step_is_refused_for_an_optimizer_it_does_not_compile(small_cfg, name):
    with pytest.raises(ConfigError) as refused:
        resolve_run(small_cfg(f"optimizer={name}", "train.compile_step=true"))
    [line] = [e for e in refused.value.errors if "compile_step" in e]
    assert line.startswith(f"train.compile_step=true: optimizer {name}: ")
    assert line.endswith("; set train.compile_step=false")
    assert (NOT_COMPILABLE.get(name) or "not checked against its eager one") in line


def test_the_cli_refuses_compile_step_for_adam_mini_before_writing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["runners.train", "optimizer=adam_mini", "train.compile_step=true",
                                      f"results_dir={tmp_path}"])
    with pytest.raises(SystemExit) as exited:
        cli.main(train_main, "train")
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith(
        "error: train.compile_step=true: optimizer adam_mini: its step counts")
    assert not any(tmp_path.iterdir())
