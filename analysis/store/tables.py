"""Reading and writing the tables: atomic writes (temp file, fsync, rename) that fail in one line, part listing,
streamed reads, run.json, and the report's tables. What the tables hold is analysis.store.contract's.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.data.names import make_display
from analysis.store import contract
from analysis.store.contract import encode_json


def make_activation_table(image_ids: Sequence[str], values: np.ndarray, schema: pa.Schema) -> pa.Table:
    """(N, C) -> table with image_id, c0..c{C-1} in the schema's type; columns are zero-copy slices of a Fortran-order
    copy (float32 peaks are exact integers: cast as they are)."""
    kind = schema.field(1).type.to_pandas_dtype() if len(schema) > 1 else np.float32
    values = np.asfortranarray(values, dtype=kind)  # (N, C), each column contiguous
    arrays = [pa.array(list(image_ids), pa.string())] + [pa.array(values[:, c]) for c in range(values.shape[1])]
    return pa.Table.from_arrays(arrays, schema=schema)


def make_prediction_table(rows: Mapping[str, Sequence[Any]], schema: pa.Schema) -> pa.Table:
    """Columns given as sequences (None for null) -> table in the schema's order and types."""
    missing = [f.name for f in schema if f.name not in rows]
    if missing:
        raise KeyError(f"prediction columns missing: {missing}")
    return pa.Table.from_arrays([pa.array(rows[f.name], f.type) for f in schema], schema=schema)


class WriteError(Exception):
    """An output could not be written (no space, no permission, read-only, ...); the message is one line."""


@contextlib.contextmanager
def reporting_write_errors(path: str | os.PathLike):
    """OSError while writing `path` -> WriteError naming the file and the cause (ENOSPC, EACCES, ...)."""
    try:
        yield
    except OSError as e:
        code = errno.errorcode.get(e.errno or 0, "")
        raise WriteError(
            f"cannot write {make_display(path)!r}: {e.strerror or e}" + (f" [{code}]" if code else "")
        ) from e


_FILE_MODE = 0o644  # mkstemp makes 0600 files; outputs are meant to be read by others (a web server, a team)


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`; WriteError when it cannot."""
    path = Path(path)
    with reporting_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, _FILE_MODE)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def write_parquet_atomic(table: pa.Table, path: str | os.PathLike) -> None:
    """A Parquet file that appears only complete: temp file (hidden, so readers skip it), fsync, rename;
    WriteError when it cannot be written (the temp file is removed)."""
    path = Path(path)
    with reporting_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, _FILE_MODE)
        os.close(fd)
        try:
            pq.write_table(table, tmp, compression="snappy")
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def write_json_atomic(obj: Any, path: str | os.PathLike) -> None:
    write_bytes_atomic(encode_json(obj), path)


def read_run_json(out: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a complete run; FileNotFoundError when the run is missing or incomplete."""
    path = Path(out) / contract.RUN_JSON
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def list_parts(table_dir: str | os.PathLike) -> list[Path]:
    """The committed part files of one table directory, in unit order (temp files are hidden, so skipped)."""
    return sorted(p for p in Path(table_dir).glob("part-*.parquet"))


def iter_parquet_batches(table_dir: str | os.PathLike, columns: Iterable[str] | None = None, batch_size: int = 65536):
    """Stream record batches over all parts of a table: memory bounded by batch_size rows."""
    cols = list(columns) if columns is not None else None
    for part in list_parts(table_dir):
        yield from pq.ParquetFile(part).iter_batches(batch_size=batch_size, columns=cols)


def iter_channel_batches(table_dir: str | os.PathLike, batch_size: int = 8192):
    """(image ids (n,), values (n, C) float64) of a channel table (activations or attributions), batch by batch."""
    for batch in iter_parquet_batches(table_dir, batch_size=batch_size):
        ids = batch.column(0).to_numpy(zero_copy_only=False)
        yield (
            ids,
            np.stack([batch.column(j).to_numpy() for j in range(1, batch.num_columns)], axis=1).astype(np.float64),
        )


def report_dir(run: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    return Path(out) if out else Path(run) / contract.REPORT_DIR


def write_table(df: pd.DataFrame, schema: pa.Schema, path: str | os.PathLike, meta: dict | None = None) -> None:
    """The frame's columns of `schema`, in its order and types, written atomically; `meta` goes into the file's
    metadata (contract.METADATA_KEY, JSON)."""
    missing = [c for c in schema.names if c not in df.columns]
    if missing:
        raise KeyError(f"columns missing: {missing}")
    table = pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
    if meta is not None:
        table = table.replace_schema_metadata({contract.METADATA_KEY: encode_json(meta, indent=None)})
    write_parquet_atomic(table, path)


def read_predictions(run: str | os.PathLike, classes) -> pd.DataFrame:
    """The columns of OUT/predictions the report uses (a few per image: fine in memory for millions of rows); sha256
    and phash where the run has them (format 2 on, format 3 on)."""
    columns = [
        contract.IMAGE_ID,
        contract.LABEL,
        contract.STATUS,
        contract.ERROR,
        contract.PRED,
        contract.CONFIDENCE,
        contract.CORRECT,
    ] + [contract.prob_column(c) for c in classes]
    parts = list_parts(Path(run) / contract.PREDICTIONS)
    names = pq.read_schema(parts[0]).names if parts else []
    columns += [c for c in (contract.SHA256,) if c in names]
    frame = pd.read_parquet(Path(run) / contract.PREDICTIONS, columns=columns)
    if contract.PHASH in names:  # nullable Int64: with error rows numpy's int64 would become float64, losing bits
        frame[contract.PHASH] = pd.read_parquet(
            Path(run) / contract.PREDICTIONS, columns=[contract.PHASH], dtype_backend="numpy_nullable"
        )[contract.PHASH].array
    return frame
