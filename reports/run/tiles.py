"""The report page's sections of image tiles, the galleries and the mistakes, and the TileIndex that numbers their
tiles. Parts of the context that reports/run/page.py joins; it numbers the mistakes' tiles before the galleries'."""

from __future__ import annotations

from typing import Any

import pandas as pd

from analysis.store import contract
from reports.overlays import make_css_gradient
from reports.run.browser import gallery_anchor
from reports.run.inputs import Overlays, ReportInputs


class TileIndex:
    """The page's tiles numbered in the order they are made: tile i shows image ids[i] (the page's `tile_ids`, which
    its filter script reads)."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def add(self, image_id: str) -> int:
        """The next tile's number, a tile of `image_id`."""
        self.ids.append(image_id)
        return len(self.ids) - 1


def make_galleries(inputs: ReportInputs, tiles: TileIndex) -> dict[str, Any]:
    """Per layer and class, each shown channel's top images (examples' rows other than mistakes)."""
    classes, overlays, stats, examples = inputs.classes, inputs.overlays, inputs.stats, inputs.examples
    s = stats[stats[contract.STAT] == contract.STAT_MEAN].set_index([contract.LAYER, contract.CLASS, contract.CHANNEL])
    galleries = []
    shown = examples[examples[contract.SCOPE] != contract.SCOPE_MISTAKE]
    for (layer, cls), g in shown.groupby([contract.LAYER, contract.CLASS], sort=False):
        channels = []
        for _, ch in g.groupby(contract.CHANNEL_RANK, sort=True):
            c = int(ch[contract.CHANNEL].iloc[0])
            row = s.loc[(layer, cls, c)]
            channels.append(
                {
                    "channel": c,
                    "rank": int(row[contract.RANK_SELECTIVITY]),  # a driver shown for the answer ranks lower
                    "auc": float(row[contract.AUC]),
                    "d": float(row[contract.COHENS_D]),
                    "vmax": overlays.scales.get((layer, c), (0, None))[1],
                    "scopes": _scopes(ch, cls, overlays, tiles),
                    "anchor": gallery_anchor(layer, classes.index(cls), c),
                }
            )
        galleries.append({"layer": layer, "class": cls, "channels": channels})
    return {
        "gallery_note": (
            "Tiles show the crop the network saw with the channel's map over it; the number is the "
            "channel mean recorded by extract."
        ),
        "overlay_note": overlays.note,
        "galleries": galleries,
        "colour_bar": make_css_gradient(overlays.colormap),
        "colormap": overlays.colormap,
    }


def _scopes(ch: pd.DataFrame, cls: str, overlays: Overlays, tiles: TileIndex) -> list[dict]:
    """The channel's galleries over all images and within the class; one when both hold the same images."""
    ranked = {
        scope: ch[ch[contract.SCOPE] == scope].sort_values(contract.IMAGE_RANK)
        for scope in (contract.SCOPE_ALL, contract.SCOPE_CLASS)
    }
    same = list(ranked[contract.SCOPE_ALL][contract.IMAGE_ID]) == list(ranked[contract.SCOPE_CLASS][contract.IMAGE_ID])
    titles = (
        {contract.SCOPE_ALL: f"top images over all images (the same as within class {cls})"}
        if same
        else {contract.SCOPE_ALL: "top images over all images", contract.SCOPE_CLASS: f"top images of class {cls}"}
    )
    return [
        {"title": title, "tiles": [_tile(r, overlays, tiles) for _, r in ranked[scope].iterrows()]}
        for scope, title in titles.items()
    ]


def _tile(row: pd.Series, overlays: Overlays, tiles: TileIndex) -> dict[str, Any]:
    """A top_examples row as a tile: its overlay (or why there is none), value, label, answer and Grad-CAMs."""
    image_id = row[contract.IMAGE_ID]
    src = overlays.tiles.get((image_id, row[contract.LAYER], int(row[contract.CHANNEL])))
    conf = row.get(contract.CONFIDENCE)
    return {
        "i": tiles.add(image_id),
        "image_id": image_id,
        "src": src,
        "value": float(row[contract.VALUE]),
        "label": row[contract.LABEL] if isinstance(row[contract.LABEL], str) else None,
        "pred": (
            f"{row[contract.PRED]} ({conf:.0%})" if isinstance(row[contract.PRED], str) and pd.notna(conf) else None
        ),
        "why": overlays.unreadable.get(image_id) or overlays.note or "no overlay",
        "cams": [{"class": cls, "src": src, "vmax": vmax} for cls, src, vmax in overlays.gradcams.get(image_id, [])],
    }


def make_mistakes(inputs: ReportInputs, tiles: TileIndex) -> dict[str, Any]:
    """Per layer, the most confident mistakes, each with the channel that pushed hardest and the drivers."""
    mistakes = inputs.examples[inputs.examples[contract.SCOPE] == contract.SCOPE_MISTAKE]
    groups = []
    for layer in inputs.layers:
        shown = []
        for _, r in mistakes[mistakes[contract.LAYER] == layer].sort_values(contract.IMAGE_RANK).iterrows():
            tile = _tile(r, inputs.overlays, tiles)
            tile["label"] = f"{tile['label']}; c{int(r[contract.CHANNEL])} pushed hardest (z {r[contract.PUSH]:.1f})"
            drove = inputs.mistake_drivers.get((r[contract.IMAGE_ID], layer))
            if drove:
                tile["label"] += f"; drove {r[contract.PRED]} most: " + ", ".join(f"c{c} ({v:.3g})" for c, v in drove)
            shown.append(tile)
        if shown:
            groups.append({"layer": layer, "tiles": shown})
    return {
        "mistakes_note": (
            "Wrong predictions with the highest confidence, with the channel (among the predicted "
            "class's most selective) whose value was furthest above the true class's mean, in "
            "standard deviations (z)."
            if len(mistakes)
            else "No mistakes to show (no labels or no errors)."
        ),
        "mistakes": groups,
    }
