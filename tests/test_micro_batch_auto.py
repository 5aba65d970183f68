"""train.micro_batch=auto: the largest micro-batch that divides the per-rank batch and whose
predicted peak fits in memory with runners.plan.MEMORY_MARGIN to spare, against a limit given in
config (train.memory_limit_gib), resolved into the run's config; each arm gets its own, and the
report shows it beside the arm's tokens/s. The CUDA probe (runners.plan.probe_cuda) needs a GPU
and is not run here."""

from __future__ import annotations

import copy
import functools
import json
import re

import pytest

from analysis.compare import compare
from analysis.report import cost_table
from runners import plan as planning
from runners.config import resolve_run, run_id
from runners.hydra_app import compose_config
from runners.suite import run_folder, run_suite
from tests.conftest import SMALL_RUN, TINY
from tests.test_cli_fuzz import _fails_cleanly

CPU = ["train.device=cpu"]  # the activations the plan counts are fp32 ones (on a GPU: bf16)


@functools.cache
def _composed(optimizer: str) -> dict:
    return compose_config([*SMALL_RUN, *CPU, f"optimizer={optimizer}"])


def _resolved(micro, optimizer: str = "adamw", limit: float | None = None) -> dict:
    raw = copy.deepcopy(_composed(optimizer))
    raw["train"].update(micro_batch=micro, memory_limit_gib=limit)
    return resolve_run(raw, check_data=False)


def _peak(micro: int, optimizer: str = "adamw") -> int:
    """The plan's peak per rank for SMALL_RUN at `micro` sequences per forward pass."""
    return planning.estimate(_resolved(micro, optimizer), "cpu").peak


def _gib(peak_bytes: float) -> float:
    """train.memory_limit_gib at which `peak_bytes` just fits with the margin."""
    return peak_bytes / (1 - planning.MEMORY_MARGIN) / 2**30


def _table(plan: str) -> list[list[str]]:
    """The plan's table: its header and rows, cell by cell (columns are two spaces apart)."""
    lines = plan.splitlines()
    return [re.split(r"\s{2,}", line) for line in lines[1:] if not line.startswith(("total:", "memory is", "warning"))]


def test_a_limit_that_fits_only_micro_batch_k_gets_k():
    peaks = {k: _peak(k) for k in (1, 2, 4, 8)}  # SMALL_RUN's 8 sequences per step
    assert peaks[1] < peaks[2] < peaks[4] < peaks[8]
    for k in (1, 2, 4, 8):
        cfg = _resolved("auto", limit=_gib(peaks[k] + 1))
        assert cfg["train"]["micro_batch"] == k  # the number itself is what the run records
        assert run_id(cfg) == run_id(_resolved(k))  # train.* never enters the run_id
        if k > 1:  # a byte less, and the next smaller one is chosen
            assert _resolved("auto", limit=_gib(peaks[k] - 1))["train"]["micro_batch"] == k // 2
    # without a limit: this machine's memory, which holds SMALL_RUN's whole batch many times over
    assert _resolved("auto")["train"]["micro_batch"] == 8


def test_too_small_a_limit_is_one_error_line_naming_the_key(tmp_path, monkeypatch, capsys, shakespeare_bytes):
    lines = _fails_cleanly("train", [*SMALL_RUN, *CPU, f"results_dir={tmp_path / 'r'}", "train.micro_batch=auto",
                                     f"train.memory_limit_gib={_gib(_peak(1) - 1)!r}"],
                           "train.micro_batch=auto: even one sequence per forward pass needs about", tmp_path,
                           monkeypatch, capsys)
    assert len(lines) == 1 and "raise train.memory_limit_gib" in lines[0], lines


def test_a_gpu_run_sized_where_no_gpu_is_visible_asks_for_the_limit(tmp_path, monkeypatch, capsys,
                                                                    shakespeare_bytes):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: auto sizes for it")
    lines = _fails_cleanly("train", [*SMALL_RUN, f"results_dir={tmp_path / 'r'}", "train.device=cuda",
                                     "train.micro_batch=auto"],
                           "no CUDA device is visible here to size it for", tmp_path, monkeypatch, capsys)
    assert len(lines) == 1 and "set train.memory_limit_gib" in lines[0], lines


def test_each_arm_gets_the_micro_batch_its_state_leaves_room_for(tmp_path, capsys):
    """Adam-mini's smaller state leaves room for twice AdamW's micro-batch under one limit: the plan,
    the runs' configs and the report's cost table say so, with each arm's tokens/s beside it."""
    adamw, adam_mini = _peak(8, "adamw"), _peak(8, "adam_mini")
    assert adam_mini < adamw and _peak(4, "adamw") < adam_mini
    args = [*TINY, *SMALL_RUN, *CPU, f"results_dir={tmp_path}", "only=[adamw,adam_mini]", "budget.steps=12",
            "train.micro_batch=auto", f"train.memory_limit_gib={_gib((adamw + adam_mini) / 2)!r}",
            "report=false"]
    run_suite([*args, "plan=true"])
    header, *rows = _table(capsys.readouterr().out)
    assert [row[header.index("micro-batch")] for row in rows] == ["4", "8"]  # adamw, then adam_mini
    runs = run_suite(args)
    assert {r["optimizer"]["name"]: json.loads((run_folder(r).path / "run.json").read_text())["config"]["train"]
            ["micro_batch"] for r in runs} == {"adamw": 4, "adam_mini": 8}
    table = cost_table(compare(tmp_path / "tiny")[0]).set_index("arm")
    print(table[["optimizer state (MiB/rank)", "micro-batch", "tokens/s, global"]].to_string())
    assert dict(table["micro-batch"]) == {"adamw lr=0.001": "4", "adam_mini lr=0.001": "8"}
    assert all(t[0].isdigit() for t in table["tokens/s, global"]), table["tokens/s, global"]


def test_the_plan_gives_memory_per_rank_and_says_so(capsys):
    base = [*TINY, *SMALL_RUN, *CPU, "only=[adamw]", "plan=true"]
    run_suite(base)
    one = capsys.readouterr().out
    run_suite([*base, "launcher=torchrun", "launcher.nproc_per_node=2", "train.parallel=fsdp"])
    fsdp = capsys.readouterr().out
    assert "peak mem/rank" in fsdp and "memory is per rank (rank 0's): fsdp shards" in fsdp
    assert "peak mem/rank" not in one and "memory is per rank" not in one

    def peak(out):
        header, row = _table(out)
        value, unit = row[header.index("peak mem/rank" if "x 2;" in out else "peak mem")].split()
        return float(value) * {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit]

    assert peak(fsdp) < peak(one)
