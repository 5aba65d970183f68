"""The contract check for any optimizer (optimizers/contract.py, `make check-optimizer`): it passes
torch's AdamW from the command line, and it names what each deliberately broken optimizer below
gets wrong."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from optimizers import contract
from tests.conftest import REPO


class Momentum(torch.optim.Optimizer):
    """SGD with momentum and decoupled weight decay, kept the torch.optim way: what the broken
    ones below depart from, one flaw each."""

    def __init__(self, params, lr=1e-2, momentum=0.9, weight_decay=0.1):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    def _lr(self, group) -> float:
        return group["lr"]

    def _grad(self, p):
        return p.grad

    def _noise(self, p):
        return 0.0

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr = self._lr(group)
            for p in group["params"]:
                grad = self._grad(p)
                if grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(grad)
                p.mul_(1 - lr * group["weight_decay"]).add_(buf + self._noise(p), alpha=-lr)


class LosesItsBuffer(Momentum):
    def state_dict(self):
        saved = super().state_dict()
        return {**saved, "state": {i: {} for i in saved["state"]}}


class StepsWithoutGrad(Momentum):
    def _grad(self, p):
        return torch.zeros_like(p) if p.grad is None else p.grad


class IgnoresLrChanges(Momentum):
    def __init__(self, params, lr=1e-2, **kw):
        super().__init__(params, lr=lr, **kw)
        self.lr = lr

    def _lr(self, group) -> float:
        return self.lr


class Nondeterministic(Momentum):
    def _noise(self, p):
        g = torch.Generator()
        g.seed()  # from the OS: no torch.manual_seed makes two runs agree
        return 1e-6 * torch.randn(p.shape, generator=g, dtype=p.dtype)


def failed_checks(cls) -> set[str]:
    factory = lambda model: cls(contract.matrices_and_vectors(model), lr=1e-2)  # noqa: E731
    failures = contract.check(factory, cls.__name__)
    assert all(line.startswith(f"{cls.__name__}: ") and "\n" not in line for line in failures)
    return {line.split(": ")[1] for line in failures}


ROUND_TRIPS = {name for name in contract.CHECKS if name.startswith("state_dict round trip")}


def test_the_well_behaved_one_passes_every_check():
    assert failed_checks(Momentum) == set()


@pytest.mark.parametrize("cls, expected", [
    (LosesItsBuffer, ROUND_TRIPS),
    (StepsWithoutGrad, {"parameters without gradients skipped"}),
    # Its lr attribute also stays behind in a copy: torch.optim copies defaults, state and
    # param_groups only.
    (IgnoresLrChanges, {"each group's lr counts", "an lr change takes effect",
                        "deepcopy steps like the original", "pickle steps like the original"}),
    # Every check that compares two runs sees its noise.
    (Nondeterministic, set(contract.CHECKS) - {"parameters without gradients skipped",
                                               "each group's lr counts"}),
], ids=lambda x: x.__name__ if isinstance(x, type) else "")
def test_each_broken_optimizer_fails_the_checks_that_name_its_flaw(cls, expected):
    assert failed_checks(cls) == expected


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "optimizers.contract", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_the_command_line_passes_torch_adamw():
    done = _cli("torch.optim.AdamW", "lr=1e-3", "betas=(0.9,0.95)", "foreach=False")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[:-1] == [f"ok   {name}" for name in contract.CHECKS]
    n = len(contract.CHECKS)
    assert lines[-1] == f"torch.optim.AdamW: {n} of {n} checks hold"


def test_the_command_line_names_a_failure_and_exits_1(capsys):
    assert contract.main(["tests.test_check_optimizer.StepsWithoutGrad", "momentum=0.5"]) == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("ok ")]
    assert failed == [
        "FAIL parameters without gradients skipped: parameters with grad None moved: wpe.weight, "
        "h.0.attn.qkv.weight, h.0.mlp.fc.weight (and 2 more)",
        f"tests.test_check_optimizer.StepsWithoutGrad: {len(contract.CHECKS) - 1} of "
        f"{len(contract.CHECKS)} checks hold",
    ]


@pytest.mark.parametrize("args, message", [
    (["NoSuchClass"], "give the class as package.module.Class"),
    (["torch.optim.NoSuchClass"], "cannot import torch.optim.NoSuchClass"),
    (["torch.optim.AdamW", "lr"], "options are key=value"),
])
def test_the_command_line_refuses_what_it_cannot_build(args, message, capsys):
    assert contract.main(args) == 2
    assert message in capsys.readouterr().err
