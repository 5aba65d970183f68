"""wandb settings from `train.wandb`, read back from the offline runs' own files."""

from pathlib import Path

import pytest

from runners.run_folder import RunFolder
from runners.sinks import MetricSinks, wandb_run_id, wandb_settings

RUN_ID = "nano-adamw-lr0.001-s0-deadbeef"
WANDB_VARS = ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_GROUP", "WANDB_TAGS")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """wandb offline with every file of its own under tmp_path and no WANDB_* value inherited;
    wandb's process-wide setup is torn down around the test, so it reads this environment."""
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var, sub in (("WANDB_DIR", "wandb"), ("WANDB_CONFIG_DIR", "config"),
                     ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    for var in WANDB_VARS:
        monkeypatch.delenv(var, raising=False)
    wandb.teardown()
    yield tmp_path
    wandb.teardown()


def _cfg(suite="tiny", mode="offline", **wandb):
    settings = {"mode": mode, "project": None, "entity": None, "group": None, "tags": [], **wandb}
    return {"suite": suite, "seed": 0, "optimizer": {"name": "adamw", "lr": 1e-3}, "train": {"wandb": settings}}


def _open_and_close(root: Path, cfg: dict) -> str:
    """A MetricSinks for RUN_ID in suite cfg['suite'], one row logged; returns the wandb id."""
    folder = RunFolder(root / "results" / cfg["suite"] / RUN_ID)
    folder.path.mkdir(parents=True, exist_ok=True)
    sinks = MetricSinks(cfg, folder)
    run_id = sinks.wandb_run.id
    sinks.log({"step": 1, "train_loss": 3.0})
    sinks.close()
    return run_id


def _run_records(root: Path, suite: str) -> list:
    """The RunRecord of each offline run of RUN_ID in `suite`, parsed from its .wandb file (a
    LevelDB-style log: a 7-byte file header, then 32 KiB blocks of crc32, length, type, data)."""
    from wandb.proto import wandb_internal_pb2 as pb

    runs = []
    for path in sorted((root / "results" / suite / RUN_ID / "wandb").glob("offline-run-*/run-*.wandb")):
        data = path.read_bytes()
        assert data[:4] == b":W&B"
        pos, buf = 7, b""
        while pos + 7 <= len(data):
            left = 32768 - pos % 32768
            length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
            if left < 7 or kind == 0:  # the block's padding
                pos += left
                continue
            chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
            buf = chunk if kind in (1, 2) else buf + chunk  # FULL, FIRST; then MIDDLE, LAST
            if kind in (1, 4):
                record = pb.Record.FromString(buf)
                if record.WhichOneof("record_type") == "run":
                    runs.append(record.run)
    return runs


def test_wandb_id_is_per_suite_and_stable(offline):
    first = _open_and_close(offline, _cfg(suite="tiny"))
    other = _open_and_close(offline, _cfg(suite="gpt2_small"))
    again = _open_and_close(offline, _cfg(suite="tiny"))  # a resumed run reattaches
    assert first != other and first == again
    assert first == wandb_run_id("tiny", RUN_ID) and other == wandb_run_id("gpt2_small", RUN_ID)
    records = _run_records(offline, "tiny")
    assert records and {r.run_id for r in records} == {first}  # offline folders are per second: 1 or 2
    assert records[0].display_name == f"tiny/{RUN_ID}"
    assert [r.run_id for r in _run_records(offline, "gpt2_small")] == [other]


def test_wandb_id_characters_and_length():
    odd = "x" * 80 + "/a:b#c?d%e;f,g'h\\i"
    for suite, run_id in (("tiny", RUN_ID), ("a/b", odd)):
        wid = wandb_run_id(suite, run_id)
        assert len(wid) <= 64 and not set(wid) & set("/\\#?%:;,' ")
        assert wid == wandb_run_id(suite, run_id)
    assert wandb_run_id("tiny", odd) != wandb_run_id("tiny", odd + "x")


def test_config_reaches_the_offline_run(offline):
    _open_and_close(offline, _cfg(project="myproj", entity="myteam", group="sweep-1", tags=["baseline", "cpu"]))
    [run] = _run_records(offline, "tiny")
    assert (run.project, run.entity, run.run_group, list(run.tags)) == ("myproj", "myteam", "sweep-1",
                                                                        ["baseline", "cpu"])


def test_wandb_variables_fill_what_the_config_leaves_null(offline, monkeypatch):
    monkeypatch.setenv("WANDB_PROJECT", "envproj")
    monkeypatch.setenv("WANDB_ENTITY", "envteam")
    monkeypatch.setenv("WANDB_RUN_GROUP", "envgroup")
    monkeypatch.setenv("WANDB_TAGS", "nightly, h100")
    _open_and_close(offline, _cfg(suite="from_env"))
    [run] = _run_records(offline, "from_env")
    assert (run.project, run.entity, run.run_group, list(run.tags)) == ("envproj", "envteam", "envgroup",
                                                                        ["nightly", "h100"])
    # A value in the config wins over the variable.
    _open_and_close(offline, _cfg(suite="from_cfg", project="cfgproj", group="cfggroup", tags=["mine"]))
    [run] = _run_records(offline, "from_cfg")
    assert (run.project, run.entity, run.run_group, list(run.tags)) == ("cfgproj", "envteam", "cfggroup", ["mine"])


def test_defaults_without_variables():
    s = wandb_settings(_cfg(mode=None), RUN_ID, environ={})
    assert s["mode"] == "disabled"
    assert (s["project"], s["entity"], s["group"], s["tags"]) == ("optarena", None, "tiny/adamw", None)
    assert (s["name"], s["resume"]) == (f"tiny/{RUN_ID}", "allow")
    # mode: the config's, else $WANDB_MODE (the schema keeps it one of disabled, offline, online).
    assert wandb_settings(_cfg(mode="disabled"), RUN_ID, environ={"WANDB_MODE": "online"})["mode"] == "disabled"
    assert wandb_settings(_cfg(mode=None), RUN_ID, environ={"WANDB_MODE": "offline"})["mode"] == "offline"


def test_disabled_starts_no_wandb_run(tmp_path):
    folder = RunFolder(tmp_path / RUN_ID)
    folder.path.mkdir()
    sinks = MetricSinks(_cfg(mode="disabled"), folder)
    sinks.log({"step": 1, "train_loss": 3.0})
    sinks.close()
    assert sinks.wandb_run is None and not (folder.path / "wandb").exists()
    assert folder.metrics_path.read_text().count("\n") == 1
