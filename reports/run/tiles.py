"""The report page's mistakes: the most confident wrong answers, each image once, as a tile that opens its card.
Every channel's top images are drawn by the channel browser from reports/run/channel_galleries.py's data, and the
answer's tiles by reports/run/answer.py; this is the only other section of image tiles."""

from __future__ import annotations

from typing import Any

import pandas as pd

from analysis.store import contract
from reports.run.dataset_issues import card_link
from reports.run.inputs import ReportInputs


def make_mistakes(inputs: ReportInputs) -> dict[str, Any]:
    """The most confident mistakes, once each: the tile is the deepest report layer's overlay of the channel that
    pushed hardest toward the wrong answer; its caption names that channel and the drivers at each layer."""
    mistakes = inputs.examples[inputs.examples[contract.SCOPE] == contract.SCOPE_MISTAKE]
    by_image: dict[str, list[pd.Series]] = {}
    for layer in reversed(inputs.layers):  # the deepest layer's row first: it gives the tile
        for _, r in mistakes[mistakes[contract.LAYER] == layer].sort_values(contract.IMAGE_RANK).iterrows():
            by_image.setdefault(r[contract.IMAGE_ID], []).append(r)
    tiles = [_tile(rows, inputs) for rows in sorted(by_image.values(), key=lambda rows: rows[0][contract.IMAGE_RANK])]
    return {
        "mistakes_note": (
            "Wrong predictions with the highest confidence, each with the channel (among the predicted class's most "
            "selective) whose value was furthest above the true class's mean, in standard deviations (z), and the "
            "channels that drove the wrong answer most (and, with concepts, the wrong class's concepts that pushed "
            "it). A tile opens the image's card: its Grad-CAM per class."
            if tiles
            else "No mistakes to show (no labels or no errors)."
        ),
        "mistakes": tiles,
    }


def _tile(rows: list[pd.Series], inputs: ReportInputs) -> dict[str, Any]:
    """A mistake's tile from its rows of top_examples, the deepest layer's first."""
    first = rows[0]
    image_id = first[contract.IMAGE_ID]
    overlays = inputs.overlays
    conf = first.get(contract.CONFIDENCE)
    pushed = []
    for r in rows:
        layer, c = r[contract.LAYER], int(r[contract.CHANNEL])
        text = f"{layer} c{c} pushed hardest (z {r[contract.PUSH]:.1f})"
        drove = inputs.mistake_drivers.get((image_id, layer))
        if drove:
            text += f"; drove {r[contract.PRED]} most: " + ", ".join(f"c{ch} ({v:.3g})" for ch, v in drove)
        pushed.append(text)
    concept_line = ((inputs.concepts or {}).get("mistakes") or {}).get(image_id)
    if concept_line:
        pushed.append(concept_line)
    return {
        "image_id": image_id,
        "href": card_link(image_id),
        "src": overlays.tiles.get((image_id, first[contract.LAYER], int(first[contract.CHANNEL]))),
        "why": overlays.unreadable.get(image_id) or overlays.note or "no overlay",
        "value": None,
        "label": first[contract.LABEL] if isinstance(first[contract.LABEL], str) else None,
        "pred": (
            f"{first[contract.PRED]} ({conf:.0%})" if isinstance(first[contract.PRED], str) and pd.notna(conf) else None
        ),
        "pushed": pushed,
    }
