"""The image cards' per-image data the page loads on demand: for every PER_PART consecutive rows of the map (the
explorer's `ids` order), one classic script, cards/part-NNNNN.js, that calls
`window.reportCards(<first row>, <data>)`, so that a page opened from file:// loads it with a <script> element
(no fetch). Its data, escaped for a script like the page's inline JSON (reports/escape.py script_json):

    {"layer": "conv5_3", "grid": [h, w], "classes": [...], "ids": [the rows' image ids],
     "rows": [per row: [per class: [max, base64 of h * w bytes, [[channel, contribution], ...]] or null]],
     "concepts": [per row: [per class: [[concept number, contribution, presence], ...]]]}   (with concepts only)

A map's cell value is byte * max / 255 (each map divided by its own max; max 0: an all-zero map); null: the image
has no Grad-CAM row for the class. Contributions: the TOP channels by contribution to the class logit at the
Grad-CAM layer, 4 significant digits.
"""

from __future__ import annotations

import base64
from typing import Any, Iterator, Sequence

import numpy as np

from analysis.stats.card_maps import CardMaps
from reports.escape import script_json

PER_PART = 1000
CALLBACK = "window.reportCards"


def round4(value: float) -> float:
    """4 significant digits: what the page prints."""
    return float(f"{value:.4g}")


def make_card_row(maps: CardMaps, row: int) -> list[Any]:
    """[per class: [max, base64 map, [[channel, contribution], ...]] or None] of one map row."""
    out: list[Any] = []
    for c in range(len(maps.classes)):
        scale = float(maps.scales[row, c])
        if np.isnan(scale):
            out.append(None)
            continue
        top = [
            [int(ch), round4(float(v))]
            for ch, v in zip(maps.channels[row, c], maps.contributions[row, c])
            if ch >= 0 and np.isfinite(v)
        ]
        out.append([round4(scale), base64.b64encode(maps.cams[row, c].tobytes()).decode("ascii"), top])
    return out


def make_card_parts(
    maps: CardMaps, image_ids: Sequence[str], concepts: Sequence[list] | None = None
) -> Iterator[tuple[int, str]]:
    """(first row, the script's text) of each part, in row order. concepts: per row, per class, the image's
    [[concept number, contribution, presence], ...] (reports/run/concepts.py index_image_concepts), or None."""
    for first in range(0, len(image_ids), PER_PART):
        rows = range(first, min(len(image_ids), first + PER_PART))
        data = {
            "layer": maps.layer,
            "grid": list(maps.grid),
            "classes": list(maps.classes),
            "ids": [str(image_ids[r]) for r in rows],
            "rows": [make_card_row(maps, r) for r in rows],
        }
        if concepts is not None:
            data["concepts"] = [concepts[r] for r in rows]
        yield first, f"{CALLBACK}({first}, {script_json(data)});\n"


def part_name(first_row: int) -> str:
    """cards/part-NNNNN.js of the part that starts at `first_row` (a number, never a name from the data)."""
    return f"cards/part-{first_row // PER_PART:05d}.js"


def make_cards_index(parts: list[str], maps: CardMaps | None, note: str | None = None) -> dict[str, Any]:
    """The page's `cards` entry: the parts (paths relative to the page, part i holding rows i * per_part on), the
    grid, the layer and the classes; with no Grad-CAM, no parts and the note saying why."""
    return {
        "parts": parts,
        "per_part": PER_PART,
        "callback": CALLBACK,
        "layer": maps.layer if maps else None,
        "grid": list(maps.grid) if maps else None,
        "classes": list(maps.classes) if maps else [],
        "top": int(maps.channels.shape[2]) if maps else 0,
        "note": note,
    }
