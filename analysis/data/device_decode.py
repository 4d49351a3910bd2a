"""The device's half of --decode gpu: a batch's JPEG bytes decoded in one torchvision.io.decode_jpeg call on the
device (nvJPEG on CUDA), each turned by its EXIF orientation, resized and center-cropped there as the run's
Preprocessing does it with PIL, and put in their places among the crops the loader made on the CPU.

Resize: torch's antialiased interpolation (ported from PIL's resampling) on float32, rounded to uint8, the same code on
any device; on the CPU device decode_jpeg is libjpeg-turbo, as in PIL, so the CPU runs this very path (the tests do).
Against the CPU path on the 20 real photos: at most 1 grey level apart, 0.06-0.11 on average (64 and 224 px, both
preprocessings; tests/test_device_decode.py). nvJPEG's colour conversion and chroma upsampling are its own, so on a GPU
the figures are bench_gpu's `decode` section's.

Failures: when the batched decode raises, each JPEG is decoded alone; one that still fails, or decodes to another
size than its header's, is decoded on the CPU here with the CPU path's own code (decode_image, Preprocessing.to_uint8,
compute_phash), so its row is that path's, error included. Nothing here waits for the device: shapes are known on
the host and the crops are queued (torchvision's decoder waits for its own stream only; a fallback's crop is copied
to the device as it comes, a rare wait).
"""

from __future__ import annotations

import dataclasses
import io

import torch
import torch.nn.functional as nnf
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from analysis.data.dataset import Batch
from analysis.data.decoding import DecodeError, decode_image
from analysis.data.perceptual_hash import compute_phash
from analysis.data.preprocessing import Preprocessing, _resized_size

INTERPOLATIONS = ("bilinear", "bicubic")  # those torch antialiases as PIL does
_ROWS = ("ok", "errors", "widths", "heights", "formats", "phashes")
GROUP_VALUES = 2**26  # float32 values resized at once (256 MiB): a group of same-sized photos is split above it


class DeviceDecoder:
    """Batch (as the loader gives it, bytes for the JPEGs left to the device) -> Batch whose `images` is every good
    item's (3, N, N) uint8 crop on `device`, in order, and whose rows say what the CPU path would where a JPEG had
    to fall back to it. A batch without JPEG bytes is returned as it is."""

    def __init__(self, preprocessing: Preprocessing, device: torch.device, max_pixels: int):
        if preprocessing.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"decode gpu resizes with {', '.join(INTERPOLATIONS)}; preprocessing {preprocessing.name!r} "
                f"uses {preprocessing.interpolation!r}: decode it on the CPU"
            )
        self.preprocessing = preprocessing
        self.device = device
        self.max_pixels = max_pixels
        self.fallbacks = 0  # JPEGs the device failed on, decoded by PIL here instead (the job logs the count)

    def __call__(self, batch: Batch) -> Batch:
        if not batch.encoded:
            return batch
        decoded = decode_jpegs(batch.encoded, self.device)
        rows = {name: list(getattr(batch, name)) for name in _ROWS}  # the rows a fallback may change
        on_device, fallen = [], {}  # [(position in the batch, (3, H, W) uint8 turned upright)], {position: crop}
        for j, data, orientation, image in zip(batch.encoded_at, batch.encoded, batch.orientations, decoded):
            if image is not None and tuple(image.shape) == (3, batch.heights[j], batch.widths[j]):
                on_device.append((j, orient(image, orientation)))
                continue
            self.fallbacks += 1
            crop, row = self.decode_on_cpu(data)
            for name, value in row.items():
                rows[name][j] = value
            if crop is not None:
                fallen[j] = crop
        crops = resize_crops([image for _, image in on_device], self.preprocessing)  # (B_dev, 3, N, N)
        placed = {j: crops[k : k + 1] for k, (j, _) in enumerate(on_device)} | fallen
        return dataclasses.replace(
            batch, images=merge_crops(batch, placed, self.device), encoded_at=[], encoded=[], orientations=[], **rows
        )

    def decode_on_cpu(self, data: bytearray) -> tuple[torch.Tensor | None, dict]:
        """The CPU path's crop (1, 3, N, N) on the device, or None when it fails, and the item's row as that path
        gives it (ImageDataset.make_item's steps)."""
        try:
            d = decode_image(bytes(data), self.max_pixels)
        except DecodeError as e:
            return None, dict(
                ok=False, errors=e.reason, widths=e.width, heights=e.height, formats=e.format, phashes=None
            )
        crop = self.preprocessing.to_uint8(d.image).unsqueeze(0).to(self.device)
        return crop, dict(widths=d.width, heights=d.height, formats=d.format, phashes=compute_phash(d.image))


