"""`make data name=openwebtext` offline: the same command on a small data set in HF's format."""

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from runners.data import gpt2_encoding, open_data

REPO = Path(__file__).resolve().parent.parent
EOT = 50256
WORDS = ("the", "optimizer", "state", "café", "naïve", "Größe", "日本語", "—", "42", "tokens,", "web",
         "text.", "Adam-mini", "\n", "  ", "<|endoftext|>", "emoji 🙂", "$x^2$")


def _documents(n: int, seed: int = 0) -> list[str]:
    """Short documents of 20-60 words (one held-out document is still a 16-token sequence),
    with non-ASCII text, blank runs and the end-of-text marker as plain text."""
    rng = random.Random(seed)
    return [f"Document {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))
            for i in range(n)]


def _offline_env(tmp: Path) -> dict:
    return {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(tmp / "hf_home"), "OMP_NUM_THREADS": "1"}


def _make_data(tmp: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runners.data", "openwebtext", *args], cwd=REPO,
                          env=env or _offline_env(tmp), capture_output=True, text=True, timeout=300)


def _split_documents(tokens: np.ndarray) -> list[list[int]]:
    ids = tokens.tolist()
    assert ids and ids[-1] == EOT, "every document ends with the end-of-text token"
    docs, cur = [], []
    for t in ids:
        if t == EOT:
            docs.append(cur)
            cur = []
        else:
            cur.append(t)
    return docs


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A few hundred documents written by datasets' save_to_disk, as a user's local copy."""
    import datasets

    tmp = tmp_path_factory.mktemp("owt")
    texts = _documents(300)
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp / "saved"))
    return tmp, texts


@pytest.fixture(scope="module")
def prepared(saved):
    tmp, texts = saved
    before = sorted(p.name for p in (tmp / "saved").iterdir())
    out = tmp / "out"
    proc = _make_data(tmp, "--source", str(tmp / "saved"), "--path", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in (tmp / "saved").iterdir()) == before, "the source is left as it was"
    return out, texts, proc


def test_prepares_a_saved_dataset_offline(prepared, saved):
    out, texts, proc = prepared
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.bin", "val.bin"]
    assert "documents tokenized" in proc.stdout and "tokens written" in proc.stdout
    for f in ("train.bin", "val.bin"):
        assert (out / f).stat().st_size % 2 == 0
    train = np.fromfile(out / "train.bin", dtype=np.uint16)
    val = np.fromfile(out / "val.bin", dtype=np.uint16)

    enc = gpt2_encoding()
    encoded = [enc.encode_ordinary(t) for t in texts]
    assert len(train) + len(val) == sum(len(e) + 1 for e in encoded)
    train_docs, val_docs = _split_documents(train), _split_documents(val)
    assert len(val_docs) >= 1 and len(train_docs) + len(val_docs) == len(texts)
    decoded = [enc.decode(d) for d in train_docs + val_docs]
    assert Counter(decoded) == Counter(texts)

    # nanoGPT's split: the same held-out documents as train_test_split(test_size=0.0005, seed=2357)
    import datasets

    ref = datasets.load_from_disk(str(saved[0] / "saved")).train_test_split(
        test_size=0.0005, seed=2357, shuffle=True)
    assert [enc.decode(d) for d in val_docs] == ref["test"]["text"][:]
    assert [enc.decode(d) for d in train_docs] == ref["train"]["text"][:]

    meta = json.loads((out / "meta.json").read_text())
    assert meta["name"] == "openwebtext" and meta["tokenizer"] == "gpt2"
    assert meta["vocab_size"] == 50304 and meta["dtype"] == "uint16" and meta["eot_token"] == EOT
    assert meta["train_tokens"] == len(train) and meta["val_tokens"] == len(val)
    assert meta["documents"] == len(texts)
    assert (meta["train_documents"], meta["val_documents"]) == (len(train_docs), len(val_docs))
    assert meta["source"] == str((saved[0] / "saved").resolve())


def test_prepared_folder_opens_for_training(prepared):
    out, _, _ = prepared
    data = open_data(name="openwebtext", path=str(out), vocab_size=50304, seq_len=16)
    assert data.vocab_size == 50304
    assert len(data.train) == json.loads((out / "meta.json").read_text())["train_tokens"]
    assert len(data.val) >= 18


def test_tiny_dataset_dict_holds_out_one_document(tmp_path):
    import datasets

    texts = _documents(3, seed=1)
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts})}).save_to_disk(
        str(tmp_path / "saved"))
    proc = _make_data(tmp_path, "--source", str(tmp_path / "saved"), "--path", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert (meta["train_documents"], meta["val_documents"]) == (2, 1)
    val = np.fromfile(tmp_path / "out" / "val.bin", dtype=np.uint16)
    assert gpt2_encoding().decode(_split_documents(val)[0]) in texts


def _single_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_offline_without_a_source_says_how_to_give_one(tmp_path):
    out = tmp_path / "out"
    line = _single_error_line(_make_data(tmp_path, "--path", str(out)))
    assert "source=" in line and "save_to_disk" in line
    assert not out.exists()


def test_missing_datasets_package_says_how_to_install_it(tmp_path):
    out = tmp_path / "out"
    code = ("import sys; sys.modules['datasets'] = None\n"
            "from runners.data import main\n"
            f"main(['openwebtext', '--path', {str(out)!r}])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_offline_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    line = _single_error_line(proc)
    assert "make data name=openwebtext" in line and ".[data]" in line
    assert not out.exists()


def test_bad_source_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for source in (tmp_path / "missing", tmp_path / "empty"):
        line = _single_error_line(_make_data(tmp_path, "--source", str(source),
                                             "--path", str(tmp_path / "out")))
        assert str(source) in line
        assert not (tmp_path / "out").exists()
