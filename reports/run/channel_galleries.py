"""Every channel's galleries for the page: the channel_tops table (analysis/stats/channel_tops.py) in a compact form
for the page's inline JSON, images named by their row of the map (the explorer's `ids`; sprite cell i is row i).

    {"k": 8, "classes": [...], "group_by": "label" | "pred", "note": None or why there are no peak positions,
     "layers": {layer: [per channel c: [all, [per class: tiles, or "all" when it holds the same images as all]]]}}

tiles: [[map row, value (4 significant digits), peak_y * 100, peak_x * 100 (rounded; null without a peak)], ...],
the highest value first; a class with no images has [].
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.store import contract

SAME = "all"  # a class's entry when its top images are the same as over all images


def _percent(v: float) -> int | None:
    return None if np.isnan(v) else int(round(float(v) * 100))


def make_channel_galleries(
    tops: pd.DataFrame,
    image_ids: Sequence[str],
    layers: Mapping[str, int],
    classes: Sequence[str],
    group_by: str,
    k: int,
    note: str | None,
) -> dict[str, Any]:
    """tops: channel_tops; layers: {layer: channels} (every channel gets an entry, empty when it has no rows);
    image_ids: the map's rows (images not on the map are left out); k: report.top_images."""
    row = {str(image_id): r for r, image_id in enumerate(image_ids)}
    scope = {cls: j + 1 for j, cls in enumerate(classes)}
    tiles: dict[tuple[str, int, int], list] = {}
    t = tops.sort_values([contract.LAYER, contract.CHANNEL, contract.SCOPE, contract.CLASS, contract.IMAGE_RANK])
    for layer, ch, sc, cls, image_id, v, y, x in zip(
        t[contract.LAYER],
        t[contract.CHANNEL],
        t[contract.SCOPE],
        t[contract.CLASS],
        t[contract.IMAGE_ID],
        t[contract.VALUE].to_numpy(np.float64, na_value=np.nan),
        t[contract.PEAK_Y].to_numpy(np.float64, na_value=np.nan),
        t[contract.PEAK_X].to_numpy(np.float64, na_value=np.nan),
    ):
        if image_id not in row or (sc != contract.SCOPE_ALL and cls not in scope):
            continue
        key = (layer, int(ch), 0 if sc == contract.SCOPE_ALL else scope[cls])
        tiles.setdefault(key, []).append([row[image_id], float(f"{v:.4g}"), _percent(y), _percent(x)])
    out: dict[str, list] = {}
    for layer, n in layers.items():
        channels = []
        for c in range(int(n)):
            every = tiles.get((layer, c, 0), [])
            within = [tiles.get((layer, c, j + 1), []) for j in range(len(classes))]
            channels.append([every, [SAME if w and w == every else w for w in within]])
        out[layer] = channels
    return {"k": k, "classes": list(classes), "group_by": group_by, "note": note, "layers": out}
