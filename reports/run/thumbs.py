"""A thumbnail of every ok image, for the map's hover and the image cards: the crop the network saw, T x T pixels,
packed COLUMNS to a row into JPEG sprite sheets of PER_SHEET cells that the page loads only when a hover or a card
needs one.

Cost: one read and one decode per ok image, by the project's decoder (analysis/data/decoding.py, which gives the
reason when an image cannot be decoded) in its draft mode: a JPEG's DCT is scaled by 1/2, 1/4 or 1/8 while decoding,
to the smallest size that still covers T pixels of the crop, which makes a 2,000-pixel photo about ten times cheaper
than a full decode. Bytes are read with analysis/data/sources.py: no link is followed out of DATA. Memory: one
sheet of cells at a time.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from analysis.data.decoding import DecodeError, decode_image
from analysis.data.discovery import find_images
from analysis.data.sources import SourceError, read_bytes

COLUMNS = 16
PER_SHEET = 256                        # 16 x 16 cells: a 512 x 512 sheet at T = 32


@dataclass(frozen=True)
class Source:
    """Where the run's images are read from, and how the network cropped them."""
    records: dict                     # image_id -> ImageRecord, found again now
    root: str                         # the real path of DATA
    max_file_bytes: int
    max_image_pixels: int
    crop_fraction: float              # crop / resize: the share of the short side the network saw


def compute_thumbnail(data: bytes, size: int, crop_fraction: float, max_pixels: int) -> np.ndarray:
    """(size, size, 3) uint8: the centre crop the network saw, downscaled; DecodeError when it cannot be decoded."""
    image = decode_image(data, max_pixels, min_side=math.ceil(size / crop_fraction)).image
    w, h = image.size
    side = min(w, h) * crop_fraction
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    return np.asarray(image.resize((size, size), Image.BILINEAR, box=box), dtype=np.uint8)


def read_source(data: str, max_file_bytes: int, max_image_pixels: int, crop_fraction: float) -> Source:
    """The run's DATA found again now; discovery's DataError when it cannot be read at all."""
    found = find_images(data)
    return Source({r.image_id: r for r in found.records}, os.path.realpath(found.root), max_file_bytes,
                  max_image_pixels, crop_fraction)


def _one(source: Source, image_id: str, size: int) -> np.ndarray | str:
    record = source.records.get(image_id)
    if record is None:
        return "not found in DATA any more"
    try:
        return compute_thumbnail(read_bytes(record, source.max_file_bytes, source.root), size,
                                 source.crop_fraction, source.max_image_pixels)
    except (SourceError, DecodeError) as e:
        return f"cannot be read now ({e.reason})"


def read_thumbnails(source: Source, image_ids: Sequence[str], size: int, threads: int = 1
                    ) -> Iterator[list[np.ndarray | str]]:
    """Per PER_SHEET ids, in order: each image's (size, size, 3) thumbnail, or why it has none."""
    with ThreadPoolExecutor(max(1, threads)) as pool:   # PIL decodes and resizes without the GIL
        for lo in range(0, len(image_ids), PER_SHEET):
            yield list(pool.map(lambda i: _one(source, i, size), image_ids[lo:lo + PER_SHEET]))


def make_sheet(cells: Sequence[np.ndarray | None], size: int) -> np.ndarray:
    """(rows * size, COLUMNS * size, 3) uint8: cell k at row k // COLUMNS, column k % COLUMNS; None and the rest
    of the last row grey."""
    rows = -(-len(cells) // COLUMNS)
    sheet = np.full((rows * size, COLUMNS * size, 3), 238, dtype=np.uint8)
    for k, cell in enumerate(cells):
        if cell is not None:
            r, c = divmod(k, COLUMNS)
            sheet[r * size:(r + 1) * size, c * size:(c + 1) * size] = cell
    return sheet
