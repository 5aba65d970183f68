"""Checkpoints: everything needed to continue a run bit for bit, trusted only once verified.

Model and optimizer state, every RNG, and the run's progress counters. The data position and
the lr schedule are pure functions of the step, so the step is all they need.

A run keeps two checkpoints, the newest and the one before it (a finished run its final one).
`ckpt/manifest.json` lists them, newest first, each with its step, its progress counters and
what it looks like on disk. A resume takes the newest one that is whole on disk and whose
metrics rows are intact, else the one before, else starts again from step 0, and says so in one
warning line.

One process or DDP: rank 0 writes `ckpt/state.pt`, and the checkpoint before it becomes
`ckpt/previous.pt`. Saving step N: the file is written under a temporary name (its size and
CRC-32 computed as it is written) and fsynced; the manifest lists N and the current one; then
state.pt becomes previous.pt (dropping the one before) and the temporary file becomes state.pt.
A file is matched to its manifest entry by size and checksum, not by name, so a kill between any
two of these steps leaves both listed checkpoints findable, and a corrupt or cut file is never
loaded. Checking the checksum reads the file once more at a resume (about 3 GB/s).

FSDP2: every rank writes its own shards with torch.distributed.checkpoint into
`ckpt/dcp-<step>/`, with rank 0's RNG state; rank 0 then lists the folder's files and sizes in
the manifest (the commit point) and removes older folders. DCP writes those files itself, so
they are checked by size.
"""

from __future__ import annotations

import random
import shutil
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from runners.parallel import World
from runners.run_folder import RunError, RunFolder, atomic_file, disk_full, replace, temp_file, temp_path

STATE_FILE = "state.pt"
PREVIOUS_FILE = "previous.pt"
RNG_FILE = "rng.pt"  # in each FSDP2 checkpoint folder
KEEP = 2  # checkpoints a run keeps: the newest, and the one before it until the next is whole


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tensor_bytes(state) -> int:
    """The bytes of the tensors in a state, each storage once (a tied weight is saved once):
    about what its checkpoint file takes."""
    from torch.distributed.tensor import DTensor

    storages = {}

    def walk(obj):
        if isinstance(obj, DTensor):
            obj = obj.to_local()
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)

    walk(state)
    return sum(storages.values())


class _Checksummed:
    """A file being written, with the size and CRC-32 of what went into it."""

    def __init__(self, f):
        self._f, self.size, self.crc32 = f, 0, 0

    def write(self, data) -> int:
        view = memoryview(data)
        self.crc32 = zlib.crc32(view, self.crc32)
        self.size += view.nbytes
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc


# ---- save --------------------------------------------------------------------------------------

def save(folder: RunFolder, model, opt, progress: dict, world: World = World(), sharded=False) -> None:
    if sharded:
        _save_sharded(folder, model, opt, progress, world)
    elif world.is_main:
        _save_file(folder, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                            "progress": progress, "rng": rng_state()})
    if world.distributed:
        dist.barrier()


def _save_file(folder: RunFolder, state: dict) -> None:
    current, previous = folder.ckpt_dir / STATE_FILE, folder.ckpt_dir / PREVIOUS_FILE
    # Streamed to the file: a buffer in memory first would double the host memory a large
    # model's checkpoint takes (weights + optimizer state, 17 GiB for gpt2_xl with AdamW).
    with temp_file(current, needed=_tensor_bytes(state)) as f:
        written = _Checksummed(f)
        torch.save(state, written)
    tmp = temp_path(current)
    if tmp.stat().st_size != written.size:
        raise RunError(f"{tmp} holds {tmp.stat().st_size:,} bytes after {written.size:,} were written to it")
    progress = state["progress"]
    entry = {"step": progress["step"], "size": written.size, "crc32": written.crc32, "progress": progress}
    # Listed before any file moves: from here on, whichever files a kill leaves, each is listed.
    # A final checkpoint is listed as final only once it is in place.
    unfinished = {**entry, "progress": {k: v for k, v in progress.items() if k != "final"}}
    folder.write_checkpoints([unfinished, *(folder.checkpoints() or [])][:KEEP])
    if current.exists():
        replace(current, previous)
    replace(tmp, current)
    if "final" in progress:  # a finished run keeps its final checkpoint only
        folder.write_checkpoints([entry])
        previous.unlink(missing_ok=True)


