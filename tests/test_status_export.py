"""`make status` (runners/status.py) on real runs, and `python -m analysis.export` (csv, parquet)."""

import json
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import REPO, SMALL_RUN, TINY
from fixtures_results import write_suite

from analysis.export import main as export_main
from analysis.load import load_runs

SUITE = [*TINY, *SMALL_RUN, "report=false"]


def _suite(*args: str, check=True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "runners.suite", *args], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def _table(text: str) -> dict[str, dict]:
    """The status table's rows by optimizer: {optimizer: {column: cell}}."""
    lines = text.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model "))
    cols = re.split(r"\s{2,}", lines[header].strip())
    rows = {}
    for line in lines[header + 1:]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) != len(cols):
            break  # the footer
        rows[cells[1]] = dict(zip(cols, cells))
    return rows


def _last_rows(metrics_file):
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    return ([r for r in rows if "train_loss" in r][-1], [r for r in rows if "val_loss" in r][-1])


def test_status_of_a_suite_before_and_after_it_runs(tmp_path, shakespeare_bytes):
    results = tmp_path / "results"
    args = [*SUITE, "only=[adamw,sm3]", f"results_dir={results}"]
    before = _suite(*args, "status=true").stdout
    assert not results.exists()  # status writes nothing
    rows = _table(before)
    assert set(rows) == {"adamw", "sm3"}
    for row in rows.values():
        assert row["status"] == "new" and row["step"] == "0/30"
        assert row["train loss"] == row["val loss"] == "-"
        assert row["time left"].startswith("~")  # the plan's estimate
    assert "2 new" in before.splitlines()[-1]

    _suite(*args)
    after = _suite(*args, "status=true").stdout
    rows = _table(after)
    for opt, row in rows.items():
        assert row["status"] == "completed" and row["step"] == "30/30" and row["time left"] == "-"
        [metrics] = results.glob(f"tiny/{row['run_id']}/metrics.jsonl")
        train, val = _last_rows(metrics)
        assert row["train loss"] == f"{train['train_loss']:.4f}"
        assert row["val loss"] == f"{val['val_loss']:.4f}"
        assert row["lr"] == "0.001" and row["seed"] == "0" and row["model"] == "nano"
    assert after.splitlines()[-1] == "2 completed; nothing left to run"


