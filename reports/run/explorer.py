"""The image explorer's data: every ok image with its place on the dataset map, its answer, its top channels and
its thumbnail where the page has one. Plain data for the page's inline JSON; explorer.js beside this file draws the
map (a canvas, not one element per point) and the image cards from it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.stats.cards import top_channel_table
from analysis.stats.embedding import Map
from analysis.store import contract

SCRIPT = Path(__file__).with_name("explorer.js")


def make_explorer(predictions: pd.DataFrame, classes: Sequence[str], group_by: str, pca: Map,
                  tops: Mapping[str, Mapping[str, Any]], views: Mapping[str, str]) -> dict[str, Any]:
    """Columnar rows, one per ok image, in the map table's order."""
    p = predictions.set_index(contract.IMAGE_ID).reindex(pca.image_ids)
    index = {c: i for i, c in enumerate(classes)}
    label = [index.get(v, -1) if isinstance(v, str) else -1 for v in p[contract.LABEL]]
    pred = [index.get(v, -1) if isinstance(v, str) else -1 for v in p[contract.PRED]]
    probs = [[round(float(v), 3) if pd.notna(v) else None for v in p[contract.prob_column(c)]] for c in classes]
    xy = np.nan_to_num(pca.xy.astype(np.float64))
    return {
        "classes": list(classes), "group_by": group_by, "layer": pca.layer,
        "explained": [round(v, 4) for v in pca.explained], "method": "PCA of the channel means (numpy eigh)",
        "ids": [str(i) for i in pca.image_ids], "label": label, "pred": pred, "probs": probs,
        "x": [round(float(v), 4) for v in xy[:, 0]], "y": [round(float(v), 4) for v in xy[:, 1]],
        "thumb": [views.get(i) for i in pca.image_ids],
        "top_layers": list(tops), "tops": {layer: top_channel_table(t, pca.image_ids) for layer, t in tops.items()},
    }
