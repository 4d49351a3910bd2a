"""A finished run's images again, batch by batch, through the extract's own pipeline: analysis.data.dataset's
ImageDataset (a batch decoded on threads, every bad file kept as its own error) and collate_images, reading each
image's bytes by id from the run's RunImages (its DATA found once) instead of from a discovery listing.

The sha256 and the pHash the extract records are not computed again: the concept stage needs the pixels only.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import torch
from PIL import Image

from analysis.data.dataset import ImageDataset, collate_images
from analysis.data.preprocessing import Preprocessing
from analysis.data.sources import SourceError
from analysis.store.run import GONE, RunImages


class RunImageDataset(ImageDataset):
    """ids[i] -> Item of that image of the run: its bytes from RunImages, decoded and preprocessed to uint8."""

    def __init__(self, images: RunImages, ids: Sequence[str], preprocessing: Preprocessing, threads: int = 1):
        super().__init__(list(ids), preprocessing, images.max_image_pixels, images.max_file_bytes, None, threads)
        self.images = images

    def read(self, i: int) -> bytes:
        data = self.images.read_bytes(self.records[i])
        if data is None:
            raise SourceError(GONE)
        return data

    def digest(self, data: bytes) -> None:
        return None

    def fingerprint(self, image: Image.Image) -> None:
        return None


@dataclasses.dataclass(frozen=True)
class PassSettings:
    """How a pass over images runs the model."""

    device: torch.device
    precision: str  # the run's: fp32 | bf16 | fp16 (analysis.model.precision.autocast)
    batch_size: int


@dataclasses.dataclass(frozen=True)
class ImageBatch:
    ids: list[str]  # the images read, in order
    x: torch.Tensor  # (B, 3, N, N) float32 normalised network input on the device, channels_last
    failed: list[tuple[str, str]]  # (image id, why) of the batch's images that could not be read now


def iter_image_batches(
    images: RunImages, ids: Sequence[str], preprocessing: Preprocessing, run: PassSettings
) -> Iterator[ImageBatch]:
    """The images `ids`, in order, run.batch_size at a time, decoded on this process's compute threads (idle while a
    batch is decoded, as in the extract with no worker process), normalised on run.device."""
    device = run.device
    dataset = RunImageDataset(images, ids, preprocessing, threads=max(1, torch.get_num_threads()))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=run.batch_size, collate_fn=collate_images, pin_memory=device.type == "cuda"
    )
    for batch in loader:
        names = [dataset.records[i] for i in batch.indices]
        ok = [name for name, good in zip(names, batch.ok) if good]
        failed = [(name, str(why)) for name, good, why in zip(names, batch.ok, batch.errors) if not good]
        x = batch.images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        yield ImageBatch(ok, preprocessing.normalize(x) if ok else x.float(), failed)
