"""Bad data gets a one-line error naming the problem and the fix, before any run folder exists
(bad command lines and suite files: tests/test_cli_fuzz.py)."""

import numpy as np
import pytest

from runners.config import ConfigError
from runners.train import run


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


