"""Top-activating images per channel, streamed over a layer's Parquet, and the most confident mistakes.

Memory stays bounded: one pass over a layer reads only the channels that will be shown, batch by batch, and keeps
k values per channel and scope (dissect's runningstats top-k is the model). Order is total and documented:
higher value first, then the earlier row of the table, so the result equals a full sort of the whole table.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.stats.groups import Groups
from analysis.stats.selectivity import sortable_bits
from analysis.store import contract, tables
from analysis.store.blocks import read_image_ids

_LOW32 = np.uint64(0xFFFFFFFF)
_ROW_COLUMNS = [
    contract.LAYER,
    contract.CLASS,
    contract.SCOPE,
    contract.CHANNEL,
    contract.CHANNEL_RANK,
    contract.IMAGE_RANK,
    contract.IMAGE_ID,
    contract.VALUE,
    contract.PUSH,
]


def _first_k(values: np.ndarray, k: int) -> np.ndarray:
    """values (C, m) -> (C, min(k, m)) column indices of the k largest, larger first, ties to the lower index.

    Key = descending value bits in the high word, index in the low word: unique keys, so a partition and a sort of
    k keys on numpy's SIMD integer paths give the exact order. NaN counts as the lowest value.
    """
    values = np.where(np.isnan(values), -np.inf, values)
    m = values.shape[1]
    key = ((~sortable_bits(values)).astype(np.uint64) << np.uint64(32)) | np.arange(m, dtype=np.uint64)
    if m > k:
        key = np.partition(key, k - 1, axis=1)[:, :k]
    key.sort(axis=1)
    return (key & _LOW32).astype(np.int64)


class TopK:
    """Running top-k of each of C columns over rows streamed in table order."""

    def __init__(self, k: int, n_columns: int):
        self.k = k
        self.values = np.zeros((n_columns, 0), np.float32)  # (C, <=k), best first
        self.positions = np.zeros((n_columns, 0), np.int64)  # (C, <=k), rows of the table

    def add(self, values: np.ndarray, positions: np.ndarray) -> None:
        """values (C, n) of the rows at `positions` (n,), increasing and after every row added before."""
        if not len(positions):
            return
        if self.positions.size and positions[0] <= self.positions.max():
            raise ValueError("TopK.add: rows must come in table order")
        self._keep(
            np.concatenate([self.values, values], axis=1),
            np.concatenate([self.positions, np.broadcast_to(positions, values.shape)], axis=1),
        )

    def _keep(self, values: np.ndarray, positions: np.ndarray) -> None:
        # candidates are in position order among equal values (state first, then later rows), so index = tie-break
        idx = _first_k(values, self.k)
        self.values = np.take_along_axis(values, idx, 1)
        self.positions = np.take_along_axis(positions, idx, 1)


@dataclasses.dataclass
class LayerScan:
    image_ids: np.ndarray  # (N,) image ids in table order
    channels: list[int]  # the columns scanned
    top_all: TopK  # over every image
    top_class: list[TopK]  # within each class
    gathered: np.ndarray  # (G, len(channels)) values of the images asked for (nan when not in the table)


def scan_layer(
    table_dir: str | os.PathLike,
    channels: Sequence[int],
    groups: Groups,
    k: int,
    gather: Sequence[str] = (),
    batch_size: int = 65536,
) -> LayerScan:
    """One pass over one layer's table: top-k of `channels` over all images and within each class, and the
    values of the `gather` images (e.g. the mistakes)."""
    channels = list(channels)
    ids = read_image_ids(table_dir)
    codes = groups.codes_of(ids)
    where = pd.Index(ids).get_indexer(pd.Index(list(gather)))  # (G,) row of each gathered image or -1
    gathered = np.full((len(where), len(channels)), np.nan, np.float32)
    top_all = TopK(k, len(channels))
    top_class = [TopK(k, len(channels)) for _ in groups.classes]
    offset = 0
    for batch in tables.iter_parquet_batches(table_dir, [contract.channel_column(c) for c in channels], batch_size):
        n = batch.num_rows
        values = np.stack([col.to_numpy(zero_copy_only=False) for col in batch.columns])  # (C, n)
        pos = np.arange(offset, offset + n)
        top_all.add(values, pos)
        for c, top in enumerate(top_class):
            inside = codes[offset : offset + n] == c
            top.add(values[:, inside], pos[inside])
        hit = np.flatnonzero((where >= offset) & (where < offset + n))
        gathered[hit] = values[:, where[hit] - offset].T
        offset += n
    return LayerScan(ids, channels, top_all, top_class, gathered)


def select_ranked(stats: pd.DataFrame, layer: str, classes: Sequence[str], rank: str, n: int) -> dict[str, list[int]]:
    """{class: its n first channels of `layer` by `rank` (a rank column of channel_stats: contract.RANK_SELECTIVITY,
    RANK_CONTRIBUTION), first first}."""
    s = stats[(stats[contract.LAYER] == layer) & (stats[contract.STAT] == contract.STAT_MEAN) & (stats[rank] <= n)]
    return {
        cls: s[s[contract.CLASS] == cls].sort_values(rank)[contract.CHANNEL].astype(int).tolist() for cls in classes
    }


def select_channels(stats: pd.DataFrame, layer: str, classes: Sequence[str], m: int) -> dict[str, list[int]]:
    """{class: its m most selective channels of `layer` (channel means), most selective first}."""
    return select_ranked(stats, layer, classes, contract.RANK_SELECTIVITY, m)


def find_driver_layer(stats: pd.DataFrame, layers: Sequence[str]) -> str | None:
    """The first of `layers` (deepest first) whose channels have contributions (the run attributed it); else None."""
    for layer in layers:
        if stats.loc[stats[contract.LAYER] == layer, contract.CONTRIB_MEAN].notna().any():
            return layer
    return None


def select_drivers(stats: pd.DataFrame, layer: str, classes: Sequence[str], n: int) -> dict[str, list[int]]:
    """{class: its n strongest drivers of `layer` (rank_contribution over the class's images), strongest first}."""
    return select_ranked(stats, layer, classes, contract.RANK_CONTRIBUTION, n)


def make_top_examples(
    layer: str, scan: LayerScan, selected: Mapping[str, Sequence[int]], classes: Sequence[str]
) -> pd.DataFrame:
    """Rows of top_examples for one layer: per class, its selected channels, top images over all and within."""
    col = {c: j for j, c in enumerate(scan.channels)}
    rows = []
    for cls, channels in selected.items():
        for rank, channel in enumerate(channels, start=1):
            for scope, top in (
                (contract.SCOPE_ALL, scan.top_all),
                (contract.SCOPE_CLASS, scan.top_class[classes.index(cls)]),
            ):
                j = col[channel]
                for i, (value, pos) in enumerate(zip(top.values[j], top.positions[j]), start=1):
                    rows.append((layer, cls, scope, channel, rank, i, scan.image_ids[pos], float(value), np.nan))
    return pd.DataFrame(rows, columns=_ROW_COLUMNS)


def find_mistakes(predictions: pd.DataFrame, groups: Groups, n: int) -> pd.DataFrame:
    """The n most confident wrong predictions among labeled ok images (none on an unlabeled run)."""
    if groups.by != contract.GROUP_LABEL or n == 0:
        return predictions.iloc[:0]
    p = predictions
    wrong = p[
        (p[contract.STATUS] == contract.STATUS_OK)
        & p[contract.LABEL].isin(groups.classes)
        & p[contract.PRED].notna()
        & (p[contract.PRED] != p[contract.LABEL])
    ]
    return wrong.sort_values([contract.CONFIDENCE, contract.IMAGE_ID], ascending=[False, True]).head(n)


def make_mistake_examples(
    layer: str, mistakes: pd.DataFrame, scan: LayerScan, selected: Mapping[str, Sequence[int]], stats: pd.DataFrame
) -> pd.DataFrame:
    """Per mistake, the channel among the wrong class's selected ones that pushed hardest toward it:
    the largest (value - mean of the true class) / its std."""
    s = stats[(stats[contract.LAYER] == layer) & (stats[contract.STAT] == contract.STAT_MEAN)]
    s = s.set_index([contract.CLASS, contract.CHANNEL])
    col = {c: j for j, c in enumerate(scan.channels)}
    rows = []
    for i, (_, m) in enumerate(mistakes.iterrows()):
        pred, label = m[contract.PRED], m[contract.LABEL]
        chans = list(selected.get(pred, ()))
        if not chans or np.isnan(scan.gathered[i]).all():
            continue
        values = scan.gathered[i, [col[c] for c in chans]].astype(np.float64)
        ref = s.loc[[(label, c) for c in chans]]
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (values - ref[contract.MEAN].to_numpy()) / ref[contract.STD].to_numpy()
        z = np.where(np.isfinite(z), z, -np.inf)
        best = int(np.argmax(z))
        rows.append(
            (
                layer,
                pred,
                contract.SCOPE_MISTAKE,
                chans[best],
                best + 1,
                i + 1,
                m[contract.IMAGE_ID],
                float(values[best]),
                float(z[best]) if np.isfinite(z[best]) else np.nan,
            )
        )
    return pd.DataFrame(rows, columns=_ROW_COLUMNS)


def attach_predictions(examples: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Add label, pred and confidence of each example's image."""
    cols = [contract.IMAGE_ID, contract.LABEL, contract.PRED, contract.CONFIDENCE]
    return examples.merge(predictions[cols], on=contract.IMAGE_ID, how="left")


DRIVERS = 3  # driver channels per class on the page's first screen (reports/run/answer.py)


@dataclasses.dataclass(frozen=True)
class Shown:
    """How much the galleries show."""

    channels: int  # the most selective channels of each class and layer
    images: int  # top images of each channel, over all images and within the class
    drivers: int = DRIVERS  # the strongest drivers of each class at the deepest attributed layer, shown too


def compute_top_examples(
    run: str | os.PathLike,
    layers: Sequence[str],
    stats: pd.DataFrame,
    groups: Groups,
    predictions: pd.DataFrame,
    mistakes: pd.DataFrame,
    shown: Shown,
) -> pd.DataFrame:
    """The top_examples table: per layer one pass over its channel means for the galleries and the mistakes.
    Each class's channels are its most selective (channel_rank 1..channels), then, at the deepest attributed layer,
    its strongest drivers not among them (the next channel_ranks, strongest first); the mistakes read the
    selective ones only."""
    frames = []
    gather = mistakes[contract.IMAGE_ID].tolist()
    deepest = find_driver_layer(stats, layers) if shown.drivers else None
    for layer in layers:
        selected = select_channels(stats, layer, groups.classes, shown.channels)
        more = select_drivers(stats, layer, groups.classes, shown.drivers) if layer == deepest else {}
        listed = {cls: list(dict.fromkeys([*chans, *more.get(cls, [])])) for cls, chans in selected.items()}
        channels = sorted({c for chans in listed.values() for c in chans})
        scan = scan_layer(contract.activation_dir(run, layer), channels, groups, shown.images, gather=gather)
        frames.append(make_top_examples(layer, scan, listed, groups.classes))
        frames.append(make_mistake_examples(layer, mistakes, scan, selected, stats))
    frames = [f for f in frames if len(f)]
    examples = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=_ROW_COLUMNS)
    return attach_predictions(examples, predictions)
