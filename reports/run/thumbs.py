"""A thumbnail of every ok image, for the map's hover and the image cards: the crop the network saw, T x T pixels,
packed COLUMNS to a row into JPEG sprite sheets of PER_SHEET cells that the page loads only when a hover or a card
needs one.

Cost: one read and one decode per ok image, by the project's decoder (analysis/data/decoding.py, which gives the
reason when an image cannot be decoded) in its draft mode: a JPEG's DCT is scaled by 1/2, 1/4 or 1/8 while decoding,
to the smallest size that still covers T pixels of the crop, which makes a 2,000-pixel photo about ten times cheaper
than a full decode. Bytes are read through the run's images (analysis/store/run.py RunImages, DATA found once per
report): no link is followed out of DATA. Memory: one sheet of cells at a time.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from analysis.data.decoding import DecodeError, decode_image
from analysis.data.sources import SourceError
from analysis.store.run import GONE, RunImages

COLUMNS = 16
PER_SHEET = 256  # 16 x 16 cells: a 1,280 x 1,280 sheet at the default T = 80


def compute_thumbnail(data: bytes, size: int, crop_fraction: float, max_pixels: int) -> np.ndarray:
    """(size, size, 3) uint8: the centre crop the network saw, downscaled; DecodeError when it cannot be decoded."""
    image = decode_image(data, max_pixels, min_side=math.ceil(size / crop_fraction)).image
    w, h = image.size
    side = min(w, h) * crop_fraction
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    return np.asarray(image.resize((size, size), Image.BILINEAR, box=box), dtype=np.uint8)


def _one(images: RunImages, image_id: str, size: int, crop_fraction: float) -> np.ndarray | str:
    try:
        data = images.read_bytes(image_id)
        return GONE if data is None else compute_thumbnail(data, size, crop_fraction, images.max_image_pixels)
    except (SourceError, DecodeError) as e:
        return f"cannot be read now ({e.reason})"


def read_thumbnails(
    images: RunImages, image_ids: Sequence[str], size: int, crop_fraction: float, threads: int = 1
) -> Iterator[list[np.ndarray | str]]:
    """Per PER_SHEET ids, in order: each image's (size, size, 3) thumbnail, or why it has none. crop_fraction:
    crop / resize of the run's preprocessing, the share of the short side the network saw. `images` already found
    (images.find(): its DataError is the caller's to report)."""
    with ThreadPoolExecutor(max(1, threads)) as pool:  # PIL decodes and resizes without the GIL
        for lo in range(0, len(image_ids), PER_SHEET):
            yield list(pool.map(lambda i: _one(images, i, size, crop_fraction), image_ids[lo : lo + PER_SHEET]))


def make_sheet(cells: Sequence[np.ndarray | None], size: int) -> np.ndarray:
    """(rows * size, COLUMNS * size, 3) uint8: cell k at row k // COLUMNS, column k % COLUMNS; None and the rest
    of the last row grey."""
    rows = -(-len(cells) // COLUMNS)
    sheet = np.full((rows * size, COLUMNS * size, 3), 238, dtype=np.uint8)
    for k, cell in enumerate(cells):
        if cell is not None:
            r, c = divmod(k, COLUMNS)
            sheet[r * size : (r + 1) * size, c * size : (c + 1) * size] = cell
    return sheet
