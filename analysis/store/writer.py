"""Buffers per-batch results and commits them as units: part k of every table holds files k*U .. (k+1)*U - 1.

Rows arrive in file order (the DataLoader keeps order). A unit is flushed as soon as all of its files have been
seen, so memory is bounded by one unit plus one batch, and each part file appears whole (temp file, rename).
A shard does every N-th unit: `units` lists its (number, files) in order, so part numbers stay global. A unit
commits as: activation parts, the predictions part, then the unit's manifest (analysis/store/manifest.py), which is
what says that the unit is done; a kill anywhere before it costs that unit and nothing else.

`commit_in_background()` moves the commits onto one thread (analysis/store/background.py) with a queue of one unit:
the same files in the same order, one unit at a time, the first failure raised in the caller at its next `add` or at
`close`, and nothing begun after a stop request or a failure. Memory: up to three units (one filled, one queued,
one being written) instead of one.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from analysis.store import contract, manifest, tables
from analysis.store.background import BackgroundWorker
from analysis.store.crashpoints import crash_point
from analysis.store.layout import GRADCAM, ValueBlock, ValueLayout


@dataclass
class _Pending:
    rows: dict[str, list[Any]]  # prediction columns for the files seen so far
    ok_ids: list[str] = field(default_factory=list)  # image ids of the ok images among them
    n_ok_per_file: list[int] = field(default_factory=list)  # 1 if that file was ok: splits activations at units
    acts: list[np.ndarray] = field(default_factory=list)  # (B_ok, values' width) per batch


@dataclass(frozen=True)
class _Unit:
    """One unit's rows, cut from what the writer holds: what a commit writes."""

    number: int
    rows: dict[str, list[Any]]  # prediction columns of its n_files files
    ok_ids: list[str]
    acts: list[np.ndarray]  # its ok images' values, in pieces: concatenated by the commit, off the main thread


@dataclass(frozen=True)
class UnitSchemas:
    """The schema of every table a unit writes, each carrying the run's metadata (every part file's key-value
    metadata): the predictions', and one per block of values (with its layer, and its class for contributions)."""

    predictions: pa.Schema
    values: Mapping[ValueBlock, pa.Schema]

    @classmethod
    def make(cls, classes: Sequence[str], imagenet: bool, values: ValueLayout, meta: Mapping[str, Any]) -> UnitSchemas:
        """classes, imagenet: the predictions' logit and probability columns, and the ImageNet top-1 columns."""
        schemas = {}
        for block in values.blocks:
            extra = {"layer": block.layer} if block.cls is None else {"layer": block.layer, "class": block.cls}
            schemas[block] = contract.with_metadata(make_block_schema(block, values), {**meta, **extra})
        return cls(contract.with_metadata(contract.prediction_schema(classes, imagenet), meta), schemas)


def make_block_schema(block: ValueBlock, values: ValueLayout) -> pa.Schema:
    """The columns of a block's table: float32 c0.. (means, maxima, contributions), the peaks' integers c0.., or
    float32 g0.. (a Grad-CAM)."""
    if block.kind == contract.STAT_PEAK:
        h, w = values.peak_grid[block.layer]
        return contract.activation_schema(block.width, contract.peak_type(h * w))
    if block.kind == GRADCAM:
        return contract.activation_schema(block.width, column=contract.gradcam_column)
    return contract.activation_schema(block.width)


