"""Measures how far a JPEG's pHash taken in PIL's draft mode (the --decode gpu loader's check,
analysis/data/jpeg_bytes.py) is from the pHash of the full decode (the CPU path's), for each min_side tried.

    python -m benchmarks.measure_draft_phash [--photos ../shared/data/real-photos/PetImages] [--sides 32,128,160,192]

Files: the 20 real photos and copies of each, decoded as the extract decodes them and written again: resized 0.1-1x
(LANCZOS) then saved at quality 60 and 85 (4:4:4), grey at 75, progressive at 92, and PIL's own 4:2:0 at 75 and 95.
Prints, per min_side, how many decodes were drafted (the others are full decodes: no difference) and the Hamming
distances of the drafted ones, overall and per DCT scale.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "real-photos" / "PetImages"
SCALES = (1.0, 0.85, 0.7, 0.55, 0.45, 0.35, 0.28, 0.22, 0.15, 0.1)


def encode(im: Image.Image, quality: int, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, **kw)
    return buf.getvalue()


def make_copies(data: bytes) -> list[bytes]:
    from analysis.data.decoding import decode_image  # noqa: PLC0415

    im = decode_image(data, 10**9).image
    copies = [data]
    for scale in SCALES:
        r = im.resize((max(8, round(im.width * scale)), max(8, round(im.height * scale))), Image.LANCZOS)
        copies += [encode(r, 60), encode(r, 85, subsampling=0), encode(r.convert("L"), 75)]
        copies += [encode(r, 92, progressive=True), encode(r, 75), encode(r, 95)]
    return copies


def describe(values: list[int]) -> str:
    if not values:
        return "none drafted"
    equal = np.mean(np.equal(values, 0))
    return f"max {max(values)}, mean {np.mean(values):.2f}, {equal:.0%} equal, bits {np.bincount(values).tolist()}"


def main(argv: list[str] | None = None) -> int:
    from analysis.data.decoding import decode_image  # noqa: PLC0415
    from analysis.data.perceptual_hash import compute_phash  # noqa: PLC0415
    from benchmarks.machine import describe_cpu  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--photos", type=Path, default=PHOTOS)
    p.add_argument("--sides", default="32,128,160,192")
    args = p.parse_args(argv)
    if not args.photos.is_dir():
        print(f"no photos in {args.photos}")
        return 2
    print(describe_cpu())
    files = [make_copies(f.read_bytes()) for f in sorted(args.photos.rglob("*")) if f.is_file()]
    decodes = [(d, decode_image(d, 10**9)) for copies in files for d in copies]
    full = [compute_phash(dec.image) for _, dec in decodes]
    print(f"{len(files)} photos, {len(decodes)} files (the photos and their copies)")
    for side in (int(s) for s in args.sides.split(",")):
        by_scale: dict[int, list[int]] = {}
        for (data, dec), want in zip(decodes, full):
            draft = decode_image(data, 10**9, min_side=side).image
            if draft.size != dec.image.size:
                scale = round(max(dec.image.size) / max(draft.size))
                by_scale.setdefault(scale, []).append(bin((compute_phash(draft) ^ want) & (2**64 - 1)).count("1"))
        every = [v for values in by_scale.values() for v in values]
        print(f"min_side {side}: {len(every)} drafted: {describe(every)}")
        for scale, values in sorted(by_scale.items()):
            print(f"    1/{scale}: {len(values)}: {describe(values)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
