"""What an image card shows of each image: its top channels per layer, by value and by how unusual the value is
for its class (z = (value - class mean) / class standard deviation, from the channel statistics).

One streamed pass over each layer's table; memory is one record batch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.stats.groups import Groups
from analysis.store import contract, tables


def compute_top_channels(
    run: str | os.PathLike, layer: str, stats: pd.DataFrame, groups: Groups, k: int = 3, batch_rows: int = 8192
) -> dict[str, tuple[list[tuple[int, float]], list[tuple[int, float]]]]:
    """{image_id: ([(channel, value)] top k by value, [(channel, z)] top k by z)}; z is empty for an image in no
    class (unlabeled and predicted outside the classes)."""
    s = stats[(stats[contract.LAYER] == layer) & (stats[contract.STAT] == contract.STAT_MEAN)]
    means = s.pivot(index=contract.CLASS, columns=contract.CHANNEL, values=contract.MEAN).reindex(groups.classes)
    stds = s.pivot(index=contract.CLASS, columns=contract.CHANNEL, values=contract.STD).reindex(groups.classes)
    mu, sd = means.to_numpy(np.float64), stds.to_numpy(np.float64)  # (K, C)
    sd = np.where(np.isfinite(sd) & (sd > 0), sd, np.nan)
    out = {}
    for ids, x in tables.iter_channel_batches(contract.activation_dir(Path(run), layer, "mean"), batch_rows):
        codes = groups.codes_of(ids)
        by_value = _top(x, k)
        z = np.where(codes[:, None] >= 0, (x - mu[codes]) / sd[codes], np.nan)  # (n, C)
        by_z = _top(np.nan_to_num(z, nan=-np.inf), k)
        for r, image_id in enumerate(ids):
            zs = [(int(c), float(z[r, c])) for c in by_z[r] if np.isfinite(z[r, c])] if codes[r] >= 0 else []
            out[image_id] = ([(int(c), float(x[r, c])) for c in by_value[r]], zs)
    return out


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """(n, C) -> (n, k) column indices of the k largest of each row, largest first (ties: lower index)."""
    k = min(k, values.shape[1])
    part = np.argpartition(-values, k - 1, axis=1)[:, :k]
    rows = np.arange(len(values))[:, None]
    order = np.lexsort((part, -values[rows, part]), axis=1)
    return part[rows, order]


def top_channel_table(tops: dict, ids: Sequence[str]) -> list:
    """[per image in `ids` order: [c, v, c, v, ...], [c, z, ...]] rounded for the page's JSON."""
    rows = []
    for image_id in ids:
        by_value, by_z = tops.get(image_id, ([], []))
        rows.append(
            [[x for c, v in by_value for x in (c, round(v, 4))], [x for c, z in by_z for x in (c, round(z, 2))]]
        )
    return rows
