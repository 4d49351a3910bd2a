"""Per-class histograms of every channel's mean, for the report's channel browser.

Each channel gets BINS equal bins from 0 to its largest mean over the run (channel means are post-ReLU, so never
negative). Channels are read in blocks sized by `memory_bytes`, like the statistics, so memory stays bounded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from analysis.stats.groups import Groups
from analysis.store import contract
from analysis.store.blocks import read_channel_block, read_image_ids

BINS = 16


def compute_histograms(
    run: str | os.PathLike, layers: Mapping[str, int], groups: Groups, memory_bytes: int
) -> dict[str, dict[str, np.ndarray]]:
    """{layer: {"top": (C,) float32 largest mean, "counts": (C, K, BINS) int32}}; images in no class are left out."""
    out = {}
    k = len(groups.classes)
    for layer, c in layers.items():
        table = contract.activation_dir(Path(run), layer, "mean")
        ids = read_image_ids(table)
        codes = groups.codes_of(ids)
        top = np.zeros(c, np.float32)
        counts = np.zeros((c, k, BINS), np.int32)
        step = max(1, memory_bytes // (8 * max(1, len(ids))))
        for start in range(0, c, step):
            chans = np.arange(start, min(c, start + step))
            block = read_channel_block(table, chans.tolist(), len(ids))  # (B, N)
            if not len(ids):
                continue
            top[chans] = block.max(axis=1)
            scale = np.where(top[chans] > 0, top[chans], 1.0).astype(np.float64)[:, None]
            bins = np.clip((block / scale * BINS).astype(np.int64), 0, BINS - 1)  # (B, N)
            offsets = np.arange(len(chans))[:, None] * BINS
            for j in range(k):
                flat = (bins[:, codes == j] + offsets).ravel()
                counts[chans, j] = np.bincount(flat, minlength=len(chans) * BINS).reshape(len(chans), BINS)
        out[layer] = {"top": top, "counts": counts}
    return out
