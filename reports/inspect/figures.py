"""The inspect page's figures: each function returns a matplotlib Figure and never saves it.

Figures are built with matplotlib's object API (no pyplot), so nothing global is touched and each one is freed
when dropped (reports/encode.py turns them into PNG bytes).
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

TILE_SIDE = 96  # feature-map tiles larger than this are area-averaged down before drawing
HIGHLIGHT = "#d62728"
PLAIN = "#7f7f7f"


def make_conv_channels_figure(output: np.ndarray, names: Sequence[str]) -> Figure:
    """(3, H, W) conv output: each channel on its own, with its own colour scale (raw values on the bar)."""
    fig = Figure(figsize=(12, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    for c, ax in enumerate(axes):
        im = ax.imshow(output[c], cmap="gray", interpolation="nearest")
        ax.set_title(f"output channel {c}: {names[c]}", fontsize=10)
        ax.set_axis_off()
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    return fig


def make_probability_figure(classes: Sequence[str], probs: np.ndarray, logits: np.ndarray) -> Figure:
    """Horizontal bars of the class probabilities, the predicted class highlighted, logits in the labels."""
    k = len(classes)
    fig = Figure(figsize=(7, 0.6 * k + 1.2), layout="constrained")
    ax = fig.subplots()
    top = int(np.argmax(probs))
    y = np.arange(k)
    ax.barh(y, probs, color=[HIGHLIGHT if i == top else PLAIN for i in range(k)])
    ax.set_yticks(y, [f"{c} (logit {float(z):.3f})" for c, z in zip(classes, logits)])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("softmax probability")
    for i, p in enumerate(probs):
        ax.text(min(float(p) + 0.01, 0.9), i, f"{float(p):.4f}", va="center", fontsize=9)
    return fig


def make_feature_grid_figure(
    maps: np.ndarray, means: np.ndarray, layer: str, max_tiles: int, cmap: str = "viridis"
) -> Figure:
    """(C, h, w) maps as tiles, highest channel mean first, up to max_tiles; one colour scale and bar per grid.

    The tiles are one mosaic drawn by a single imshow: 64 separate axes would take seconds to render.
    """
    order = np.argsort(-means, kind="stable")[:max_tiles]
    shown = _shrink(maps[order], TILE_SIDE)  # (n, h, w): a tile is drawn about TILE_SIDE pixels wide anyway
    n, (h, w) = len(order), shown.shape[1:]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    gap, band = max(1, h // 12), max(2, math.ceil(h * 0.16))  # band: room above each tile for its label
    cell_h, cell_w = h + gap + band, w + gap
    mosaic = np.full((rows * cell_h, cols * cell_w), np.nan, np.float32)
    vmax = float(maps[order].max()) if n else 0.0  # of the full-resolution maps: the scale does not depend on _shrink
    vmax = vmax if vmax > 0 else 1.0
    fig = Figure(figsize=(1.3 * cols + 1.4, 1.3 * rows * cell_h / cell_w + 0.7), layout="constrained")
    ax = fig.subplots()
    labels = []
    for i, c in enumerate(order):
        r, q = divmod(i, cols)
        y0, x0 = r * cell_h + band, q * cell_w
        mosaic[y0 : y0 + h, x0 : x0 + w] = shown[i]
        labels.append((x0, y0, f"c{int(c)}  {float(means[c]):.3g}"))
    colormap = _colormap_with_white_bad(cmap)
    im = ax.imshow(mosaic, cmap=colormap, vmin=0.0, vmax=vmax, interpolation="nearest")
    for x0, y0, text in labels:
        ax.text(x0, y0 - 0.5, text, fontsize=6.5, va="bottom", ha="left")
    ax.set_axis_off()
    ax.set_title(f"{layer}: {n} of {maps.shape[0]} channels, highest mean first (label: channel, mean)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label="activation after ReLU (one scale for the grid)")
    return fig


def _shrink(maps: np.ndarray, side: int) -> np.ndarray:
    """(n, h, w) -> maps no larger than side x side, by area averaging (what a downscaled picture shows)."""
    n, h, w = maps.shape
    if max(h, w) <= side:
        return maps
    scale = side / max(h, w)
    x = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]  # (n, 1, h, w)
    return F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")[:, 0].numpy()


def _colormap_with_white_bad(name: str):
    return matplotlib.colormaps[name].with_extremes(bad="white")  # NaN: the gaps between tiles


def make_means_figure(means: np.ndarray, layer: str, top: int) -> Figure:
    """Per-channel mean of one layer as bars, the highest channel marked."""
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    ax = fig.subplots()
    # One filled step line for all bars (512 Rectangle artists take a second to draw), the top one on top of it.
    ax.stairs(means, np.arange(len(means) + 1) - 0.5, fill=True, color=PLAIN)
    ax.bar([top], [float(means[top])], width=1.0, color=HIGHLIGHT)
    ax.annotate(
        f"c{top} = {float(means[top]):.4g}",
        xy=(top, float(means[top])),
        xytext=(0, 4),
        textcoords="offset points",
        ha="center",
        color=HIGHLIGHT,
        fontsize=9,
    )
    ax.set_xlim(-0.5, len(means) - 0.5)
    ax.set_ylim(0, max(float(means[top]), 1e-12) * 1.15)
    ax.set_xlabel("channel")
    ax.set_ylabel("mean activation")
    ax.set_title(f"{layer}: mean of each channel's map ({len(means)} channels)", fontsize=10)
    return fig


def make_contribution_figure(contrib: np.ndarray, layer: str, top_mean: int, cls: str) -> Figure:
    """Each channel's contribution to the class logit as bars: the largest in red, the highest-mean channel marked."""
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    ax = fig.subplots()
    top = int(np.argmax(contrib))
    ax.stairs(contrib, np.arange(len(contrib) + 1) - 0.5, fill=True, color=PLAIN, baseline=0.0)
    ax.bar([top], [float(contrib[top])], width=1.0, color=HIGHLIGHT)
    ax.annotate(
        f"c{top} = {float(contrib[top]):.4g}",
        xy=(top, float(contrib[top])),
        xytext=(0, 4),
        textcoords="offset points",
        ha="center",
        color=HIGHLIGHT,
        fontsize=9,
    )
    ax.axvline(top_mean, color="#1f77b4", linewidth=1, linestyle="--")
    ax.annotate(
        f"highest mean: c{top_mean}",
        xy=(top_mean, 0),
        xytext=(4, 4),
        textcoords="offset points",
        color="#1f77b4",
        fontsize=8,
    )
    ax.axhline(0.0, color="#444", linewidth=0.6)
    ax.set_xlim(-0.5, len(contrib) - 0.5)
    ax.set_xlabel("channel")
    ax.set_ylabel(f"contribution to logit_{cls}")
    ax.set_title(f"{layer}: gradient x activation of each channel, summed over the map, for {cls}", fontsize=10)
    return fig


