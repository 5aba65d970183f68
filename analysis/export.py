"""A results folder -> two flat tables, for pandas, R, DuckDB or a spreadsheet.

    python -m analysis.export results/<suite> [--format csv|parquet] [--out DIR]

Writes `runs.<ext>` (one row per run: analysis.load.load_runs's runs table) and `metrics.<ext>`
(one row per run and logged step) into DIR (default: results/<suite>/export/), each replaced
atomically, and prints their paths and row counts. Cells holding nested values (the run's
config, package versions, list-valued options such as betas) are written as JSON text, and a
column mixing text with other values as text, the same way in CSV and Parquet, so both formats
read back to the same table. Problems are one `error:` line on stderr, exit status 2, and
nothing is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

from .load import ResultsError, load_runs

FORMATS = ("csv", "parquet")


def _json(value) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, sort_keys=True, default=str)


def _is_nested(value) -> bool:
    return isinstance(value, (dict, list, tuple))


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def flat(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with every cell a scalar: nested values as JSON text; a column that mixes text or
    booleans with other values (which Parquet cannot type) as text throughout, JSON for the
    non-text cells."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype != object:
            continue
        values = out[col]
        if values.map(_is_nested).any():
            values = values.map(lambda v: _json(v) if _is_nested(v) else v)
        kinds = {type(v) for v in values if not _missing(v)}
        if len(kinds) > 1 and (str in kinds or bool in kinds):
            values = values.map(lambda v: v if _missing(v) or isinstance(v, str) else _json(v))
        out[col] = values
    return out


def _write(df: pd.DataFrame, path: Path, fmt: str) -> None:
    """Write `df` to a temp file beside `path`; the caller renames it into place."""
    if fmt == "csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False, engine="pyarrow")


def export(folder: str | Path, fmt: str = "csv", out: str | Path | None = None) -> dict[Path, int]:
    """Write runs.<fmt> and metrics.<fmt> for a results folder; returns {path: row count}.
    Raises ResultsError (nothing written) when the folder cannot be read or written to."""
    if fmt not in FORMATS:
        raise ResultsError(f"unknown format {fmt!r}: choose {' or '.join(FORMATS)}")
    folder = Path(folder)
    runs, metrics = load_runs(folder)
    tables = {f"runs.{fmt}": flat(runs), f"metrics.{fmt}": flat(metrics)}
    out = folder / "export" if out is None else Path(out)
    if out.exists() and not out.is_dir():
        raise ResultsError(f"--out {out}: exists and is not a folder")
    created = not out.exists()
    temps: dict[Path, Path] = {}
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, df in tables.items():
            path = out / name
            tmp = temps[path] = out / f".{name}.tmp{os.getpid()}"
            _write(df, tmp, fmt)
        for path, tmp in temps.items():  # both tables are whole before either replaces its file
            os.replace(tmp, path)
    except (OSError, ValueError, ImportError) as e:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        if created:
            try:
                out.rmdir()
            except OSError:
                pass
        raise ResultsError(f"{out}: cannot write the {fmt} files ({e})") from None
    return {out / name: len(df) for name, df in tables.items()}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every other problem
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="python -m analysis.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", help="results/<suite>")
    ap.add_argument("--format", default="csv", choices=FORMATS, help="csv (default) or parquet")
    ap.add_argument("--out", default=None, help="folder for the two files (default: <folder>/export)")
    args = ap.parse_args(argv)
    try:
        written = export(args.folder, args.format, args.out)
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path, n in written.items():
        print(f"wrote {path} ({n:,} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