class UnitWriter:
    def __init__(
        self,
        out: str | os.PathLike,
        values: ValueLayout,
        schemas: UnitSchemas,
        unit_size: int,
        units: Iterable[tuple[int, int]] | None = None,
        stamp: Mapping[str, Any] | None = None,
    ):
        """values: the columns of the activations `add` takes, and the tables they go to.
        units: (unit number, files) in the order they arrive; None: units 0, 1, 2, ... of unit_size files.
        stamp: fields written into every unit manifest (the run's identity digest, shard, device, ...)."""
        self.out = Path(out)
        self.values = values
        self.schemas = schemas
        self.unit_size = unit_size
        self._planned = units is not None
        self._plan = iter(units) if units is not None else ((k, unit_size) for k in itertools.count())
        self._next = next(self._plan, None)  # (number, files) of the unit being filled
        self._stamp = {"host": socket.gethostname(), "pid": os.getpid(), **(stamp or {})}
        self._t_unit = time.perf_counter()
        self.unit = 0  # units committed by this writer
        self._pending = self._empty()
        self._background: BackgroundWorker[_Unit] | None = None
        self._should_stop: Callable[[], bool] = lambda: False

    def commit_in_background(self, should_stop: Callable[[], bool] | None = None) -> UnitWriter:
        """From now on units are committed on a background thread while `add` returns at once (it waits only when
        a unit is already queued behind the one being written). should_stop: asked before each unit is begun; yes
        drops it (and every unit after it), so a stop request finishes the unit being written and no other."""
        self._should_stop = should_stop or self._should_stop
        self._background = BackgroundWorker(self._commit, "unit-writer", depth=1, should_stop=self._should_stop)
        return self

    def __enter__(self) -> UnitWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Leaving on an error (or without `close`): units not begun are dropped, the one being written finishes."""
        self.abandon(raise_error=exc_type is None)

    @property
    def at_unit_boundary(self) -> bool:
        """No file of an unfinished unit is held: stopping now loses nothing."""
        return not self._pending.n_ok_per_file

    def _empty(self) -> _Pending:
        return _Pending(rows={f.name: [] for f in self.schemas.predictions})

    def add(self, rows: Mapping[str, Sequence[Any]], ok: Sequence[bool], acts: np.ndarray) -> None:
        """One batch: prediction columns for every file, ok flags, and (B_ok, width) activations laid out by
        `values` (analysis/store/layout.py)."""
        if acts.shape[1] != self.values.width:
            raise ValueError(f"activations have {acts.shape[1]} columns, expected {self.values.width}")
        p = self._pending
        for name, values in rows.items():
            p.rows[name].extend(values)
        p.ok_ids.extend(i for i, good in zip(rows[contract.IMAGE_ID], ok) if good)
        p.n_ok_per_file.extend(int(good) for good in ok)
        if len(acts):
            p.acts.append(acts)
        while self._next is not None and len(self._pending.n_ok_per_file) >= self._next[1]:
            self._flush(self._next[1])

    def close(self) -> None:
        """Commit what is held: the last unit of a plain run. In a planned run the units must have been filled."""
        held = len(self._pending.n_ok_per_file)
        if held and self._planned:
            raise ValueError(
                f"{held} files held at close: unit {self._next and self._next[0]} was planned with "
                f"{self._next and self._next[1]} files"
            )
        if held:
            self._flush(held)
        if self._background is not None:
            self._background.close()

    def abandon(self, raise_error: bool = True) -> None:
        """Stop without committing what is not begun: the files held (less than a unit) and the units queued are
        dropped (a rerun redoes them); a unit being written in the background finishes first. raise_error: raise
        that unit's failure, if it failed."""
        self._pending = self._empty()
        if self._background is not None:
            self._background.close(cancel=True, raise_error=raise_error)

    def _flush(self, n_files: int) -> None:
        """Cut the first n_files files held into a unit and commit it, here or on the background thread."""
        p = self._pending
        n_ok = sum(p.n_ok_per_file[:n_files])
        acts, rest = _split_rows(p.acts, n_ok)
        unit = _Unit(self._next[0], {k: v[:n_files] for k, v in p.rows.items()}, p.ok_ids[:n_ok], acts)
        self._pending = _Pending(
            rows={k: v[n_files:] for k, v in p.rows.items()},
            ok_ids=p.ok_ids[n_ok:],
            n_ok_per_file=p.n_ok_per_file[n_files:],
            acts=rest,
        )
        self._next = next(self._plan, None)
        if self._background is not None:
            self._background.submit(unit)
        elif not self._should_stop():
            self._commit(unit)

    def _commit(self, unit: _Unit) -> None:
        """Activation parts, the predictions part, then the unit's manifest: the manifest says the unit is whole."""
        number, rows = unit.number, unit.rows
        acts = np.concatenate(unit.acts) if unit.acts else np.zeros((0, self.values.width), np.float32)
        name = contract.part_name(number)
        parts = []
        # Activations first, predictions, then the unit's manifest: the manifest says the unit is whole.
        for block in self.values.tables():
            table = tables.make_activation_table(unit.ok_ids, acts[:, block.columns], self.schemas.values[block])
            parts.append(self._write(table, block.folder(self.out) / name))
            if len(parts) == 1:
                crash_point(f"mid-unit:{number}")
        table = tables.make_prediction_table(rows, self.schemas.predictions)
        parts.append(self._write(table, self.out / contract.PREDICTIONS / name))
        crash_point(f"before-manifest:{number}")
        ids = rows[contract.IMAGE_ID]
        n_files = len(ids)
        seconds = time.perf_counter() - self._t_unit
        manifest.write_unit_manifest(
            self.out,
            number,
            {
                **self._stamp,
                "unit": number,
                "first_id": ids[0],
                "last_id": ids[-1],
                "ids_sha256": manifest.compute_ids_digest(ids),
                "counts": manifest.count_rows(rows, n_files),
                "parts": parts,
                "seconds": round(seconds, 3),
                "finished": manifest.now(),
            },
        )
        crash_point(f"after-unit:{number}")
        self.unit += 1
        self._t_unit = time.perf_counter()

    def _write(self, table: pa.Table, path: Path) -> str:
        tables.write_parquet_atomic(table, path)
        return path.relative_to(self.out).as_posix()


def _split_rows(pieces: list[np.ndarray], n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Arrays stacked along rows -> (the pieces of the first n rows, the pieces of the rest), without copying."""
    head: list[np.ndarray] = []
    for i, a in enumerate(pieces):
        if n <= 0:
            return head, pieces[i:]
        if len(a) <= n:
            head.append(a)
            n -= len(a)
        else:
            return head + [a[:n]], [a[n:], *pieces[i + 1 :]]
    return head, []
