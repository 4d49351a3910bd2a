"""The channel browser's data: every channel of every recorded layer, its statistics per class, its histogram per
class, and where its gallery is (or how to get one). Plain data for the page's inline JSON; the page's script
(browser.js beside this file) draws the table and the selected channel from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.store import contract

SCRIPT = Path(__file__).with_name("browser.js")


def _column(
    frame: pd.DataFrame, name: str, classes: Sequence[str], digits: int, rows: pd.MultiIndex
) -> list[list[float | None]]:
    """[per class: the value of each row (layer, channel), in `rows` order]; NaN and infinities as null, ranks
    (digits 0) as integers."""
    wide = frame.pivot(index=[contract.LAYER, contract.CHANNEL], columns=contract.CLASS, values=name).reindex(rows)

    def cell(v):
        if pd.isna(v) or not np.isfinite(v):
            return None
        return round(float(v), digits) if digits else int(v)

    return [[cell(v) for v in wide[cls]] if cls in wide else [None] * len(rows) for cls in classes]


def make_browser(
    stats: pd.DataFrame,
    histograms: Mapping[str, Mapping[str, np.ndarray]],
    classes: Sequence[str],
    report_layers: Sequence[str],
    tops: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Columnar rows, one per (layer, channel), layers in network order. tops: every report layer's channel
    galleries (reports/run/channel_galleries.py), None: none."""
    layers = list(histograms)
    s = stats[(stats[contract.STAT] == contract.STAT_MEAN) & stats[contract.LAYER].isin(layers)].copy()
    s["_order"] = s[contract.LAYER].map({name: i for i, name in enumerate(layers)})
    s = s.sort_values(["_order", contract.CHANNEL, contract.CLASS], kind="stable")
    keys = s.drop_duplicates([contract.LAYER, contract.CHANNEL])
    rows = pd.MultiIndex.from_arrays([keys[contract.LAYER], keys[contract.CHANNEL]])
    counts = [
        histograms[layer]["counts"][int(c)].tolist() for layer, c in zip(keys[contract.LAYER], keys[contract.CHANNEL])
    ]
    return {
        "classes": list(classes),
        "layers": layers,
        "report_layers": list(report_layers),
        "layer": [layers.index(n) for n in keys[contract.LAYER]],
        "channel": [int(c) for c in keys[contract.CHANNEL]],
        "auc": _column(s, contract.AUC, classes, 4, rows),
        "d": _column(s, contract.COHENS_D, classes, 3, rows),
        "mean": _column(s, contract.MEAN, classes, 5, rows),
        "rank": _column(s, contract.RANK_SELECTIVITY, classes, 0, rows),
        "driver": _column(s, contract.RANK_CONTRIBUTION, classes, 0, rows),
        "top": [
            round(float(histograms[layer]["top"][int(c)]), 5)
            for layer, c in zip(keys[contract.LAYER], keys[contract.CHANNEL])
        ],
        "hist": counts,
        "tops": tops,
    }
