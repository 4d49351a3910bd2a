"""What an image card shows of every ok image beside the image: its Grad-CAM of each class, quantised to a byte per
cell, and the channels that contributed most to each class's logit at the Grad-CAM layer (from the extract's
gradcam/ and attributions/ tables; nothing is re-run).

Each table is streamed once in record batches into arrays in the map's order; memory is what the page's card files
hold, before base64: per image and class h * w bytes (196 at conv5_3's 14 x 14), a scale and `top` channels.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.stats.channel_tops import compute_top_indices
from analysis.store import contract, tables

TOP = 5  # contributing channels per class


@dataclasses.dataclass(frozen=True, eq=False)
class CardMaps:
    """Every image's Grad-CAM per class and its top contributing channels per class, rows in the given image order."""

    layer: str
    grid: tuple[int, int]  # (h, w)
    classes: tuple[str, ...]
    cams: np.ndarray  # (N, K, h * w) uint8: the map / its max * 255, rounded; zeros when the max is 0
    scales: np.ndarray  # (N, K) float32: each map's max (0: an all-zero map; NaN: no Grad-CAM row for the image)
    channels: np.ndarray  # (N, K, TOP) int32: the channels that contributed most, most first; -1: none
    contributions: np.ndarray  # (N, K, TOP) float32: their contributions to the class logit


def list_gradcam_classes(run: str | os.PathLike, meta: Mapping[str, Any]) -> list[str]:
    """The run's classes that have a Grad-CAM table (none on a run extracted before them, or without attribution)."""
    layer = (meta.get("gradcam") or {}).get("layer")
    if not layer:
        return []
    return [c for c in meta.get("classes") or () if tables.list_parts(contract.gradcam_dir(run, c, layer))]


def describe_missing(run: str | os.PathLike, meta: Mapping[str, Any]) -> str | None:
    """None when the run has Grad-CAM maps; otherwise why the cards have none, in one line."""
    if list_gradcam_classes(run, meta):
        return None
    if not meta.get("attribution"):
        return "No Grad-CAM in the image cards: the run was extracted without attribution (attribution_layers: none)."
    return (
        "No Grad-CAM in the image cards: the run was extracted before the extract recorded Grad-CAM maps; "
        "extract again to see them."
    )


def quantise(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, h * w) maps -> (n, h * w) uint8 round(map / max * 255) and (n,) float32 max; a map with no positive value
    is all zeros with max 0 (Grad-CAM is a ReLU: a negative or NaN cell counts as 0)."""
    g = np.where(np.isfinite(maps), np.maximum(maps, 0), 0).astype(np.float64)
    top = g.max(axis=1) if g.shape[1] else np.zeros(len(g))
    safe = np.where(top > 0, top, 1.0)
    return np.rint(g / safe[:, None] * 255).astype(np.uint8), top.astype(np.float32)


def read_card_maps(
    run: str | os.PathLike, meta: Mapping[str, Any], image_ids: Sequence[str], batch_rows: int = 8192
) -> CardMaps:
    """The cards' Grad-CAM and contributions of `image_ids` (the map's order); the run must have Grad-CAM maps
    (describe_missing is None). An image without a row in a class's table has NaN scale and no channels."""
    layer = meta["gradcam"]["layer"]
    h, w = (int(v) for v in meta["gradcam"]["grid"])
    classes = list_gradcam_classes(run, meta)
    where = pd.Index([str(i) for i in image_ids])
    n, k = len(where), len(classes)
    cams = np.zeros((n, k, h * w), np.uint8)
    scales = np.full((n, k), np.nan, np.float32)
    channels = np.full((n, k, TOP), -1, np.int32)
    contributions = np.full((n, k, TOP), np.nan, np.float32)
    columns = [contract.IMAGE_ID] + [contract.gradcam_column(j) for j in range(h * w)]
    for c, cls in enumerate(classes):
        for batch in tables.iter_parquet_batches(contract.gradcam_dir(run, cls, layer), columns, batch_rows):
            rows, keep = _rows_of(where, batch.column(0).to_numpy(zero_copy_only=False))
            maps = np.stack([col.to_numpy(zero_copy_only=False) for col in batch.columns[1:]], axis=1)  # (n, h*w)
            cams[rows, c], scales[rows, c] = quantise(maps[keep])
        folder = contract.attribution_dir(run, cls, layer)
        for ids, values in tables.iter_channel_batches(folder, batch_rows) if tables.list_parts(folder) else ():
            rows, keep = _rows_of(where, ids)
            top = compute_top_indices(values[keep], TOP)  # (n, t): largest contribution first, ties to lower channel
            channels[rows, c, : top.shape[1]] = top
            contributions[rows, c, : top.shape[1]] = np.take_along_axis(values[keep], top, 1)
    return CardMaps(layer, (h, w), tuple(classes), cams, scales, channels, contributions)


def _rows_of(where: pd.Index, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows in `where` of the ids it holds, mask of those ids)."""
    rows = where.get_indexer(pd.Index(ids))
    keep = rows >= 0
    return rows[keep], keep
