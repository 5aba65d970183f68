"""The training loop reads the device back only at read points (logging steps, checkpoints, a
stop): the steps between them are still all checked for divergence, and timed."""

import json

import pytest

from runners.train import run
from tests.test_train import _folder

DIVERGING = ["optimizer.lr=30.0", "budget.warmup=0"]  # the loss leaves 5.5 for 2e4 at step 2


def _rows(cfg: dict) -> list[dict]:
    return [json.loads(line) for line in (_folder(cfg) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("log_every, ckpt_every, read_at", [(4, 100, 4), (10, 3, 3)])
def test_divergence_between_read_points_is_dated_to_its_step(small_cfg, log_every, ckpt_every, read_at):
    every_step = run(small_cfg(*DIVERGING))
    assert every_step["status"] == "diverged" and every_step["diverged_at_step"] == 2
    cfg = small_cfg(*DIVERGING, f"train.log_every={log_every}", f"train.ckpt_every={ckpt_every}",
                    f"results_dir={small_cfg()['results_dir']}-{log_every}")
    info = run(cfg)
    # found at the first read point after it (a logging step, or a checkpoint), dated to its step
    assert info["status"] == "diverged" and info["diverged_at_step"] == 2 and info["step"] == read_at
    assert [r["step"] for r in _rows(cfg)] == [0, read_at]


def test_every_step_is_timed_though_only_logging_steps_are_read(small_cfg):
    cfg = small_cfg("train.log_every=7", "budget.steps=21")
    summary = run(cfg)["summary"]
    rows = _rows(cfg)[1:]
    assert [r["step"] for r in rows] == [7, 14, 21]
    assert all(r["time_fwd_bwd_s"] > 0 and r["time_opt_s"] > 0 for r in rows)
    assert summary["time_fwd_bwd_s"] > 0 and summary["tokens_per_s"] > 0
    # the run's time sums all 21 steps, not just the three read back
    assert rows[-1]["wall_time_s"] > sum(r["time_fwd_bwd_s"] + r["time_opt_s"] for r in rows)
