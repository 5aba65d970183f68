"""What a run prints while it trains: log lines when stderr is a file, nothing when disabled."""

import io
import re
import subprocess
import sys

from tests.conftest import REPO, SMALL_RUN
from runners.progress import Progress

LINE = re.compile(r"^(?P<name>\S+): step (?P<step>\d+)/(?P<total>\d+) \| train \d+\.\d+"
                  r"(?: \| val (?P<val>\d+\.\d+))? \| [\d,]+ tok/s \| elapsed \d+:\d\d:\d\d"
                  r" \| remaining \d+:\d\d:\d\d$")


def test_log_lines_when_stderr_is_a_file(tmp_path, shakespeare_bytes):
    log = tmp_path / "run.log"
    overrides = [o for o in SMALL_RUN if not o.startswith("train.progress=")]
    with open(log, "w") as err:
        done = subprocess.run([sys.executable, "-m", "runners.train", *overrides, "train.progress=true",
                               f"results_dir={tmp_path / 'results'}"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True, timeout=300)
    text = log.read_text()
    assert done.returncode == 0, text
    assert "\r" not in text and "\x1b" not in text  # no tqdm redraws
    lines = [m for m in map(LINE.match, text.splitlines()) if m]
    run_id = done.stdout.split(":")[0].strip()
    assert all(m["name"] == run_id and m["total"] == "30" for m in lines)
    # One line per evaluation (steps 10, 20, 30; the run takes a few seconds, well under the 10 s
    # between other lines), the last one at 30/30 with its val loss.
    assert [int(m["step"]) for m in lines if m["val"]] == [10, 20, 30]
    assert lines[-1]["step"] == "30" and lines[-1]["val"]


def _row(step, val=None):
    row = {"step": step, "train_loss": 2.5, "tokens_per_s": 1234.0}
    return row if val is None else {**row, "val_loss": val}


def test_lines_are_throttled_but_evaluations_and_the_last_step_always_print():
    now = [100.0]
    out = io.StringIO()  # not a terminal
    progress = Progress(True, "run", total=100, initial=40, stream=out, clock=lambda: now[0], every_s=10.0)
    for step in range(41, 101):
        now[0] += 1.0  # one second per step
        progress.update(_row(step, val=3.0 if step == 45 else None))
    progress.close()
    lines = out.getvalue().splitlines()
    # 45: an evaluation; then one line 10 s after the previous one; 100: the last step.
    assert [int(line.split()[2].split("/")[0]) for line in lines] == [45, 55, 65, 75, 85, 95, 100]
    assert lines[0] == ("run: step 45/100 | train 2.5000 | val 3.0000 | 1,234 tok/s | elapsed 0:00:05"
                        " | remaining 0:00:55")  # resumed at 40: 5 s for 5 steps, 55 steps left
    assert lines[-1].endswith("elapsed 0:01:00 | remaining 0:00:00")


def test_disabled_prints_nothing():
    out = io.StringIO()
    progress = Progress(False, "run", total=10, initial=0, stream=out, clock=lambda: 0.0)
    for step in range(1, 11):
        progress.update(_row(step, val=3.0))
    progress.close()
    assert out.getvalue() == ""


def test_a_terminal_gets_the_tqdm_bar():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    progress = Progress(True, "run", total=10, initial=0, stream=out)
    for step in range(1, 11):
        progress.update(_row(step, val=3.0))
    progress.close()
    assert "\r" in out.getvalue() and " | train " not in out.getvalue()
