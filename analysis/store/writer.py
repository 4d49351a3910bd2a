"""Buffers per-batch results and commits them as units: part k of every table holds files k*U .. (k+1)*U - 1.

Rows arrive in file order (the DataLoader keeps order). A unit is flushed as soon as all of its files have been
seen, so memory is bounded by one unit plus one batch, and each part file appears whole (temp file, rename).
A shard does every N-th unit: `units` lists its (number, files) in order, so part numbers stay global. A unit
commits as: activation parts, the predictions part, then the unit's manifest (analysis/store/manifest.py), which is
what says that the unit is done; a kill anywhere before it costs that unit and nothing else.
"""
from __future__ import annotations

import itertools
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from analysis.store import contract, tables
from analysis.store import manifest
from analysis.store.crashpoints import crash_point


@dataclass
class _Pending:
    rows: dict[str, list[Any]]                      # prediction columns for the files seen so far
    ok_ids: list[str] = field(default_factory=list)  # image ids of the ok images among them
    n_ok_per_file: list[int] = field(default_factory=list)  # 1 if that file was ok: splits activations at units
    acts: list[np.ndarray] = field(default_factory=list)    # (B_ok, sum of channels * 2) per batch


class UnitWriter:
    def __init__(self, out: str | os.PathLike, classes: Sequence[str], imagenet: bool,
                 layers: Mapping[str, int], unit_size: int, meta: Mapping[str, Any],
                 units: Iterable[tuple[int, int]] | None = None, stamp: Mapping[str, Any] | None = None,
                 attribution: Mapping[tuple[str, str], int] | None = None):
        """units: (unit number, files) in the order they arrive; None: units 0, 1, 2, ... of unit_size files.
        stamp: fields written into every unit manifest (the run's identity digest, shard, device, ...).
        attribution: {(class, layer): channels} of the contribution tables, in the order of their columns."""
        self.out = Path(out)
        self.layers = dict(layers)                  # name -> channels, in network order
        self.unit_size = unit_size
        self.pred_schema = contract.with_metadata(contract.prediction_schema(classes, imagenet), meta)
        self.act_schemas = {name: contract.with_metadata(contract.activation_schema(c), {**meta, "layer": name})
                            for name, c in self.layers.items()}
        offsets = np.cumsum([0] + list(self.layers.values()))
        self._mean_slices = {n: slice(offsets[i], offsets[i + 1]) for i, n in enumerate(self.layers)}
        total = int(offsets[-1])
        self._max_slices = {n: slice(total + s.start, total + s.stop) for n, s in self._mean_slices.items()}
        self.attribution = dict(attribution or {})
        self._attr_slices, start = {}, 2 * total
        for (cls, layer), c in self.attribution.items():
            self._attr_slices[(cls, layer)] = slice(start, start + c)
            start += c
        self._attr_schemas = {key: contract.with_metadata(contract.activation_schema(c), {
            **meta, "layer": key[1], "class": key[0]}) for key, c in self.attribution.items()}
        self._width = start
        self._planned = units is not None
        self._plan = iter(units) if units is not None else ((k, unit_size) for k in itertools.count())
        self._next = next(self._plan, None)           # (number, files) of the unit being filled
        self._stamp = {"host": socket.gethostname(), "pid": os.getpid(), **(stamp or {})}
        self._t_unit = time.perf_counter()
        self.unit = 0                                  # units committed by this writer
        self.files_written = 0
        self._pending = self._empty()

    @property
    def at_unit_boundary(self) -> bool:
        """No file of an unfinished unit is held: stopping now loses nothing."""
        return not self._pending.n_ok_per_file

    def _empty(self) -> _Pending:
        return _Pending(rows={f.name: [] for f in self.pred_schema})

    def add(self, rows: Mapping[str, Sequence[Any]], ok: Sequence[bool], acts: np.ndarray) -> None:
        """One batch: prediction columns for every file, ok flags, and (B_ok, width) activations laid out as
        [means of each layer in order, maxima of each layer in order, then each (class, layer)'s contributions]."""
        if acts.shape[1] != self._width:
            raise ValueError(f"activations have {acts.shape[1]} columns, expected {self._width}")
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
            raise ValueError(f"{held} files held at close: unit {self._next and self._next[0]} was planned with "
                             f"{self._next and self._next[1]} files")
        if held:
            self._flush(held)

    def _flush(self, n_files: int) -> None:
        p = self._pending
        number = self._next[0]
        n_ok = sum(p.n_ok_per_file[:n_files])
        acts = np.concatenate(p.acts) if p.acts else np.zeros((0, self._width), np.float32)
        name = contract.part_name(number)
        parts = []
        # Activations first, predictions, then the unit's manifest: the manifest says the unit is whole.
        for layer in self.layers:
            for stat, cols in (("mean", self._mean_slices[layer]), ("max", self._max_slices[layer])):
                table = contract.make_activation_table(p.ok_ids[:n_ok], acts[:n_ok, cols], self.act_schemas[layer])
                parts.append(self._write(table, contract.activation_dir(self.out, layer, stat) / name))
                if len(parts) == 1:
                    crash_point(f"mid-unit:{number}")
        for (cls, layer), cols in self._attr_slices.items():
            table = contract.make_activation_table(p.ok_ids[:n_ok], acts[:n_ok, cols], self._attr_schemas[(cls, layer)])
            parts.append(self._write(table, contract.attribution_dir(self.out, cls, layer) / name))
        table = contract.make_prediction_table({k: v[:n_files] for k, v in p.rows.items()}, self.pred_schema)
        parts.append(self._write(table, self.out / contract.PREDICTIONS / name))
        crash_point(f"before-manifest:{number}")
        ids = p.rows[contract.IMAGE_ID][:n_files]
        seconds = time.perf_counter() - self._t_unit
        manifest.write_unit_manifest(self.out, number, {
            **self._stamp, "unit": number, "first_id": ids[0], "last_id": ids[-1],
            "ids_sha256": manifest.compute_ids_digest(ids), "counts": manifest.count_rows(p.rows, n_files),
            "parts": parts, "seconds": round(seconds, 3), "finished": manifest.now()})
        crash_point(f"after-unit:{number}")
        rest = _Pending(rows={k: v[n_files:] for k, v in p.rows.items()}, ok_ids=p.ok_ids[n_ok:],
                        n_ok_per_file=p.n_ok_per_file[n_files:], acts=[acts[n_ok:]] if len(acts) > n_ok else [])
        self._pending = rest
        self.unit += 1
        self._t_unit = time.perf_counter()
        self._next = next(self._plan, None)

    def _write(self, table: pa.Table, path: Path) -> str:
        tables.write_parquet_atomic(table, path)
        self.files_written += 1
        return path.relative_to(self.out).as_posix()
