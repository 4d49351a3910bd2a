"""The Parquet contract: table and column names, schemas, atomic part writers, run metadata.

Every column name of every table is defined here and only here. Each table is a directory of part files, so
`pd.read_parquet(dir)` reads it whole; part k of every table covers the same unit of the sorted file list.
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
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.names import make_display

PREDICTIONS = "predictions"
ACTIVATIONS = "activations"          # channel means, one directory per layer
ACTIVATIONS_MAX = "activations_max"  # channel maxima, one directory per layer
RUN_JSON = "run.json"
CONFIG_YAML = "config.yaml"
METADATA_KEY = b"cnn_blackbox"
FORMAT_VERSION = 1

# predictions columns
IMAGE_ID = "image_id"
SPLIT = "split"
LABEL = "label"
STATUS = "status"
ERROR = "error"
WIDTH = "width"
HEIGHT = "height"
FORMAT = "format"
PRED = "pred"
CONFIDENCE = "confidence"
CORRECT = "correct"
IMAGENET_TOP1 = "imagenet_top1"
IMAGENET_TOP1_INDEX = "imagenet_top1_index"
STATUS_OK = "ok"
STATUS_ERROR = "error"


def logit_column(cls: str) -> str:
    return f"logit_{cls}"


def prob_column(cls: str) -> str:
    return f"prob_{cls}"


def channel_column(c: int) -> str:
    return f"c{c}"


def channel_columns(n: int) -> list[str]:
    return [channel_column(c) for c in range(n)]


def activation_dir(out: str | os.PathLike, layer: str, stat: str = "mean") -> Path:
    """OUT/activations/<layer> (stat='mean') or OUT/activations_max/<layer> (stat='max')."""
    if stat not in ("mean", "max"):
        raise ValueError(f"stat must be 'mean' or 'max', got {stat!r}")
    return Path(out) / (ACTIVATIONS if stat == "mean" else ACTIVATIONS_MAX) / layer


def part_name(unit: int) -> str:
    return f"part-{unit:05d}.parquet"


def prediction_schema(classes: Sequence[str], imagenet: bool) -> pa.Schema:
    fields = [
        pa.field(IMAGE_ID, pa.string(), nullable=False),
        pa.field(SPLIT, pa.string()),
        pa.field(LABEL, pa.string()),
        pa.field(STATUS, pa.string(), nullable=False),
        pa.field(ERROR, pa.string()),
        pa.field(WIDTH, pa.int32()),
        pa.field(HEIGHT, pa.int32()),
        pa.field(FORMAT, pa.string()),
    ]
    fields += [pa.field(logit_column(c), pa.float32()) for c in classes]
    fields += [pa.field(prob_column(c), pa.float32()) for c in classes]
    fields += [pa.field(PRED, pa.string()), pa.field(CONFIDENCE, pa.float32()), pa.field(CORRECT, pa.bool_())]
    if imagenet:
        fields += [pa.field(IMAGENET_TOP1, pa.string()), pa.field(IMAGENET_TOP1_INDEX, pa.int16())]
    return pa.schema(fields)


def activation_schema(channels: int) -> pa.Schema:
    return pa.schema([pa.field(IMAGE_ID, pa.string(), nullable=False)]
                     + [pa.field(c, pa.float32(), nullable=False) for c in channel_columns(channels)])


def with_metadata(schema: pa.Schema, meta: Mapping[str, Any]) -> pa.Schema:
    return schema.with_metadata({METADATA_KEY: encode_json(meta, indent=None)})


def _displayable(obj: Any) -> Any:
    if isinstance(obj, str):
        return make_display(obj)
    if isinstance(obj, Mapping):
        return {_displayable(k): _displayable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_displayable(v) for v in obj]
    return obj


def encode_json(obj: Any, indent: int | None = 2) -> bytes:
    """JSON that any reader takes: a path with bytes that are not UTF-8 is written as analysis.names shows it, never
    as a lone surrogate (Python reads those back, DuckDB and jq do not)."""
    text = json.dumps(_displayable(obj), indent=indent, sort_keys=True, default=str)
    return (text + "\n").encode() if indent is not None else text.encode()


class WriteError(Exception):
    """An output could not be written (no space, no permission, read-only, ...); the message is one line."""


@contextlib.contextmanager
def reporting_write_errors(path: str | os.PathLike):
    """OSError while writing `path` -> WriteError naming the file and the cause (ENOSPC, EACCES, ...)."""
    try:
        yield
    except OSError as e:
        code = errno.errorcode.get(e.errno or 0, "")
        raise WriteError(f"cannot write {make_display(path)!r}: {e.strerror or e}"
                         + (f" [{code}]" if code else "")) from e


def make_activation_table(image_ids: Sequence[str], values: np.ndarray, schema: pa.Schema) -> pa.Table:
    """(N, C) float32 -> table with image_id, c0..c{C-1}; columns are zero-copy slices of a Fortran-order copy."""
    values = np.asfortranarray(values, dtype=np.float32)  # (N, C), each column contiguous
    arrays = [pa.array(list(image_ids), pa.string())] + [pa.array(values[:, c]) for c in range(values.shape[1])]
    return pa.Table.from_arrays(arrays, schema=schema)


def make_prediction_table(rows: Mapping[str, Sequence[Any]], schema: pa.Schema) -> pa.Table:
    """Columns given as sequences (None for null) -> table in the schema's order and types."""
    missing = [f.name for f in schema if f.name not in rows]
    if missing:
        raise KeyError(f"prediction columns missing: {missing}")
    return pa.Table.from_arrays([pa.array(rows[f.name], f.type) for f in schema], schema=schema)


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
    path = Path(out) / RUN_JSON
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def list_parts(table_dir: str | os.PathLike) -> list[Path]:
    """The committed part files of one table directory, in unit order (temp files are hidden, so skipped)."""
    return sorted(p for p in Path(table_dir).glob("part-*.parquet"))


def iter_parquet_batches(table_dir: str | os.PathLike, columns: Iterable[str] | None = None,
                         batch_size: int = 65536):
    """Stream record batches over all parts of a table: memory bounded by batch_size rows."""
    cols = list(columns) if columns is not None else None
    for part in list_parts(table_dir):
        yield from pq.ParquetFile(part).iter_batches(batch_size=batch_size, columns=cols)
