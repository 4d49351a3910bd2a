"""The image explorer's data: every ok image with its place on the dataset map, its answer, its top channels, its
thumbnail (a cell of a sprite sheet; the crop the network saw where the overlays drew one) and its overlay tiles on
the page. Plain data for the page's inline JSON; explorer.js beside this file draws the map (a canvas, not one element
per point) and the image cards from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.stats.cards import top_channel_table
from analysis.stats.embedding import Map
from analysis.stats.summary import PredictionSummary
from analysis.store import contract
from reports.run.inputs import Overlays

SCRIPT = Path(__file__).with_name("explorer.js")


def make_explorer(
    predictions: pd.DataFrame,
    summary: PredictionSummary,
    pca: Map,
    tops: Mapping[str, Mapping[str, Any]],
    overlays: Overlays,
    examples: pd.DataFrame | None = None,
    sprites: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Columnar rows, one per ok image, in the map table's order; classes and grouping from `summary`. overlays: the
    crops the network saw (the cards' pictures) and the page's overlay tiles, with their values from `examples`
    (top_examples). sprites: every image's thumbnail (cell i of the sheets, in this order;
    jobs/report_pictures.py write_thumbnails), or None when they are off."""
    classes, views = summary.classes, overlays.views
    p = predictions.set_index(contract.IMAGE_ID).reindex(pca.image_ids)
    index = {c: i for i, c in enumerate(classes)}
    label = [index.get(v, -1) if isinstance(v, str) else -1 for v in p[contract.LABEL]]
    pred = [index.get(v, -1) if isinstance(v, str) else -1 for v in p[contract.PRED]]
    probs = [[round(float(v), 3) if pd.notna(v) else None for v in p[contract.prob_column(c)]] for c in classes]
    xy = np.nan_to_num(pca.xy.astype(np.float64))
    return {
        "classes": list(classes),
        "group_by": summary.group_by,
        "layer": pca.layer,
        "explained": [round(v, 4) for v in pca.explained],
        "method": "PCA of the channel means (numpy eigh)",
        "ids": [str(i) for i in pca.image_ids],
        "label": label,
        "pred": pred,
        "probs": probs,
        "x": [round(float(v), 4) for v in xy[:, 0]],
        "y": [round(float(v), 4) for v in xy[:, 1]],
        "thumb": [views.get(i) for i in pca.image_ids],
        "sprites": sprites,
        "top_layers": list(tops),
        "tops": {layer: top_channel_table(t, pca.image_ids) for layer, t in tops.items()},
        "overlays": _overlays_by_image(pca.image_ids, overlays.tiles, examples),
    }


def _overlays_by_image(
    image_ids: Sequence[str], tiles: Mapping[tuple[str, str, int], str], examples: pd.DataFrame | None
) -> dict[str, list[list[Any]]]:
    """{row i: [[layer, channel, value, tile path], ...]} for the images with overlay tiles on the page, each image's
    largest values first."""
    values = (
        {}
        if examples is None
        else {
            (i, layer, int(c)): float(v)
            for i, layer, c, v in zip(
                examples[contract.IMAGE_ID],
                examples[contract.LAYER],
                examples[contract.CHANNEL],
                examples[contract.VALUE],
            )
        }
    )
    row = {image_id: i for i, image_id in enumerate(image_ids)}
    out: dict[str, list[list[Any]]] = {}
    for (image_id, layer, channel), src in tiles.items():
        if image_id in row:
            value = values.get((image_id, layer, channel))
            out.setdefault(str(row[image_id]), []).append(
                [layer, channel, None if value is None else round(value, 4), src]
            )
    for rows in out.values():
        rows.sort(key=lambda r: (r[0], -(r[2] or 0.0), r[1]))
    return out