def _save_sharded(folder: RunFolder, model, opt, progress: dict, world: World) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    # A new folder each time (agreed by all ranks): a resume may save again at the step it
    # resumed from, and the folder listed in the manifest must stay as it is until replaced.
    name = [_free_name(folder.ckpt_dir, f"dcp-{progress['step']}") if world.is_main else None]
    dist.broadcast_object_list(name, src=0)
    target = folder.ckpt_dir / name[0]
    model_sd, optim_sd = get_state_dict(model, opt)
    try:
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(target))
    except Exception as e:
        full = disk_full(target, _tensor_bytes((model_sd, optim_sd)), e)
        if full is not None:
            raise full from None
        raise
    dist.barrier()
    if world.is_main:
        with atomic_file(target / RNG_FILE) as f:
            torch.save(rng_state(), f)
        files = {p.relative_to(target).as_posix(): p.stat().st_size for p in target.rglob("*") if p.is_file()}
        keep = 1 if "final" in progress else KEEP  # a finished run keeps its final checkpoint only
        entries = [{"step": progress["step"], "dir": target.name, "files": files, "progress": progress},
                   *(folder.checkpoints() or [])][:keep]
        folder.write_checkpoints(entries)
        _remove_unlisted_folders(folder, entries)


def _free_name(ckpt_dir: Path, name: str) -> str:
    n, candidate = 1, name
    while (ckpt_dir / candidate).exists():
        n, candidate = n + 1, f"{name}-{n + 1}"
    return candidate


def _remove_unlisted_folders(folder: RunFolder, entries: list[dict]) -> None:
    listed = {e.get("dir") for e in entries}
    for d in folder.ckpt_dir.glob("dcp-*"):
        if d.name not in listed:
            shutil.rmtree(d, ignore_errors=True)


# ---- load --------------------------------------------------------------------------------------

def load(folder: RunFolder, model, opt, world: World = World(), sharded=False,
         usable=lambda progress: None) -> tuple[dict | None, str | None]:
    """Restore the newest checkpoint that is whole on disk and that `usable(progress)` accepts
    (it returns None, or why not). Returns its progress counters, or None to start at step 0,
    and a warning for the checkpoints passed over (None when there were none).

    Rank 0 chooses (it holds the run's lock, and only it reads every file) and every rank
    restores its choice."""
    choice = _choose(folder, sharded, usable) if world.is_main else None
    if world.distributed:
        shared = [choice]
        dist.broadcast_object_list(shared, src=0)
        choice = shared[0]
    entry, where, warning = choice
    if entry is None:
        if world.is_main and warning:
            folder.write_checkpoints([])  # none usable: the next saves start a new list
        return None, warning
    restore(model, opt, Path(where), sharded)
    return entry["progress"], warning


def restore(model, opt, where: Path, sharded: bool) -> None:
    """Load a checkpoint's file (one process, DDP) or folder (FSDP2) into `model` and `opt`, and
    its RNG state into this process."""
    if sharded:
        _restore_sharded(model, opt, where)
    else:
        state = torch.load(where, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])


def damage(where: Path, entry: dict) -> str | None:
    """Why the checkpoint file or folder at `where` is not the one its manifest `entry` lists (a
    file by its size and CRC-32, an FSDP2 folder by its files' sizes), or None when it is."""
    if "dir" in entry:
        for name, size in entry["files"].items():
            f = where / name
            if not f.is_file() or f.stat().st_size != size:
                return f"{where.name}/{name} is missing or not its {size:,} bytes"
        return None
    if not where.is_file() or where.stat().st_size != entry["size"] or _crc32(where) != entry["crc32"]:
        return f"{where.name} is missing, or its size or CRC-32 is not its manifest's"
    return None


