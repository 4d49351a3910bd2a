"""A dataset with planted faults for the dataset checks, made from the 20 real photos in ../shared.

Class folders (labels from the folder): the 20 photos, then byte-identical copies, resized and re-encoded copies,
copies filed under the wrong class (each beside two correctly filed twins, so its neighbours outvote it) and a
few pictures of a third kind (line drawings traced from photos). `Planted` says which file is which.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

from PIL import Image, ImageFilter, ImageOps

REAL_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-photos" / "PetImages"


@dataclasses.dataclass
class Planted:
    originals: list[str] = dataclasses.field(default_factory=list)
    exact: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (original, byte-identical copy)
    near: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (original, resized re-encoded)
    swapped: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # (original, twin, mislabelled)
    odd: list[str] = dataclasses.field(default_factory=list)  # a third kind of picture


def make_copy(data: bytes, scale: float, quality: int) -> bytes:
    """The photo resized by `scale` and saved again as a baseline JPEG: other bytes, the same picture."""
    im = Image.open(io.BytesIO(data)).convert("RGB")
    im = im.resize((max(8, round(im.width * scale)), max(8, round(im.height * scale))), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def make_line_drawing(data: bytes) -> Image.Image:
    """A black-on-white line drawing traced from a photo (its edges): a third kind of picture. Measured with random
    weights at 64 px: far from the photos by Euclidean distance of the centred conv5_3 means (noise, flat colours
    and simple shapes are not: they sit near the photos' mean)."""
    im = Image.open(io.BytesIO(data)).convert("L")
    im.thumbnail((256, 256))
    return ImageOps.invert(im.filter(ImageFilter.FIND_EDGES)).convert("RGB")


def write_planted_dataset(root: Path, photos: Path = REAL_PHOTOS) -> Planted:
    """root/Cat/..., root/Dog/...: 32 files; image ids are the paths relative to root."""
    planted = Planted()
    files = {}
    for cls in ("Cat", "Dog"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for src in sorted((photos / cls).iterdir()):
            rel = f"{cls}/{src.name}"
            files[rel] = src.read_bytes()
            (root / rel).write_bytes(files[rel])
            planted.originals.append(rel)

    def put(rel: str, data: bytes) -> str:
        (root / rel).write_bytes(data)
        return rel

    for rel in ("Cat/1.jpg", "Dog/2.jpg"):
        planted.exact.append((rel, put(rel.replace(".", "-copy."), files[rel])))
    for rel in ("Cat/5.jpg", "Dog/6.jpg", "Dog/7.jpg"):
        planted.near.append((rel, put(rel.replace(".", "-small."), make_copy(files[rel], 0.5, 85))))
    for n, (rel, wrong) in enumerate((("Cat/3.jpg", "Dog"), ("Dog/8.jpg", "Cat"))):
        twin = put(rel.replace(".", "-small."), make_copy(files[rel], 0.4, 90))
        planted.swapped.append((rel, twin, put(f"{wrong}/misfiled-{n}.jpg", make_copy(files[rel], 0.6, 80))))
    for n, rel in enumerate(("Cat/9.jpg", "Dog/4.jpg", "Dog/10.jpg")):
        make_line_drawing(files[rel]).save(root / rel.split("/")[0] / f"drawing-{n}.png")
        planted.odd.append(f"{rel.split('/')[0]}/drawing-{n}.png")
    return planted