def make_gradcam_figure(view: np.ndarray, overlays: dict[str, np.ndarray], vmaxes: dict[str, float]) -> Figure:
    """The crop the network saw, then the Grad-CAM of each class over it, each on its own colour scale."""
    fig = Figure(figsize=(3.6 * (1 + len(overlays)), 3.9), layout="constrained")
    axes = fig.subplots(1, 1 + len(overlays))
    axes[0].imshow(view)
    axes[0].set_title("the crop the network saw", fontsize=10)
    for ax, (cls, overlay) in zip(axes[1:], overlays.items()):
        ax.imshow(overlay)
        scale = f"0 to {vmaxes[cls]:.3g}" if vmaxes[cls] > 0 else "no positive evidence"
        ax.set_title(f"Grad-CAM of {cls}: {scale}", fontsize=10)
    for ax in axes:
        ax.set_axis_off()
    return fig


def make_overlay_figure(
    view: np.ndarray, fmap: np.ndarray, overlay: np.ndarray, vmin: float, vmax: float, cmap: str, title: str
) -> Figure:
    """The crop the network saw, the channel's raw map (its own resolution) and the map over the crop."""
    fig = Figure(figsize=(11, 3.9), layout="constrained")
    a, b, c = fig.subplots(1, 3)
    a.imshow(view)
    a.set_title("as the network sees it", fontsize=10)
    im = b.imshow(fmap, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    b.set_title(f"the map, {fmap.shape[0]}x{fmap.shape[1]}", fontsize=10)
    fig.colorbar(im, ax=b, fraction=0.046, pad=0.02)
    c.imshow(overlay)
    c.set_title("upsampled and blended", fontsize=10)
    for ax in (a, b, c):
        ax.set_axis_off()
    fig.suptitle(title, fontsize=11)
    return fig


def make_run_channel_figure(
    overlay: np.ndarray, run_values: np.ndarray, value: float, percentile: float, title: str, xlabel: str
) -> Figure:
    """A channel's overlay beside the run's distribution of that channel, this image's value marked."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    a, b = fig.subplots(1, 2, gridspec_kw={"width_ratios": (1, 1.6)})
    a.imshow(overlay)
    a.set_axis_off()
    b.hist(run_values, bins=min(60, max(5, len(run_values) // 5)), color=PLAIN)
    b.axvline(value, color=HIGHLIGHT, linewidth=2)
    b.annotate(
        f"this image: {value:.4g}\npercentile {percentile:.1f}",
        xy=(value, 1),
        xycoords=("data", "axes fraction"),
        xytext=(4, -4),
        textcoords="offset points",
        va="top",
        color=HIGHLIGHT,
        fontsize=9,
    )
    b.set_xlabel(xlabel)
    b.set_ylabel("images in the run")
    fig.suptitle(title, fontsize=11)
    return fig
