"""RGB PIL image -> the normalized (3, N, N) tensor a set of weights expects, and the (N, N) picture it sees.

"imagenet" is torchvision's own `VGG16_Weights.IMAGENET1K_V1.transforms()`, read from the weights rather than retyped:
its resize scales with the crop (256/224 x N), and at N = 224 the output is that transform's output exactly.
"classification-pytorch" is the recipe of bubbliiiing/classification-pytorch (`letterbox_image=False`), which the
classic cat/dog VGG16 follows: short side to N with PIL bilinear, center crop N, RGB x / 127.5 - 1. Feeding a
checkpoint the other recipe's input gives plausible but wrong activations, so the choice is recorded (`describe`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

# A resize whose output would exceed this many crops' worth of pixels (an image thinner than about 1:50) resamples
# only the window that survives the crop, instead of allocating a strip of millions of pixels to throw away.
_MAX_RESIZED_CROPS = 64


@dataclass(frozen=True)
class Preprocessing:
    name: str
    resize: int  # the short side is resized to this ...
    crop: int  # ... then the center crop x crop is taken
    mean: tuple[float, float, float]  # on the [0, 1] scale: out = (x / 255 - mean) / std
    std: tuple[float, float, float]
    interpolation: str  # torchvision InterpolationMode value, e.g. "bilinear"
    antialias: bool = True  # PIL always antialiases; kept to describe the torchvision transform fully

    def view(self, image: Image.Image) -> Image.Image:
        """The image as the network sees it: resized and center-cropped, (crop x crop) RGB, not normalized."""
        _require_rgb(image)
        interpolation = InterpolationMode(self.interpolation)
        w, h = image.size
        new_w, new_h = _resized_size(w, h, self.resize)
        if new_w * new_h <= _MAX_RESIZED_CROPS * self.crop * self.crop:
            resized = F.resize(image, [self.resize], interpolation=interpolation, antialias=self.antialias)
            return F.center_crop(resized, [self.crop])
        # The same window of the same resize, computed alone: PIL resamples `box` of the source with the filter
        # positions the full resize would use. PIL takes the box in single precision, so some values differ from
        # the full resize by one level (of 255); only images thinner than about 1:50 come this way.
        top = int(round((new_h - self.crop) / 2.0))  # torchvision's center_crop offsets
        left = int(round((new_w - self.crop) / 2.0))
        sx, sy = w / new_w, h / new_h
        box = (left * sx, top * sy, (left + self.crop) * sx, (top + self.crop) * sy)
        return image.resize((self.crop, self.crop), F.pil_modes_mapping[interpolation], box=box)

    def to_uint8(self, image: Image.Image) -> torch.Tensor:
        """(3, crop, crop) uint8: the view as a tensor. This is what a DataLoader carries from its workers to the
        device (a quarter of float32's bytes through shared memory, pinning and the copy); `normalize` finishes
        it there, one operation per batch instead of three per image."""
        return F.pil_to_tensor(self.view(image))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, N, N) on any device -> float32 (x / 255 - mean) / std, in x's memory format: bit for bit
        torchvision's convert_image_dtype then normalize (the same three roundings). The divisors are tensors on
        x's device, never Python scalars: CUDA turns a division by a scalar into a multiplication by its
        reciprocal, which is not the same float."""
        if x.dtype != torch.uint8:
            raise TypeError(f"normalize expects uint8 images (to_uint8 gives them), got {x.dtype}")
        scale, mean, std = _normalization_constants(self.mean, self.std, x.device)
        return x.to(torch.float32).div_(scale).sub_(mean).div_(std)

    def transform(self, image: Image.Image) -> torch.Tensor:
        """(3, crop, crop) float32, normalized: what goes into the network."""
        # (x / 255 - 0.5) / 0.5 is bit for bit x / 127.5 - 1 in float32 (both differ only by exact factors of 2).
        return self.normalize(self.to_uint8(image))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "resize": self.resize,
            "crop": self.crop,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "antialias": self.antialias,
            "steps": f"resize short side to {self.resize} ({self.interpolation}), center crop {self.crop}, "
            "RGB (x / 255 - mean) / std",
            "source": _SOURCES.get(self.name),
        }


def make_preprocessing(name: str, image_size: int) -> Preprocessing:
    """The preprocessing `name` with a crop of `image_size` pixels."""
    if name not in _BUILDERS:
        raise ValueError(f"preprocessing {name!r} is unknown; choose one of {', '.join(_BUILDERS)}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size {image_size!r} is not allowed; a positive integer")
    return _BUILDERS[name](image_size)


def _make_imagenet(image_size: int) -> Preprocessing:
    from torchvision.models import VGG16_Weights

    reference = VGG16_Weights.IMAGENET1K_V1.transforms()  # torchvision's ImageClassification preset
    (crop,), (resize,) = reference.crop_size, reference.resize_size
    return Preprocessing(
        name="imagenet",
        resize=round(resize / crop * image_size),
        crop=image_size,
        mean=tuple(float(m) for m in reference.mean),
        std=tuple(float(s) for s in reference.std),
        interpolation=InterpolationMode(reference.interpolation).value,
        antialias=bool(reference.antialias),
    )


def _make_classification_pytorch(image_size: int) -> Preprocessing:
    # x / 127.5 - 1 written as a normalization: mean 0.5, std 0.5 on the [0, 1] scale.
    return Preprocessing(
        name="classification-pytorch",
        resize=image_size,
        crop=image_size,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        interpolation="bilinear",
        antialias=True,
    )


_BUILDERS: dict[str, Callable[[int], Preprocessing]] = {
    "imagenet": _make_imagenet,
    "classification-pytorch": _make_classification_pytorch,
}

_SOURCES = {
    "imagenet": "torchvision VGG16_Weights.IMAGENET1K_V1.transforms(), resize scaled with the crop",
    "classification-pytorch": "bubbliiiing/classification-pytorch letterbox_image=False: resize, center crop, "
    "x / 127.5 - 1",
}


@functools.lru_cache(maxsize=16)
def _normalization_constants(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(255, mean, std) as (C, 1, 1)-broadcastable float32 tensors on `device`, made once: on a GPU each new
    tensor would be a blocking copy in every batch. Read only: normalize never writes into them."""
    as_tensor = functools.partial(torch.tensor, dtype=torch.float32, device=device)
    return as_tensor([[[255.0]]]), as_tensor(mean).view(-1, 1, 1), as_tensor(std).view(-1, 1, 1)


def _resized_size(w: int, h: int, size: int) -> tuple[int, int]:
    """torchvision's output size for a resize of the short side to `size`: (width, height)."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def _require_rgb(image: Image.Image) -> None:
    if image.mode != "RGB":
        raise ValueError(f"preprocessing expects an RGB image (decode_image gives one), got mode {image.mode!r}")
