"""wandb settings from `train.wandb`, read back from the offline wandb runs themselves."""

from pathlib import Path
from types import SimpleNamespace

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


def _open_and_close(root: Path, cfg: dict) -> SimpleNamespace:
    """A MetricSinks for RUN_ID in suite cfg['suite'], one row logged, closed; returns what the
    offline wandb run says of itself (its id, name, project, entity, group and tags)."""
    folder = RunFolder(root / "results" / cfg["suite"] / RUN_ID)
    folder.path.mkdir(parents=True, exist_ok=True)
    sinks = MetricSinks(cfg, folder)
    r = sinks.wandb_run
    seen = SimpleNamespace(id=r.id, name=r.name, project=r.project, entity=r.entity, group=r.group,
                           tags=list(r.tags))
    sinks.log({"step": 1, "train_loss": 3.0})
    sinks.close()
    assert list((folder.path / "wandb").glob("offline-run-*")), "no offline run beside the run folder"
    return seen


def test_wandb_id_is_per_suite_and_stable(offline):
    first = _open_and_close(offline, _cfg(suite="tiny"))
    other = _open_and_close(offline, _cfg(suite="gpt2_small"))
    again = _open_and_close(offline, _cfg(suite="tiny"))  # a resumed run reattaches
    assert first.id != other.id and first.id == again.id
    assert first.id == wandb_run_id("tiny", RUN_ID) and other.id == wandb_run_id("gpt2_small", RUN_ID)
    assert first.name == f"tiny/{RUN_ID}"


def test_wandb_id_characters_and_length():
    odd = "x" * 80 + "/a:b#c?d%e;f,g'h\\i"
    for suite, run_id in (("tiny", RUN_ID), ("a/b", odd)):
        wid = wandb_run_id(suite, run_id)
        assert len(wid) <= 64 and not set(wid) & set("/\\#?%:;,' ")
        assert wid == wandb_run_id(suite, run_id)
    assert wandb_run_id("tiny", odd) != wandb_run_id("tiny", odd + "x")


def test_config_reaches_the_offline_run(offline):
    run = _open_and_close(offline, _cfg(project="myproj", entity="myteam", group="sweep-1",
                                        tags=["baseline", "cpu"]))
    assert (run.project, run.entity, run.group, list(run.tags)) == ("myproj", "myteam", "sweep-1",
                                                                        ["baseline", "cpu"])


def test_wandb_variables_fill_what_the_config_leaves_null(offline, monkeypatch):
    monkeypatch.setenv("WANDB_PROJECT", "envproj")
    monkeypatch.setenv("WANDB_ENTITY", "envteam")
    monkeypatch.setenv("WANDB_RUN_GROUP", "envgroup")
    monkeypatch.setenv("WANDB_TAGS", "nightly, h100")
    run = _open_and_close(offline, _cfg(suite="from_env"))
    assert (run.project, run.entity, run.group, list(run.tags)) == ("envproj", "envteam", "envgroup",
                                                                        ["nightly", "h100"])
    # A value in the config wins over the variable.
    run = _open_and_close(offline, _cfg(suite="from_cfg", project="cfgproj", group="cfggroup", tags=["mine"]))
    assert (run.project, run.entity, run.group, list(run.tags)) == ("cfgproj", "envteam", "cfggroup", ["mine"])


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
