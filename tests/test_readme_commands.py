"""Every command in README.md that can run on a CPU works as printed, so the README cannot drift.

Commands are read from README.md's code spans and bash blocks. `make` commands are turned into the
command their target runs (`make -n`, as CI's make would expand it); each runs with `plan=true`
(everything checked and planned, nothing trained) under a temporary results folder, and the
one-run example of the table trains for real. Commands with placeholders (NAME, ...) and the
targets that are not a config (test, bench, clean, data, report, export, dashboard) are listed, not run."""

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO

README = (REPO / "README.md").read_text()
NOT_A_CONFIG = ("make test", "make bench", "make clean", "make data", "make report", "make export",
                "make install", "make dashboard")
# NAME, ..., [options], and a user's own package (mypkg, mypackage) that only the user has
PLACEHOLDER = re.compile(r"NAME|\.\.\.|\[device|\[optimizers|\[trials|\||mypkg|mypackage")
ONE_RUN = "python -m runners.train optimizer=adamw optimizer.lr=3e-4 budget.steps=100"


def readme_commands() -> list[str]:
    spans = re.findall(r"`([^`\n]+)`", README)
    blocks = [line.split(" #")[0].strip() for block in re.findall(r"```bash\n(.*?)```", README, re.S)
              for line in block.splitlines()]
    found = [c.strip() for c in spans + blocks if c.strip().startswith(("python -m runners.", "make "))]
    return list(dict.fromkeys(found))


COMMANDS = [c for c in readme_commands()
            if not PLACEHOLDER.search(c) and not c.startswith(NOT_A_CONFIG)]


def test_the_readme_has_the_commands_this_test_runs():
    assert len(COMMANDS) >= 10, COMMANDS
    assert ONE_RUN in COMMANDS and "make suite=tiny" in COMMANDS


def _as_run(command: str) -> list[str]:
    """The python command a README command runs: make targets expanded by `make -n`."""
    if not command.startswith("make "):
        return [sys.executable, *shlex.split(command)[1:]]
    dry = subprocess.run(["make", "-n", *shlex.split(command)[1:]], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    line = next(l for l in dry.splitlines() if "-m runners." in l or "-m optimizers." in l)
    return [sys.executable, *shlex.split(line)[1:]]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_works_as_printed(command, tmp_path, shakespeare_bytes):
    real = command == ONE_RUN
    flag = " --" in command  # --help, --cfg: print and run nothing by themselves
    if "check-optimizer" in command:  # the contract on a class: no config, nothing written
        out = subprocess.run(_as_run(command), cwd=REPO, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0 and "FAIL" not in out.stdout, out.stdout + out.stderr[-2000:]
        return
    argv = [*_as_run(command), f"results_dir={tmp_path}", *([] if real or flag else ["plan=true"])]
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, (argv, out.stderr[-2000:])
    if real:
        assert ": completed, final val loss" in out.stdout
    elif not flag:
        assert "runs on" in out.stdout or "studies" in out.stdout, out.stdout
