"""Image records -> preprocessed tensors for a DataLoader, with every bad file kept as its own error item.

A file that cannot be read or decoded is never replaced by another image (timm's ImageDataset does that, which
attaches a result to the wrong file): it travels through the batch as an error, in its place, so that every file
found gets exactly one row.
"""
from __future__ import annotations

import dataclasses
import os
import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch
from torch.utils.data import Dataset

from analysis.data.decoding import DecodeError, decode_image
from analysis.data.preprocessing import Preprocessing
from analysis.data.sources import ImageRecord, SourceError, read_bytes


@dataclass
class Item:
    index: int                   # position in the dataset's records
    image: torch.Tensor | None   # (3, N, N) float32, None when the file failed
    error: str | None            # the reason when it failed, else None
    width: int | None            # as stored; also set for a failure when the header could be read
    height: int | None
    format: str | None
    sha256: str | None = None    # of the file's bytes, as read for decoding; None when they could not be read


class ImageDataset(Dataset):
    """records[i] -> Item: read the bytes, decode, preprocess. Picklable, so it runs in DataLoader workers (zip
    archives are opened once per worker process by `read_bytes`)."""

    def __init__(self, records: Sequence[ImageRecord], preprocessing: Preprocessing, max_pixels: int,
                 max_file_bytes: int, root: str | None = None):
        """root: DATA; every file read must lie inside it (analysis.data.sources.read_bytes)."""
        self.records = records
        self.root = os.path.realpath(root) if root is not None else None
        self.preprocessing = preprocessing
        self.max_pixels = max_pixels
        self.max_file_bytes = max_file_bytes

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Item:
        try:
            data = read_bytes(self.records[i], self.max_file_bytes, self.root)
        except SourceError as e:
            return Item(index=i, image=None, error=e.reason, width=None, height=None, format=None)
        digest = hashlib.sha256(data).hexdigest()   # the bytes just read: no second read of the file
        try:
            decoded = decode_image(data, self.max_pixels)
        except DecodeError as e:
            return Item(index=i, image=None, error=e.reason, width=e.width, height=e.height, format=e.format,
                        sha256=digest)
        image = self.preprocessing.transform(decoded.image)   # (3, N, N)
        return Item(index=i, image=image, error=None, width=decoded.width, height=decoded.height,
                    format=decoded.format, sha256=digest)


@dataclass
class Batch:
    indices: list[int]           # dataset index of every item, good or bad, in order
    images: torch.Tensor         # (B_ok, 3, N, N): the good items in order; (0, 3, 0, 0) when none is good
    ok: list[bool]
    errors: list[str | None]
    widths: list[int | None]
    heights: list[int | None]
    formats: list[str | None]
    sha256s: list[str | None]    # of each item's bytes; None where they could not be read

    def pin_memory(self) -> "Batch":
        """Called by DataLoader(pin_memory=True) in its pinning thread."""
        return dataclasses.replace(self, images=self.images.pin_memory())


def collate_images(items: list[Item]) -> Batch:
    """The DataLoader's collate_fn: stack the good images, keep every item's place and error."""
    good = [item.image for item in items if item.image is not None]
    # With no good item the crop size is unknown here; the batch is (0, 3, 0, 0) and the caller skips the forward.
    images = torch.stack(good) if good else torch.empty(0, 3, 0, 0)
    return Batch(
        indices=[item.index for item in items],
        images=images,
        ok=[item.image is not None for item in items],
        errors=[item.error for item in items],
        widths=[item.width for item in items],
        heights=[item.height for item in items],
        formats=[item.format for item in items],
        sha256s=[item.sha256 for item in items],
    )
