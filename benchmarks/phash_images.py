"""measure_phash's images: the copies of a photo a near-duplicate check must find (as file bytes), the same scene
seen again in ways a 64-bit hash does not survive, and the distinct pictures (drawn shapes, smooth colour fields,
tiles cut from a photo)."""

from __future__ import annotations

import io
import itertools
from typing import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageOps

Transform = Callable[[Image.Image], bytes]


def encode(im: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def resized(im: Image.Image, scale: float, resample=Image.Resampling.BICUBIC) -> Image.Image:
    return im.resize((max(8, round(im.width * scale)), max(8, round(im.height * scale))), resample)


def cropped(im: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = im.size
    return im.crop((round(w * left), round(h * top), round(w * (1 - right)), round(h * (1 - bottom))))


def copy_transforms() -> Iterator[tuple[str, str, Transform]]:
    """(family, name, image -> the copy's file bytes): the copies a near-duplicate check must find."""
    for s, q in itertools.product((0.5, 0.6, 0.7, 0.8, 0.9), (50, 75, 95)):
        yield "resize + JPEG", f"{s}x q{q}", lambda im, s=s, q=q: encode(resized(im, s), quality=q)
    for s in (1.0, 0.7):
        yield "PNG re-save", f"{s}x PNG", lambda im, s=s: encode(resized(im, s) if s < 1 else im, "PNG")
    for c in (0.01, 0.02, 0.03, 0.04, 0.05):
        yield "crop", f"{c:.0%} each side", lambda im, c=c: encode(cropped(im, c, c, c, c), quality=90)
    for side in range(4):
        box = [0.0] * 4
        box[side] = 0.05
        yield (
            "crop",
            f"5% off {('left', 'top', 'right', 'bottom')[side]}",
            lambda im, b=tuple(box): encode(cropped(im, *b), quality=90),
        )
    yield "grayscale", "L JPEG q75", lambda im: encode(im.convert("L"), quality=75)
    yield "grayscale", "L PNG", lambda im: encode(im.convert("L"), "PNG")
    yield (
        "all at once",
        "crop 5%, 0.5x, gray, q50",
        lambda im: encode(resized(cropped(im, 0.05, 0.05, 0.05, 0.05), 0.5).convert("L"), quality=50),
    )


SCENES: dict[str, Callable[[Image.Image], Image.Image]] = {  # the same scene, seen again
    "zoom 15%": lambda im: cropped(im, 0.15, 0.15, 0.15, 0.15),
    "mirror": lambda im: ImageOps.mirror(im),
    "turn 6 deg": lambda im: cropped(im.rotate(6, Image.Resampling.BICUBIC), 0.08, 0.08, 0.08, 0.08),
    "shifted 15%": lambda im: cropped(im, 0.15, 0, 0, 0),
}


def draw_picture(seed: int, size: tuple[int, int] = (480, 360)) -> Image.Image:
    """A picture that is not a photo of the set: a smooth colour field with a few shapes, different per seed."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(field)
    w, h = size
    for _ in range(int(rng.integers(2, 7))):
        x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        box = (x0, y0, x0 + int(rng.integers(30, w // 2)), y0 + int(rng.integers(30, h // 2)))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return field


def make_tiles(im: Image.Image, n: int = 3) -> list[Image.Image]:
    """The photo cut into n x n tiles that share no pixel: distinct pictures with a photo's statistics (often the
    same fur and light), the closest distinct pairs measured."""
    w, h = im.size
    return [im.crop((w * i // n, h * j // n, w * (i + 1) // n, h * (j + 1) // n)) for i in range(n) for j in range(n)]


def draw_field(seed: int, size: tuple[int, int] = (480, 360)) -> Image.Image:
    """A picture with little detail: a 6 x 8 random colour field made smooth. pHashes of such pictures agree more
    than photos' do (fewer shapes for the 8 x 8 coefficients to tell apart)."""
    rng = np.random.default_rng([seed, 1])
    return Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
