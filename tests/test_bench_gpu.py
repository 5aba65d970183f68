"""bench.gpu's script on the CPU (its figures need a GPU; this checks the script and its tables)."""

from __future__ import annotations

from bench import gpu

QUICK = ["--device", "cpu", "--quick", "--suite", "tiny", "--data", "shakespeare_bytes"]


def _tables(text: str) -> dict[str, dict[str, dict[str, str]]]:
    """Each '### ' table of the Markdown, by its title's first words: {optimizer: {column: cell}}."""
    tables, title, header = {}, None, None
    for line in text.splitlines():
        if line.startswith("### "):
            title, header = line[4:].split(":")[0], None
            tables[title] = {}
        elif line.startswith("| ") and title:
            cells = [c.strip() for c in line.split("|")[1:-1]]
            if header is None:
                header = cells
            else:
                tables[title][cells[0]] = dict(zip(header, cells))
    return tables


def test_gpu_bench_times_the_steps_and_trains_each_arm(tmp_path, shakespeare_bytes):
    out = tmp_path / "table.md"
    status = gpu.main([*QUICK, "--optimizers", "lamb,adam_mini", "--arms", "adamw,sm3", "--steps", "4",
                       "--out", str(out)])
    assert status == 0
    text = out.read_text()
    tables = _tables(text)
    steps, loop = tables["Optimizer steps"], tables["The training loop"]
    assert list(steps) == ["lamb", "adam_mini"]
    assert float(steps["lamb"]["compiled x AdamW"]) > 0 and float(steps["lamb"]["compile s"]) >= 0
    assert steps["adam_mini"]["compiled x AdamW"] == "refused"
    assert (steps["adam_mini"]["goal x AdamW"], steps["lamb"]["goal x AdamW"]) == ("1.0", "1.5")
    assert "- adam_mini: train.compile_step refuses it: its step counts are Python ints" in text
    assert list(loop) == ["adamw", "sm3"]
    assert loop["adamw"]["opt x AdamW"] == "1.00" and loop["adamw"]["micro-batch"] == "8"
    assert float(loop["sm3"]["state x AdamW"]) < 0.6  # momentum plus row and column accumulators
    assert all(float(r["tokens/s"].replace(",", "")) > 0 for r in loop.values())


def test_gpu_bench_starts_nothing_new_once_its_time_is_spent(tmp_path, shakespeare_bytes):
    out = tmp_path / "table.md"
    assert gpu.main([*QUICK, "--optimizers", "lamb", "--budget-s", "0", "--out", str(out)]) == 0
    text = out.read_text()
    assert _tables(text)["Optimizer steps"]["lamb"]["compiled x AdamW"] == "not run"
    assert "The training loop" not in text
    assert "- not measured within --budget-s 0: nano: lamb compiled, loop: adamw, loop: adam_mini" in text


def test_gpu_bench_reports_a_bad_optimizer_before_running(capsys):
    assert gpu.main([*QUICK, "--optimizers", "adamw,nope"]) == 2
    assert "nope" in capsys.readouterr().err
