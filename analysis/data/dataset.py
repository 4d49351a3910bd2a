"""Image records -> preprocessed uint8 tensors for a DataLoader, with every bad file kept as its own error item.

A file that cannot be read or decoded is never replaced by another image (timm's ImageDataset does that, which
attaches a result to the wrong file): it travels through the batch as an error, in its place, so that every file
found gets exactly one row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset, get_worker_info

from analysis.data.decoding import Decoded, DecodeError, decode_image
from analysis.data.perceptual_hash import compute_phash
from analysis.data.preprocessing import Preprocessing
from analysis.data.sources import ImageRecord, SourceError, read_bytes


@dataclass
class Item:
    index: int  # position in the dataset's records
    image: torch.Tensor | None  # (3, N, N) uint8 (Preprocessing.normalize finishes it on the device); None: failed,
    # or left to the device (`encoded`)
    error: str | None  # the reason when it failed, else None
    width: int | None  # as stored; also set for a failure when the header could be read
    height: int | None
    format: str | None
    sha256: str | None = None  # of the file's bytes, as read for decoding; None when they could not be read
    phash: int | None = None  # of the whole decoded image (contract.PHASH); None when it failed
    # A JPEG left for the device to decode (analysis/data/jpeg_bytes.py; image is None, error None): its bytes and
    # the EXIF orientation (1-8) the device applies. None on the CPU path.
    encoded: bytearray | None = None
    orientation: int = 1


class ImageDataset(Dataset):
    """records[i] -> Item: read the bytes, decode, preprocess. Picklable, so it runs in DataLoader workers (zip
    archives are opened once per worker process by `read_bytes`).

    A batch is loaded on `threads` threads (`__getitems__`, which a DataLoader calls with a batch's indices): PIL's
    decoder and resampler and hashlib release the GIL, so a batch decoded in the main process (workers=0, the
    default on a small CPU) takes the cores the forward leaves idle between its batches: 0.56-0.67x the time on
    2 threads (`python -m benchmarks.bench_input`). Inside a DataLoader worker process a batch is loaded on one thread:
    the workers are the parallelism there."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        preprocessing: Preprocessing,
        max_pixels: int,
        max_file_bytes: int,
        root: str | None = None,
        threads: int = 1,
    ):
        """root: DATA; every file read must lie inside it (analysis.data.sources.read_bytes)."""
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads {threads!r} is not allowed; a positive integer")
        self.records = records
        self.root = os.path.realpath(root) if root is not None else None
        self.preprocessing = preprocessing
        self.max_pixels = max_pixels
        self.max_file_bytes = max_file_bytes
        self.threads = threads
        self._pool: tuple[int, ThreadPoolExecutor] | None = None  # (pid that made it, pool): never inherited

    def __len__(self) -> int:
        return len(self.records)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pool": None}  # threads do not cross into a worker process

    def __getitems__(self, indices: Sequence[int]) -> list[Item]:
        """The items of one batch, in order, on this process's threads (one inside a DataLoader worker)."""
        if self.threads == 1 or len(indices) < 2 or get_worker_info() is not None:
            return [self[i] for i in indices]
        if self._pool is None or self._pool[0] != os.getpid():  # a forked copy has the object, not the threads
            self._pool = (os.getpid(), ThreadPoolExecutor(self.threads, thread_name_prefix="decode"))
        # decode_image silences PIL's warnings with warnings.catch_warnings, which saves and restores the
        # process's one list of filters: two threads doing it at once can leave "ignore" behind for good. Inside
        # this block every state they save or restore ignores, and this block restores the caller's.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return list(self._pool[1].map(self.__getitem__, indices))

    def __getitem__(self, i: int) -> Item:
        try:
            data = self.read(i)
        except SourceError as e:
            return Item(index=i, image=None, error=e.reason, width=None, height=None, format=None)
        return self.make_item(i, data)

    def make_item(self, i: int, data: bytes) -> Item:
        """The item of record i from its bytes: decoded and preprocessed here (a subclass may leave some for the
        device: analysis/data/jpeg_bytes.py)."""
        return self.decode_item(i, data, self.decode, lambda decoded: {"image": self.preprocess(decoded.image)})

    def decode_item(self, i: int, data: bytes, decode, keep) -> Item:
        """Record i's item: its bytes hashed (the bytes just read: no second read of the file) and decoded by
        `decode` (a DecodeError gives the failure's row), the good row with the decoded image's pHash and the
        fields `keep(decoded)` gives: the preprocessed image, or what the device needs to make it."""
        digest = self.digest(data)
        try:
            decoded = decode(data)
        except DecodeError as e:
            return Item(
                index=i, image=None, error=e.reason, width=e.width, height=e.height, format=e.format, sha256=digest
            )
        return Item(
            index=i,
            error=None,
            width=decoded.width,
            height=decoded.height,
            format=decoded.format,
            sha256=digest,
            phash=self.fingerprint(decoded.image),
            **keep(decoded),
        )

    # The steps of one item, one method each, so that benchmarks.profile_extract times the job's own code.
    def read(self, i: int) -> bytes:
        return read_bytes(self.records[i], self.max_file_bytes, self.root)

    def digest(self, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def decode(self, data: bytes) -> Decoded:
        return decode_image(data, self.max_pixels)

    def fingerprint(self, image: Image.Image) -> int:
        return compute_phash(image)  # the whole decoded image, before the crop

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.preprocessing.to_uint8(image)  # (3, N, N) uint8


@dataclass
class Batch:
    indices: list[int]  # dataset index of every item, good or bad, in order
    # (B_ok, 3, N, N) uint8: the good items in order; (0, 3, 0, 0) when none is good. Out of the loader with
    # --decode gpu: the good items but those in `encoded`, until the device step adds them.
    images: torch.Tensor
    ok: list[bool]
    errors: list[str | None]
    widths: list[int | None]
    heights: list[int | None]
    formats: list[str | None]
    sha256s: list[str | None]  # of each item's bytes; None where they could not be read
    phashes: list[int | None]  # of each decoded image (contract.PHASH); None where it failed
    # JPEGs the device decodes (--decode gpu): each one's place among the items (an ok item whose crop is not in
    # `images` yet), bytes and EXIF orientation. analysis/data/device_decode.py decodes them and puts their crops
    # into `images` in order, leaving these empty: after that step `images` holds every good item, as above.
    encoded_at: list[int] = dataclasses.field(default_factory=list)
    encoded: list[bytearray] = dataclasses.field(default_factory=list)
    orientations: list[int] = dataclasses.field(default_factory=list)

    def pin_memory(self) -> "Batch":
        """Called by DataLoader(pin_memory=True) in its pinning thread."""
        return dataclasses.replace(self, images=self.images.pin_memory())


def collate_images(items: list[Item]) -> Batch:
    """The DataLoader's collate_fn: stack the good images, keep every item's place and error; a JPEG left for the
    device keeps its bytes (pickled through the worker's pipe, not /dev/shm: a photo's bytes can be many times its
    crop's, which jobs/shared_memory.py sizes /dev/shm for)."""
    good = [item.image for item in items if item.image is not None]
    encoded_at = [j for j, item in enumerate(items) if item.encoded is not None]
    # With no good item the crop size is unknown here; the batch is (0, 3, 0, 0) and the caller skips the forward.
    images = torch.stack(good) if good else torch.empty(0, 3, 0, 0, dtype=torch.uint8)
    return Batch(
        indices=[item.index for item in items],
        images=images,
        ok=[item.image is not None or item.encoded is not None for item in items],
        errors=[item.error for item in items],
        widths=[item.width for item in items],
        heights=[item.height for item in items],
        formats=[item.format for item in items],
        sha256s=[item.sha256 for item in items],
        phashes=[item.phash for item in items],
        encoded_at=encoded_at,
        encoded=[items[j].encoded for j in encoded_at],
        orientations=[items[j].orientation for j in encoded_at],
    )
