"""bench.gpu's script on the CPU (its figures need a GPU; this checks the script and its table)."""

from __future__ import annotations

from bench import gpu


def test_gpu_bench_runs_each_optimizer_through_the_training_loop(tmp_path, shakespeare_bytes):
    out = tmp_path / "table.md"
    status = gpu.main(["--suite", "tiny", "--device", "cpu", "--data", "shakespeare_bytes",
                       "--steps", "4", "--optimizers", "adamw,sm3", "--out", str(out)])
    assert status == 0
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| ")]
    header, *body = [[cell.strip() for cell in row] for row in rows]
    table = {row[0]: dict(zip(header, row)) for row in body}
    assert list(table) == ["adamw", "sm3"]
    assert table["adamw"]["opt x AdamW"] == "1.00"
    assert float(table["sm3"]["state x AdamW"]) < 0.6  # momentum plus row and column accumulators
    assert all(float(r["tokens/s"].replace(",", "")) > 0 for r in table.values())


def test_gpu_bench_reports_a_bad_optimizer_before_running(capsys):
    assert gpu.main(["--suite", "tiny", "--device", "cpu", "--data", "shakespeare_bytes",
                     "--optimizers", "adamw,nope"]) == 2
    assert "nope" in capsys.readouterr().err
