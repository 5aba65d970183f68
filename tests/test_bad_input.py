"""Bad input gets a one-line error naming the problem and the fix, before any run folder exists."""

import subprocess
import sys

import numpy as np
import pytest

from runners.config import ConfigError
from runners.train import run
from tests.conftest import REPO, SMALL_RUN


@pytest.fixture
def bad_data(tmp_path):
    def make(kind: str) -> str:
        folder = tmp_path / kind
        folder.mkdir()
        payload = {"float32": np.random.rand(4096).astype(np.float32).tobytes(),
                   "odd_size": np.zeros(4097, np.uint8).tobytes()}[kind]
        (folder / "train.bin").write_bytes(payload)
        (folder / "val.bin").write_bytes(np.zeros(4096, np.uint16).tobytes())
        return str(folder)
    return make


CASES = [
    (["model=gpt5"], "unknown model 'gpt5': choose one of"),
    (["optimizer.name=adamx"], "unknown optimizer 'adamx': choose one of"),
    (["data=shakespeare_bytes", "data.name=tinystories"], "unknown data set 'tinystories'"),
    (["budget.global_batch=10", "train.micro_batch=4"],
     "budget.global_batch=10 is not divisible by train.micro_batch=4"),
    (["budget.steps=-5"], "budget.steps=-5 must be a positive number"),
    (["budget.steps=null", "budget.tokens=-100"], "budget.tokens=-100 must be a positive number"),
    (["optimizer.lr=-0.1"], "optimizer 'adamw': lr=-0.1 is outside"),
    (["optimizer.momentum=0.9"], "optimizer 'adamw': unknown option(s) ['momentum']"),
    (["budget.seq_len=64"], "budget.seq_len=64 exceeds the model's block_size=32"),
]


@pytest.mark.parametrize("overrides,message", CASES, ids=[c[1][:30] for c in CASES])
def test_bad_config_is_rejected_before_anything_is_written(tmp_path, small_cfg, overrides, message):
    with pytest.raises(ConfigError) as err:
        run(small_cfg(*overrides))
    assert any(message in line for line in err.value.errors), err.value.errors
    assert not (tmp_path / "results").exists()


def test_missing_data_file(tmp_path, small_cfg):
    with pytest.raises(ConfigError, match=r"data file .*train.bin not found: point data.path"):
        run(small_cfg(f"data.path={tmp_path / 'nowhere'}"))
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("kind,message", [
    ("float32", "holds token id .* >= the model's vocab_size 256"),
    ("odd_size", "not a whole number of uint16 tokens"),
])
def test_data_file_of_the_wrong_dtype_or_size(tmp_path, small_cfg, bad_data, kind, message):
    with pytest.raises(ConfigError, match=message):
        run(small_cfg(f"data.path={bad_data(kind)}"))
    assert not (tmp_path / "results").exists()


def test_cli_prints_one_line_per_problem(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "runners.train", *SMALL_RUN, f"results_dir={tmp_path}",
         "budget.steps=-5", "optimizer.lr=-1"],
        cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines), out.stderr
    assert not any(tmp_path.iterdir())
