"""Every channel's top images (the channel_tops table): for each report layer, each channel's K highest channel means
over all ok images and within each class, and where in each image the channel fires (its maximum's cell).

Exact and streamed: a layer is read in blocks of channels over every row (analysis/store/blocks.py), each block as
wide as the memory budget allows: the block, the peak positions beside it, scratch for the selection (one class's
columns, a NaN-free copy, the partition, two boolean masks, a running count of ties where many values tie at the k-th,
as dead channels' zeros do): at most 28 bytes per image and channel.
Selection is np.partition (the k-th largest) then a sort of k candidates: O(N) per channel, not a full sort.
Order: higher value first; among equal values the earlier row of the activations table (image order), the order a
stable sort of the whole table gives. NaN counts as the lowest value.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.stats.groups import Groups
from analysis.store import contract, tables
from analysis.store.blocks import read_channel_block, read_image_ids

_BYTES_PER_VALUE = 28  # per image and channel of a block: see the module docstring


def compute_top_indices(values: np.ndarray, k: int) -> np.ndarray:
    """values (B, m) -> (B, min(k, m)) column indices of each row's k largest, larger first, ties to the lower
    index; NaN lowest."""
    b, m = values.shape
    k = min(k, m)
    if k == 0:
        return np.zeros((b, 0), np.int64)
    v = np.where(np.isnan(values), -np.inf, values)
    kth = np.partition(v, m - k, axis=1)[:, [m - k]]  # (B, 1) each row's k-th largest; a copy, the partition freed
    above, tied = v > kth, v == kth
    need = k - above.sum(axis=1)  # (B,) ties to take: the first ones in row order
    crowded = np.flatnonzero(tied.sum(axis=1) > need)  # more ties at the k-th value than room for them
    tied[crowded] &= np.cumsum(tied[crowded], axis=1, dtype=np.int32) <= need[crowded, None]
    idx = np.nonzero(above | tied)[1].reshape(b, k)  # (B, k), increasing within each row
    order = np.argsort(-np.take_along_axis(v, idx, 1), axis=1, kind="stable")  # stable: equal values keep row order
    return np.take_along_axis(idx, order, 1)


@dataclasses.dataclass(frozen=True)
class Peaks:
    """Where a layer's channel maxima are: the activations_peak table, its grid and its row of each image."""

    folder: Path
    grid: tuple[int, int]  # (h, w) of the peak grid (run.json "peak_grid")
    rows: np.ndarray  # (N,) the peak table's row of each row of the activations table; -1 when absent
    n_rows: int  # rows of the peak table

    def read_block(self, channels: list[int]) -> np.ndarray:
        """(B, N) float32 flat cell index of each row of the activations table (NaN: no peak row); uint16 values,
        exact in float32."""
        block = read_channel_block(self.folder, channels, self.n_rows)  # (B, n_rows), the peak table's order
        if len(self.rows) == self.n_rows and (self.rows == np.arange(self.n_rows)).all():
            return block  # the same rows in the same order: the usual case (part k of every table, one unit)
        return np.where(self.rows >= 0, block[:, np.maximum(self.rows, 0)], np.float32(np.nan))

    def compute_positions(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """flat cell indices -> (peak_y, peak_x) float32: the cell's centre as fractions of the crop the network saw;
        NaN where there is none (an index off the grid would be a broken table: no position, not a wrong one)."""
        h, w = self.grid
        bad = ~(flat < h * w)  # NaN included
        y = np.where(bad, np.nan, (flat // w + 0.5) / h).astype(np.float32)
        x = np.where(bad, np.nan, (flat % w + 0.5) / w).astype(np.float32)
        return y, x


def has_peaks(run: str | os.PathLike, layer: str, peak_grid: Mapping[str, Any] | None) -> bool:
    """Whether the run recorded where each channel of `layer` fires (runs extracted before the peak table did not)."""
    grid = (peak_grid or {}).get(layer)
    return grid is not None and bool(tables.list_parts(contract.activation_dir(run, layer, contract.STAT_PEAK)))


def find_peaks(run: str | os.PathLike, layer: str, image_ids: np.ndarray, peak_grid: Mapping | None) -> Peaks | None:
    """The layer's peak positions for the activations table's rows `image_ids`, or None when the run has none."""
    if not has_peaks(run, layer, peak_grid):
        return None
    folder = contract.activation_dir(run, layer, contract.STAT_PEAK)
    peak_ids = read_image_ids(folder)
    rows = pd.Index(peak_ids).get_indexer(pd.Index(image_ids))
    grid = peak_grid[layer]
    return Peaks(folder, (int(grid[0]), int(grid[1])), rows, len(peak_ids))


def compute_layer_tops(
    run: str | os.PathLike, layer: str, n_channels: int, groups: Groups, k: int, memory_bytes: int, peak_grid: Mapping
) -> pd.DataFrame:
    """channel_tops rows of one layer: every channel's top k over all images, then within each class."""
    folder = contract.activation_dir(run, layer)
    ids = read_image_ids(folder)
    codes = groups.codes_of(ids)
    peaks = find_peaks(run, layer, ids, peak_grid)
    scopes = [(contract.SCOPE_ALL, None, np.arange(len(ids)))] + [
        (contract.SCOPE_CLASS, cls, np.flatnonzero(codes == c)) for c, cls in enumerate(groups.classes)
    ]
    width = int(max(1, min(n_channels, memory_bytes // max(1, _BYTES_PER_VALUE * len(ids)))))
    frames = []
    for lo in range(0, n_channels, width):
        channels = list(range(lo, min(n_channels, lo + width)))
        block = read_channel_block(folder, channels, len(ids))  # (B, N)
        cells = peaks.read_block(channels) if peaks is not None else None  # (B, N)
        for scope, cls, rows in scopes:
            if not len(rows):
                continue
            picked = rows[compute_top_indices(block[:, rows], k)]  # (B, k') rows of the table
            frame = _make_rows(layer, channels, (scope, cls), ids, np.take_along_axis(block, picked, 1), picked)
            if cells is not None:
                y, x = peaks.compute_positions(np.take_along_axis(cells, picked, 1))
                frame[contract.PEAK_Y], frame[contract.PEAK_X] = y.ravel(), x.ravel()
            frames.append(frame)
        del block, cells
    if not frames:
        return pd.DataFrame({c: [] for c in contract.CHANNEL_TOPS_COLUMNS})
    return pd.concat(frames, ignore_index=True)


def _make_rows(
    layer: str, channels: list[int], scope: tuple[str, str | None], ids: np.ndarray, values: np.ndarray, picked
) -> pd.DataFrame:
    b, k = picked.shape
    return pd.DataFrame(
        {
            contract.LAYER: layer,
            contract.CHANNEL: np.repeat(np.asarray(channels, np.int32), k),
            contract.SCOPE: scope[0],
            contract.CLASS: pd.Series([scope[1]] * (b * k), dtype=object),
            contract.IMAGE_RANK: np.tile(np.arange(1, k + 1, dtype=np.int32), b),
            contract.IMAGE_ID: ids[picked.ravel()],
            contract.VALUE: values.ravel().astype(np.float32),
            contract.PEAK_Y: np.full(b * k, np.nan, np.float32),
            contract.PEAK_X: np.full(b * k, np.nan, np.float32),
        }
    )


def compute_channel_tops(
    run: str | os.PathLike,
    layers: Mapping[str, int],
    groups: Groups,
    k: int,
    memory_bytes: int,
    peak_grid: Mapping[str, Any] | None,
) -> pd.DataFrame:
    """The channel_tops table of `layers` ({layer: channels}, the report's); peak_grid: run.json "peak_grid" (None on
    a run extracted before the peak table: every peak_y, peak_x null)."""
    frames = [
        compute_layer_tops(run, layer, int(c), groups, k, memory_bytes, peak_grid or {}) for layer, c in layers.items()
    ]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: [] for c in contract.CHANNEL_TOPS_COLUMNS})
    tops = pd.concat(frames, ignore_index=True)[list(contract.CHANNEL_TOPS_COLUMNS)]
    for column in (contract.PEAK_Y, contract.PEAK_X):  # nullable: no position is written as null, not as NaN
        tops[column] = tops[column].astype("Float32")
    return tops


def describe_peaks(run: str | os.PathLike, layers: Sequence[str], peak_grid: Mapping[str, Any] | None) -> str | None:
    """None when every layer has its peak positions; otherwise one line saying which do not and why."""
    missing = [layer for layer in layers if not has_peaks(run, layer, peak_grid)]
    if not missing:
        return None
    return (
        f"No peak positions for {', '.join(missing)}: the run did not record where each channel fires (it was "
        "extracted before the activations_peak table); extract again to see the place marked on each image."
    )
