"""Overlay tiles for the page's answer and mistakes: numpy in, numpy out; and, from top_examples, what the re-run
must compute for each shown image (its channels).

One colour scale per channel across all of its tiles (0 to the largest value of that channel's maps over the
images shown), so a weak response looks weak next to a strong one. Tiles are thumbnails: the map is upsampled
onto the thumbnail of the crop the network saw, which covers the same pixels, so alignment is kept.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.stats.recompute import ShownImage
from analysis.store import contract
from reports.overlays import make_overlay


def compute_channel_scales(shown: Iterable[ShownImage]) -> dict[tuple[str, int], tuple[float, float]]:
    """{(layer, channel): (0, vmax)} with vmax the largest value of the channel's maps over every shown image."""
    top: dict[tuple[str, int], float] = {}
    for item in shown:
        for layer, channels in item.maps.items():
            for c, fmap in channels.items():
                top[(layer, c)] = max(top.get((layer, c), 0.0), float(fmap.max()))
    return {key: (0.0, vmax) for key, vmax in top.items()}


def make_tiles(
    shown: Sequence[ShownImage], scales: Mapping[tuple[str, int], tuple[float, float]], cmap: str, alpha: float
) -> dict[tuple[str, str, int], np.ndarray]:
    """{(image_id, layer, channel): (T, T, 3) uint8 overlay} for every map of every readable shown image."""
    tiles = {}
    for item in shown:
        if item.view is None:
            continue
        for layer, channels in item.maps.items():
            for c, fmap in channels.items():
                vmin, vmax = scales[(layer, c)]
                tiles[(item.image_id, layer, c)] = make_overlay(item.view, fmap, vmin, vmax, cmap=cmap, alpha=alpha)
    return tiles


def list_needs(examples: pd.DataFrame) -> dict[str, dict[str, set[int]]]:
    """top_examples rows -> {image_id: {layer: channels}}: what each shown image must be re-run for."""
    needs: dict[str, dict[str, set[int]]] = {}
    for image_id, layer, channel in zip(
        examples[contract.IMAGE_ID], examples[contract.LAYER], examples[contract.CHANNEL]
    ):
        needs.setdefault(image_id, {}).setdefault(layer, set()).add(int(channel))
    return needs