def _choose(folder: RunFolder, sharded: bool, usable) -> tuple[dict | None, str | None, str | None]:
    """(the manifest entry to resume, where its file or folder is, the warning) or (None, None,
    warning) to start at step 0."""
    entries = folder.checkpoints()
    rejected: list[tuple[str, int, str]] = []  # (kind, step, why)
    if entries is None:
        entries = [] if sharded else _unlisted_files(folder, rejected)
        if entries:
            rejected.append(("note", None, f"ckpt/{folder.manifest_path.name} is missing: its checkpoints "
                                           "are trusted as they load, without a checksum"))
    if sharded:
        _remove_unlisted_folders(folder, entries)  # a killed save's folder
    crcs: dict[Path, int] = {}
    for entry in entries:
        why = usable(entry["progress"])
        if why is not None:
            rejected.append(("rows", entry["step"], why))
            continue
        where, damage = _locate_folder(folder, entry) if sharded else _locate_file(folder, entry, crcs)
        if where is None:
            rejected.append(("damaged", entry["step"], damage))
            continue
        if any(kind != "note" for kind, _, _ in rejected) and "path" not in entry:
            where = _keep_only(folder, entry, where)
        return entry, str(where), _warning(rejected, entry["step"])
    return None, None, _warning(rejected, None)


def _keep_only(folder: RunFolder, entry: dict, where: Path) -> Path:
    """After a fallback, the checkpoint resumed from is the only one listed, and (one process or
    DDP) in state.pt: the next save then keeps it as the one before, not the damaged one."""
    folder.write_checkpoints([entry])
    if "dir" in entry:
        _remove_unlisted_folders(folder, [entry])
    elif where.name != STATE_FILE:
        replace(where, folder.ckpt_dir / STATE_FILE)
        where = folder.ckpt_dir / STATE_FILE
    return where


def _unlisted_files(folder: RunFolder, rejected: list) -> list[dict]:
    """Entries for checkpoint files without a manifest (written before checkpoints were
    verified, or the manifest was deleted): read to learn their steps, trusted if they load."""
    entries = []
    for path in (folder.ckpt_dir / STATE_FILE, folder.ckpt_dir / PREVIOUS_FILE):
        if not path.exists():
            continue
        try:
            progress = torch.load(path, map_location="cpu", weights_only=False)["progress"]
        except Exception as e:
            rejected.append(("damaged", None, f"{path.name} cannot be read ({type(e).__name__})"))
            continue
        entries.append({"step": progress["step"], "progress": progress, "path": str(path)})
    return sorted(entries, key=lambda e: -e["step"])


def _locate_file(folder: RunFolder, entry: dict, crcs: dict) -> tuple[Path | None, str | None]:
    if "path" in entry:  # an unlisted file, already read
        return Path(entry["path"]), None
    if "crc32" not in entry:
        return None, "it was written by FSDP2 (train.parallel=fsdp)"
    for path in (folder.ckpt_dir / STATE_FILE, folder.ckpt_dir / PREVIOUS_FILE):
        if path.exists() and path.stat().st_size == entry["size"]:
            crcs.setdefault(path, _crc32(path))
            if crcs[path] == entry["crc32"]:
                return path, None
    return None, f"no file in ckpt/ has its {entry['size']:,} bytes and CRC-32"


def _locate_folder(folder: RunFolder, entry: dict) -> tuple[Path | None, str | None]:
    if "dir" not in entry:
        return None, "it was written by one process or DDP, not FSDP2"
    where = folder.ckpt_dir / entry["dir"]
    why = damage(where, entry)
    return (None, f"ckpt/{why}") if why else (where, None)


def _warning(rejected: list[tuple[str, int, str]], step: int | None) -> str | None:
    if not rejected:
        return None
    parts, rows = [], {}
    for kind, at, why in rejected:
        if kind == "rows":  # one reason, usually shared by both checkpoints
            rows.setdefault(why, []).append(str(at))
        elif kind == "damaged" and at is not None:
            parts.append(f"the checkpoint at step {at} is missing or damaged ({why})")
        else:
            parts.append(why)
    for why, steps in rows.items():
        which = (f"checkpoint at step {steps[0]}" if len(steps) == 1
                 else f"checkpoints at steps {', '.join(steps)}")
        parts.append(f"{why}: the rows of the {which} are not all there")
    then = (f"resuming from the checkpoint at step {step}" if step is not None
            else "starting again from step 0")
    return "; ".join(parts) + "; " + then


def _restore_sharded(model, opt, where: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, opt)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(where))
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    set_rng_state(torch.load(where / RNG_FILE, weights_only=False))
