"""Pictures to bytes, for files the pages carry: figures and images as PNG, overlay tiles as JPEG."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure
from PIL import Image


def encode_png(obj: Figure | np.ndarray, dpi: int = 100) -> bytes:
    """A Figure, or an (H, W, 3) uint8 image, as PNG bytes."""
    buf = io.BytesIO()
    # zlib level 1: figures of feature maps barely compress further, and level 6 doubles the page's render time
    if isinstance(obj, Figure):
        obj.savefig(buf, format="png", dpi=dpi, pil_kwargs={"compress_level": 1})
    else:
        Image.fromarray(np.asarray(obj, dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """An (H, W, 3) uint8 image as JPEG bytes (the report's overlay tiles)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