def decode_jpegs(encoded: list[bytearray], device: torch.device) -> list[torch.Tensor | None]:
    """Each JPEG as (3, H, W) uint8 RGB on `device` (decoded there on CUDA, by libjpeg-turbo in this process
    elsewhere), in one batched call; when that raises, one call each; None where one fails."""
    where = device if device.type == "cuda" else torch.device("cpu")
    tensors = [torch.frombuffer(data, dtype=torch.uint8) for data in encoded]  # no copy: the loader's bytearrays
    try:
        return [x.to(device) for x in decode_jpeg(tensors, mode=ImageReadMode.RGB, device=where)]
    except (RuntimeError, ValueError):
        pass
    out: list[torch.Tensor | None] = []
    for t in tensors:
        try:
            out.append(decode_jpeg(t, mode=ImageReadMode.RGB, device=where).to(device))
        except (RuntimeError, ValueError):
            out.append(None)
    return out


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """(C, H, W) as PIL's ImageOps.exif_transpose turns it for EXIF orientation 1-8."""
    if orientation == 2:  # FLIP_LEFT_RIGHT
        return image.flip(-1)
    if orientation == 3:  # ROTATE_180
        return image.flip((-2, -1))
    if orientation == 4:  # FLIP_TOP_BOTTOM
        return image.flip(-2)
    if orientation == 5:  # TRANSPOSE
        return image.transpose(-2, -1)
    if orientation == 6:  # ROTATE_270 (a quarter turn clockwise)
        return image.rot90(-1, (-2, -1))
    if orientation == 7:  # TRANSVERSE
        return image.transpose(-2, -1).flip((-2, -1))
    if orientation == 8:  # ROTATE_90 (a quarter turn anticlockwise)
        return image.rot90(1, (-2, -1))
    return image


def resize_crops(images: list[torch.Tensor], preprocessing: Preprocessing) -> torch.Tensor:
    """(3, H_i, W_i) uint8 images on one device -> (B, 3, N, N) uint8 in their order: the short side resized to
    preprocessing.resize (its interpolation, antialiased), the center N x N cut as torchvision's center_crop cuts
    it, rounded: Preprocessing.view's steps with torch instead of PIL. Images of one size are resized together
    (a dataset's photos often share a few sizes: a few kernel launches per batch instead of a few per image), in
    groups of at most GROUP_VALUES float32 values."""
    if not images:
        return torch.empty(0, 3, 0, 0, dtype=torch.uint8)
    by_size: dict[tuple[int, int], list[int]] = {}
    for k, image in enumerate(images):
        by_size.setdefault((image.shape[-2], image.shape[-1]), []).append(k)
    crop, crops = preprocessing.crop, [None] * len(images)
    for (h, w), members in by_size.items():
        new_w, new_h = _resized_size(w, h, preprocessing.resize)
        top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
        step = max(1, GROUP_VALUES // (3 * h * w))
        for start in range(0, len(members), step):
            group = members[start : start + step]
            x = nnf.interpolate(
                torch.stack([images[k] for k in group]).float(),
                size=(new_h, new_w),
                mode=preprocessing.interpolation,
                align_corners=False,
                antialias=preprocessing.antialias,
            )  # (G, 3, new_h, new_w)
            x = x[:, :, top : top + crop, left : left + crop].round_().clamp_(0, 255).to(torch.uint8)
            for g, k in enumerate(group):
                crops[k] = x[g : g + 1]
    return torch.cat(crops)


def merge_crops(batch: Batch, placed: dict[int, torch.Tensor], device: torch.device) -> torch.Tensor:
    """(B_ok, 3, N, N) uint8 on `device`: for each good item in order, its crop from `placed` (by position in the
    batch: the JPEGs) or the next of the loader's CPU crops (batch.images, copied without waiting from pinned
    memory). A JPEG in neither failed on the CPU too: it is no longer a good item."""
    cpu = batch.images.to(device, non_blocking=True) if len(batch.images) else batch.images
    encoded, parts, k = set(batch.encoded_at), [], 0
    for j, ok in enumerate(batch.ok):
        if j in placed:
            parts.append(placed[j])
        elif ok and j not in encoded:
            parts.append(cpu[k : k + 1])
            k += 1
    return torch.cat(parts) if parts else torch.empty(0, 3, 0, 0, dtype=torch.uint8)


def probe(device: torch.device) -> str | None:
    """None when decode_jpeg decodes a tiny JPEG for `device` (batched, as the job calls it); else why not."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 8), (200, 30, 40)).save(buf, format="JPEG")
    where = device if device.type == "cuda" else torch.device("cpu")
    try:
        (image,) = decode_jpeg(
            [torch.tensor(list(buf.getvalue()), dtype=torch.uint8)], mode=ImageReadMode.RGB, device=where
        )
    except Exception as e:  # noqa: BLE001 - the reason is the answer: no nvJPEG in this build, an old driver, ...
        lines = str(e).strip().splitlines()
        return f"{type(e).__name__}: {lines[0] if lines else 'no message'}"
    if tuple(image.shape) != (3, 8, 16):
        return f"decode_jpeg on {where} gave {tuple(image.shape)} for a 16 x 8 JPEG"
    return None
