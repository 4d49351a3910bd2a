"""Files the test modules share (a test module never imports another): small images, file trees and zips written
by the tests, discovery's rows, the hostile file names. The jobs' small runs are in small_runs.py, fixtures in
conftest.py."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

# File names that break HTML, attributes and scripts where they are pasted unescaped.
HOSTILE = ("cat.<img src=x onerror=alert(1)>.jpg", 'dog." onmouseover="alert(2)" x=".jpg', "cat.'-alert(3)-'.jpg")


def write_image(path: Path, size=(64, 48), seed: int = 0, fmt: str | None = None) -> Path:
    """A small RGB image with smooth random content (so that channels differ between images)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(small).resize(size, Image.BILINEAR).save(path, format=fmt)
    return path


def image_bytes(fmt: str, color: tuple[int, int, int]) -> bytes:
    """A 4 x 3 image of one colour, encoded as `fmt`."""
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), color).save(buf, format=fmt)
    return buf.getvalue()


JPEG = image_bytes("JPEG", (200, 10, 10))
PNG = image_bytes("PNG", (10, 200, 10))


def write_files(root: Path, files: dict[str, bytes]) -> None:
    """Each relative path of `files` written under `root` with its bytes."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def write_zip(path: Path, members: dict[str, bytes], dirs: tuple[str, ...] = ()) -> None:
    """A zip at `path` holding `members` (name: bytes), after an explicit entry for each folder of `dirs`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for d in dirs:
            zf.writestr(d, b"")  # explicit directory entries, as `zip -r` writes them
        for name, data in members.items():
            zf.writestr(name, data)


# Kaggle's dogs-vs-cats in small: train/ names the label in each file name, test1/ is unlabeled.
KAGGLE_TRAIN = {"cat.0.jpg": JPEG, "cat.1.jpg": JPEG, "dog.0.jpg": JPEG, "dog.10.JPG": JPEG}
KAGGLE_TEST = {"1.jpg": JPEG, "2.jpg": JPEG}


def record_rows(disc) -> list[tuple[str, str | None, str | None]]:
    """(image_id, split, label) of every record discovery found, in its order."""
    return [(r.image_id, r.split, r.label) for r in disc.records]


def make_flat(root: Path, n: int = 6) -> Path:
    """A Kaggle-style flat folder of n images named cat.0.jpg, dog.1.jpg, ..."""
    for i in range(n):
        write_image(root / f"{'cat' if i % 2 == 0 else 'dog'}.{i}.jpg", seed=i)
    return root
