"""Channel maps laid over images: numpy in, numpy out.

Used by the inspect page and the report stage alike. A map is upsampled bilinearly to the image it was computed
from (the crop the network saw, so pixels line up), coloured with a matplotlib colormap between a caller-chosen
vmin and vmax (so that several tiles of one channel share a scale and a weak response looks weak), then blended.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F


def upsample_map(fmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) -> (H, W) float32, bilinear with align_corners=False (each value sits at its cell's centre)."""
    fmap = np.asarray(fmap, dtype=np.float32)
    if fmap.ndim != 2:
        raise ValueError(f"fmap must be 2-D (h, w), got shape {fmap.shape}")
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"size must be two positive integers (H, W), got {size!r}")
    x = torch.from_numpy(np.ascontiguousarray(fmap))[None, None]  # (1, 1, h, w)
    y = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)  # (1, 1, H, W)
    return y[0, 0].numpy()


def colorize(values: np.ndarray, vmin: float, vmax: float, cmap: str = "jet") -> np.ndarray:
    """(H, W) values -> (H, W, 3) uint8 colours, clipped to [vmin, vmax]; vmax == vmin (or NaN) gives the low colour."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"values must be 2-D (H, W), got shape {values.shape}")
    if not (np.isfinite(vmin) and np.isfinite(vmax)) or vmax < vmin:
        raise ValueError(f"need finite vmin <= vmax, got vmin={vmin!r}, vmax={vmax!r}")
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown colormap {cmap!r}; matplotlib has e.g. jet, viridis, magma, inferno") from None
    span = float(vmax) - float(vmin)
    unit = np.zeros_like(values) if span == 0 else (values - np.float32(vmin)) / np.float32(span)
    unit = np.clip(np.nan_to_num(unit, nan=0.0), 0.0, 1.0)
    rgba = colormap(unit, bytes=True)  # (H, W, 4) uint8
    return np.ascontiguousarray(rgba[..., :3])


def blend(image: np.ndarray, heat: np.ndarray, alpha: float) -> np.ndarray:
    """(1 - alpha) * image + alpha * heat, both (H, W, 3) uint8 -> (H, W, 3) uint8."""
    image = np.asarray(image)
    heat = np.asarray(heat)
    if image.shape != heat.shape or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image and heat must both be (H, W, 3), got {image.shape} and {heat.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha!r}")
    out = (1.0 - alpha) * image.astype(np.float32) + alpha * heat.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def make_overlay(
    image: np.ndarray, fmap: np.ndarray, vmin: float, vmax: float, cmap: str = "jet", alpha: float = 0.5
) -> np.ndarray:
    """A channel's (h, w) map over the (H, W, 3) uint8 image it was computed from -> (H, W, 3) uint8."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    heat = colorize(upsample_map(fmap, image.shape[:2]), vmin, vmax, cmap)
    return blend(image, heat, alpha)


def make_css_gradient(cmap: str, stops: int = 11) -> str:
    """The colormap as a CSS linear-gradient, left (vmin) to right (vmax): a page's colour bar."""
    colours = (np.asarray(matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, stops)))[:, :3] * 255).round()
    parts = [
        f"#{int(r):02x}{int(g):02x}{int(b):02x} {100 * i / (stops - 1):.0f}%" for i, (r, g, b) in enumerate(colours)
    ]
    return f"linear-gradient(to right, {', '.join(parts)})"