def test_status_of_a_running_then_interrupted_run(tmp_path, shakespeare_bytes):
    results = tmp_path / "results"
    args = [*SUITE, "only=[adamw]", "budget.steps=20000", "train.ckpt_every=10",
            f"results_dir={results}"]
    proc = subprocess.Popen([sys.executable, "-m", "runners.suite", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while not list(results.glob("tiny/*/ckpt/state.pt")):  # past its first checkpoint
            assert proc.poll() is None and time.time() < deadline, "the run never checkpointed"
            time.sleep(0.05)
        row = _table(_suite(*args, "status=true").stdout)["adamw"]
        step, total = map(int, row["step"].split("/"))
        assert row["status"] == "running" and 10 <= step < total == 20000
        assert row["time left"] != "-" and not row["time left"].startswith("~")
        assert row["train loss"] != "-" and row["val loss"] != "-"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    assert proc.returncode == 143, proc.stdout.read().decode()

    text = _suite(*args, "status=true").stdout
    row = _table(text)["adamw"]
    [info] = [json.loads(p.read_text()) for p in results.glob("tiny/*/run.json")]
    assert row["status"] == "interrupted" and row["step"] == f"{info['step']}/20000"
    assert step <= info["step"] < 20000
    assert row["time left"] != "-" and not row["time left"].startswith("~")
    assert text.splitlines()[-1].startswith("1 interrupted; about ")


def test_a_quiet_running_run_is_flagged(small_cfg):
    from runners.status import STALE_AFTER_S, run_state
    from runners.suite import resolve_all, run_folder

    [cfg] = resolve_all(small_cfg(*TINY, "only=[adamw]"), check_data=False)
    folder = run_folder(cfg).path
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"schema_version": 1, "status": "running", "step": 0,
                                                 "total_steps": 30}))
    rows = [{"step": 0, "tokens": 0, "wall_time_s": 0.0, "val_loss": 5.5},
            {"step": 10, "tokens": 2560, "train_loss": 4.0, "wall_time_s": 1.0}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 1')
    now = time.time()
    fresh = run_state(cfg, "cpu", 1, now)
    assert fresh["status"] == "running" and fresh["step"] == 10
    assert fresh["seconds_left"] == pytest.approx(0.1 * 20)  # its own 0.1 s per step, 20 steps left
    assert run_state(cfg, "cpu", 1, now + STALE_AFTER_S + 60)["status"] == "running?"


def test_tail_rows_reads_backwards_across_chunks_and_skips_a_torn_line(tmp_path):
    from runners.status import tail_rows

    path = tmp_path / "metrics.jsonl"
    assert tail_rows(path) == (None, None, None)
    rows = [{"step": 0, "val_loss": 5.0}] + [{"step": s, "train_loss": 5.0 - s / 100} for s in range(1, 60)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 60, "train_lo')
    for chunk in (5, 17, 64, 1 << 16):
        last, train, val = tail_rows(path, chunk=chunk)
        assert last == train == rows[-1] and val == rows[0]


# ---- export ---------------------------------------------------------------------------------


@pytest.fixture
def suite_dir(tmp_path):
    return write_suite(tmp_path / "results" / "synthetic")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_reads_back_as_load_runs(suite_dir, fmt, capsys):
    assert export_main([str(suite_dir), "--format", fmt]) == 0
    out = suite_dir / "export"
    assert sorted(p.name for p in out.iterdir()) == [f"metrics.{fmt}", f"runs.{fmt}"]  # no temp files
    printed = capsys.readouterr().out
    runs, metrics = load_runs(suite_dir)
    assert f"runs.{fmt} ({len(runs)} rows)" in printed and f"metrics.{fmt} ({len(metrics):,} rows)" in printed
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    r, m = read(out / f"runs.{fmt}"), read(out / f"metrics.{fmt}")
    assert len(r) == len(runs) == 9 and len(m) == len(metrics)
    assert list(r.columns) == list(runs.columns) and list(m.columns) == list(metrics.columns)
    for col in ("run_id", "status", "model", "optimizer", "seed", "step", "total_steps"):
        assert r[col].tolist() == runs[col].tolist(), col
    for col in ("lr", "final_val_loss", "opt_state_bytes"):
        pd.testing.assert_series_equal(r[col].astype(float), runs[col].astype(float), check_names=False)
    pd.testing.assert_frame_equal(m, metrics, check_dtype=False)
    # nested values: JSON text in both formats
    assert [json.loads(c) for c in r["config"]] == runs["config"].tolist()
    assert [json.loads(c) for c in r["cfg.optimizer.betas"]] == [[0.9, 0.95]] * len(runs)
    assert json.loads(r["env.packages"][0]) == runs["env.packages"][0]


def test_csv_and_parquet_hold_the_same_tables(suite_dir, tmp_path):
    for fmt in ("csv", "parquet"):
        assert export_main([str(suite_dir), "--format", fmt, "--out", str(tmp_path / fmt)]) == 0
    for table in ("runs", "metrics"):
        c = pd.read_csv(tmp_path / "csv" / f"{table}.csv")
        p = pd.read_parquet(tmp_path / "parquet" / f"{table}.parquet")
        assert list(c.columns) == list(p.columns)
        for col in c.columns:  # an all-empty column reads as NaN from csv, None from parquet
            a, b = c[col], p[col]
            assert a.isna().tolist() == b.isna().tolist(), col
            assert a[a.notna()].tolist() == b[b.notna()].tolist(), col


def test_export_of_a_suite_with_an_interrupted_run(suite_dir):
    # an interrupted run has no summary and a string error: a column with gaps still types
    from fixtures_results import write_run

    write_run(suite_dir, "lamb", 0, status="interrupted", stop_step=100, error="SIGTERM after step 100")
    assert export_main([str(suite_dir), "--format", "parquet"]) == 0
    r = pd.read_parquet(suite_dir / "export" / "runs.parquet")
    assert r.set_index("optimizer").loc["lamb", "error"] == "SIGTERM after step 100"


@pytest.mark.parametrize("case", ["missing", "not_results", "format", "no_args"])
def test_export_bad_input_is_one_error_line_and_exit_2(case, tmp_path, suite_dir):
    (tmp_path / "empty").mkdir()
    argv = {"missing": [str(tmp_path / "nope")], "not_results": [str(tmp_path / "empty")],
            "format": [str(suite_dir), "--format", "xlsx"], "no_args": []}[case]
    out = subprocess.run([sys.executable, "-m", "analysis.export", *argv], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith("error: "), out.stderr
    assert not (suite_dir / "export").exists() and list((tmp_path / "empty").iterdir()) == []
    assert not (tmp_path / "nope").exists()
