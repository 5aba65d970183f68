"""torchrun with 2 processes (gloo): DDP and FSDP2 train the same run as one process.

Both split the same global batch across ranks and average gradients, so the losses match one
process up to the order of floating-point reductions: relative 1e-5 on every logged loss.
"""

import json

import pytest

from runners.suite import run_folder, run_suite
from tests.conftest import SMALL_RUN, TINY

TOLERANCE = 1e-5


def _losses(cfg) -> list[tuple]:
    rows = [json.loads(l) for l in (run_folder(cfg).path / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r.get("train_loss"), r.get("val_loss")) for r in rows]


@pytest.mark.parametrize("optimizer", ["adamw", "adam_mini"])
def test_ddp_and_fsdp_match_one_process(tmp_path, optimizer):
    common = [*TINY, *SMALL_RUN, f"only=[{optimizer}]", "budget.steps=12", "report=false",
              "train.micro_batch=2", "budget.eval_every=4"]
    one = run_suite([*common, f"results_dir={tmp_path / 'one'}"])[0]
    expected = _losses(one)
    for parallel in ("ddp", "fsdp"):
        cfg = run_suite([*common, f"results_dir={tmp_path / parallel}", "launcher=torchrun",
                         "launcher.nproc_per_node=2", f"train.parallel={parallel}"])[0]
        info = json.loads((run_folder(cfg).path / "run.json").read_text())
        assert info["status"] == "completed" and info["env"]["world_size"] == 2
        got = _losses(cfg)
        assert [g[0] for g in got] == [e[0] for e in expected]
        for (step, t1, v1), (_, t2, v2) in zip(expected, got):
            for a, b in ((t1, t2), (v1, v2)):
                assert (a is None) == (b is None)
                if a is not None:
                    assert abs(a - b) <= TOLERANCE * abs(a), (parallel, step, a, b)
