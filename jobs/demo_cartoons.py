"""The demo's synthetic pictures: cartoon cats (orange face, pointed ears, stripes) and dogs (brown face, drooping
ears), drawn here so that `make demo` needs no download. Each drawing knows where its ears are, so that a test can
check that the demo's drivers fire on the planted difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

Box = tuple[int, int, int, int]  # left, top, right, bottom in the drawn image's pixels


@dataclass(frozen=True)
class Cartoon:
    kind: str  # "cat" or "dog"
    image: Image.Image  # RGB
    ears: tuple[Box, ...]  # bounding boxes of the ears (empty when drawn without them)


def draw_cartoon(kind: str, rng: np.random.Generator, size: int = 256, ears: bool = True) -> Cartoon:
    """One cartoon with random placement, size, colours and background; `ears=False` draws the same picture (the
    same draws of `rng`) without its ears."""
    # A smooth random field behind the face: on a flat background every cartoon is one blob, and blobs placed
    # alike are near duplicates to a perceptual hash (they are, at 32 x 32 in grey).
    field = rng.integers(60, 230, (4, 4, 3), dtype=np.uint8)
    im = Image.fromarray(field).resize((size, int(size * rng.uniform(0.75, 1.25))), Image.BICUBIC)
    draw = ImageDraw.Draw(im)
    w, h = im.size
    r = int(min(w, h) * rng.uniform(0.18, 0.3))
    cx, cy = int(rng.uniform(r * 1.6, w - r * 1.6)), int(rng.uniform(r * 1.6, h - r * 1.3))
    boxes: list[Box] = []
    if kind == "cat":
        fur = (int(rng.integers(200, 250)), int(rng.integers(110, 160)), int(rng.integers(20, 60)))
        for side in (-1, 1):  # pointed ears
            corners = [(cx + side * r, cy - r // 3), (cx + side * r // 3, cy - r), (cx + side * r, cy - 3 * r // 2)]
            if ears:
                draw.polygon(corners, fill=fur)
                xs, ys = [x for x, _ in corners], [y for _, y in corners]
                boxes.append((min(xs), min(ys), max(xs), max(ys)))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fur)
        for k in (-1, 0, 1):  # stripes
            draw.line([(cx + k * r // 3, cy - r), (cx + k * r // 4, cy - r // 3)], fill=(90, 50, 10), width=4)
    elif kind == "dog":
        fur = (int(rng.integers(100, 150)), int(rng.integers(60, 90)), int(rng.integers(20, 50)))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fur)
        for side in (-1, 1):  # drooping ears
            box = (cx + side * r - r // 3, cy - r // 2, cx + side * r + r // 3, cy + r)
            if ears:
                draw.ellipse(box, fill=(70, 40, 20))
                boxes.append(box)
        draw.ellipse([cx - r // 4, cy + r // 4, cx + r // 4, cy + r // 2], fill=(20, 20, 20))  # nose
    else:
        raise ValueError(f"kind {kind!r} is not allowed; cat or dog")
    for side in (-1, 1):  # eyes
        draw.ellipse([cx + side * r // 2 - 5, cy - r // 4 - 5, cx + side * r // 2 + 5, cy - r // 4 + 5], fill=(0, 0, 0))
    return Cartoon(kind, im, tuple(boxes))


def write_synthetic_images(folder: Path, per_class: int, size: int = 256, seed: int = 0) -> list[Path]:
    """cat.N.png and dog.N.png cartoons (alternating, N = 0 .. 2 * per_class - 1), the same for the same seed."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(2 * per_class):
        cartoon = draw_cartoon(("cat", "dog")[i % 2], rng, size)
        path = folder / f"{cartoon.kind}.{i}.png"
        cartoon.image.save(path)
        paths.append(path)
    return paths
