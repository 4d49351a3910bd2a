"""Buffers per-batch results and commits them as units: part k of every table holds files k*U .. (k+1)*U - 1.

Rows arrive in file order (the DataLoader keeps order). A unit is flushed as soon as all of its files have been
seen, so memory is bounded by one unit plus one batch, and each part file appears whole (temp file, rename).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from analysis import storage


@dataclass
class _Pending:
    rows: dict[str, list[Any]]                      # prediction columns for the files seen so far
    ok_ids: list[str] = field(default_factory=list)  # image ids of the ok images among them
    n_ok_per_file: list[int] = field(default_factory=list)  # 1 if that file was ok: splits activations at units
    acts: list[np.ndarray] = field(default_factory=list)    # (B_ok, sum of channels * 2) per batch


class UnitWriter:
    def __init__(self, out: str | os.PathLike, classes: Sequence[str], imagenet: bool,
                 layers: Mapping[str, int], unit_size: int, meta: Mapping[str, Any]):
        self.out = Path(out)
        self.layers = dict(layers)                  # name -> channels, in network order
        self.unit_size = unit_size
        self.pred_schema = storage.with_metadata(storage.prediction_schema(classes, imagenet), meta)
        self.act_schemas = {name: storage.with_metadata(storage.activation_schema(c), {**meta, "layer": name})
                            for name, c in self.layers.items()}
        offsets = np.cumsum([0] + list(self.layers.values()))
        self._mean_slices = {n: slice(offsets[i], offsets[i + 1]) for i, n in enumerate(self.layers)}
        total = int(offsets[-1])
        self._max_slices = {n: slice(total + s.start, total + s.stop) for n, s in self._mean_slices.items()}
        self._width = 2 * total
        self.unit = 0
        self.files_written = 0
        self._pending = self._empty()

    def _empty(self) -> _Pending:
        return _Pending(rows={f.name: [] for f in self.pred_schema})

    def add(self, rows: Mapping[str, Sequence[Any]], ok: Sequence[bool], acts: np.ndarray) -> None:
        """One batch: prediction columns for every file, ok flags, and (B_ok, 2 * channels) activations laid out
        as [means of each layer in order, then maxima of each layer in order]."""
        if acts.shape[1] != self._width:
            raise ValueError(f"activations have {acts.shape[1]} columns, expected {self._width}")
        p = self._pending
        for name, values in rows.items():
            p.rows[name].extend(values)
        p.ok_ids.extend(i for i, good in zip(rows[storage.IMAGE_ID], ok) if good)
        p.n_ok_per_file.extend(int(good) for good in ok)
        if len(acts):
            p.acts.append(acts)
        while len(self._pending.n_ok_per_file) >= self.unit_size:
            self._flush(self.unit_size)

    def close(self) -> None:
        if self._pending.n_ok_per_file:
            self._flush(len(self._pending.n_ok_per_file))

    def _flush(self, n_files: int) -> None:
        p = self._pending
        n_ok = sum(p.n_ok_per_file[:n_files])
        acts = np.concatenate(p.acts) if p.acts else np.zeros((0, self._width), np.float32)
        name = storage.part_name(self.unit)
        # Activations first, predictions last: a unit's predictions part says the unit is whole.
        for layer in self.layers:
            for stat, cols in (("mean", self._mean_slices[layer]), ("max", self._max_slices[layer])):
                table = storage.make_activation_table(p.ok_ids[:n_ok], acts[:n_ok, cols], self.act_schemas[layer])
                self._write(table, storage.activation_dir(self.out, layer, stat) / name)
        table = storage.make_prediction_table({k: v[:n_files] for k, v in p.rows.items()}, self.pred_schema)
        self._write(table, self.out / storage.PREDICTIONS / name)
        rest = _Pending(rows={k: v[n_files:] for k, v in p.rows.items()}, ok_ids=p.ok_ids[n_ok:],
                        n_ok_per_file=p.n_ok_per_file[n_files:], acts=[acts[n_ok:]] if len(acts) > n_ok else [])
        self._pending = rest
        self.unit += 1

    def _write(self, table: pa.Table, path: Path) -> None:
        storage.write_parquet_atomic(table, path)
        self.files_written += 1
