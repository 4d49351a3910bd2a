"""Measures the two radii of the dataset checks on real photos: the pHash Hamming radius of `near_duplicate` and
the distance ratio of `similar_scene` (analysis/stats/dataset_issues.py states the figures and where they came from).

    python -m benchmarks.measure_phash [--photos ../shared/data/real-photos/PetImages] [--image-size 64]
                                       [--no-features]

Hash: copies of each of the 20 real photos, written to bytes and decoded as the extract decodes them (resized
0.5-0.9x then JPEG quality 50-95, PNG re-saves, crops of 1-5% per side, grayscale, and all of these at once), and
distinct pairs (every pair of the 20 photos, of 80 pictures this script draws, of photo with picture, and of 180
tiles cut from the photos). It
prints both distributions of Hamming distances, per transform, and the gap between them.

Features (same tools as the checks: the extract job with random weights, conv5_3 channel means, centred): the same
scene seen again in ways a 64-bit hash does not survive (a 15% zoom, a mirror image, a 6 degree turn, a frame
shifted by 15%), each kind added alone beside the 20 photos and the 80 pictures. For every pair of mutual nearest
neighbours it prints the ratio of their distance to the nearer of the two images' distances to their second
neighbour: the scene pairs' ratios against those of distinct pairs.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.phash_images import SCENES, copy_transforms, draw_field, draw_picture, encode, make_tiles

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "real-photos" / "PetImages"


def read_photos(folder: Path) -> dict[str, bytes]:
    return {f"{p.parent.name}/{p.name}": p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def hash_bytes(data: bytes) -> int:
    """The extract's path: decode_image (EXIF orientation, RGB), then the hash of the whole decoded image."""
    from analysis.data.decoding import decode_image  # noqa: PLC0415
    from analysis.data.perceptual_hash import compute_phash  # noqa: PLC0415

    return compute_phash(decode_image(data, 10**9).image)


def hamming(a: int, b: int) -> int:
    return bin((a ^ b) & (2**64 - 1)).count("1")


def summary(values) -> str:
    """min, percentiles and max of a distribution (integers: Hamming distances; else ratios)."""
    v = np.asarray(values, np.float64)
    if not len(v):
        return "none"
    if np.all(v == np.round(v)):
        p1, p5, p50, p95, p99 = np.percentile(v, [1, 5, 50, 95, 99])
        return (
            f"n {len(v)}, min {v.min():.0f}, p1 {p1:.1f}, p5 {p5:.1f}, median {p50:.1f}, p95 {p95:.1f}, "
            f"p99 {p99:.1f}, max {v.max():.0f}"
        )
    p5, p50, p95 = np.percentile(v, [5, 50, 95])
    return f"n {len(v)}, min {v.min():.3f}, p5 {p5:.3f}, median {p50:.3f}, p95 {p95:.3f}, max {v.max():.3f}"


def measure_hash(photos: dict[str, bytes], pictures: list[Image.Image]) -> tuple[int, int]:
    """Prints the two distributions; returns (max over copies, min over distinct pairs)."""
    from analysis.data.decoding import decode_image  # noqa: PLC0415

    decoded = {k: decode_image(v, 10**9).image for k, v in photos.items()}
    original = {k: hash_bytes(v) for k, v in photos.items()}
    by_family: dict[str, list[int]] = {}
    worst: dict[str, tuple[int, str]] = {}
    for family, name, make in copy_transforms():
        d = [hamming(original[k], hash_bytes(make(im))) for k, im in decoded.items()]
        by_family.setdefault(family, []).extend(d)
        worst[name] = (max(d), name)
    copies = [d for v in by_family.values() for d in v]
    drawn = [hash_bytes(encode(p, quality=90)) for p in pictures]
    tiles = [hash_bytes(encode(t, quality=90)) for im in decoded.values() for t in make_tiles(im)]
    groups = {
        "photo-photo": list(itertools.combinations(original.values(), 2)),
        "picture-picture": list(itertools.combinations(drawn, 2)),
        "photo-picture": list(itertools.product(original.values(), drawn)),
        "tile-tile": list(itertools.combinations(tiles, 2)),
    }
    distinct = {g: [hamming(a, b) for a, b in pairs] for g, pairs in groups.items()}
    print(f"pHash Hamming distances (64 bits), {len(photos)} real photos decoded as the extract decodes them:")
    for family, d in by_family.items():
        print(f"  copies, {family:14s} {summary(d)}")
    print(f"  copies, all            {summary(copies)}")
    print("  worst transforms: " + ", ".join(f"{n} {d}" for d, n in sorted(worst.values(), reverse=True)[:5]))
    for g, d in distinct.items():
        print(f"  distinct, {g:15s} {summary(d)}")
    every = np.array([d for v in distinct.values() for d in v])
    print(f"  distinct, all          {summary(every)}")
    names = [n for _, n, _ in copy_transforms()]
    print(
        "  radius r: share of copies within r (resize + JPEG, PNG, gray / crops / all at once) and distinct pairs "
        "within r (their rate x 312 million pairs = false pairs among 25,000 images):"
    )
    for r in range(8, 20, 2):
        share = {f: np.mean(np.asarray(d) <= r) for f, d in by_family.items()}
        plain = np.mean([share[f] for f in ("resize + JPEG", "PNG re-save", "grayscale")])
        false = int((every <= r).sum())
        print(
            f"    r {r:2d}: copies {plain:.3f} / {share['crop']:.3f} / {share['all at once']:.3f}; distinct "
            f"{false} of {len(every)} ({false / len(every) * 312e6:,.0f} per 25,000 images)"
        )
    crops = {n: worst[n][0] for n in names if "%" in n and "," not in n}
    print("  crops, max per size: " + ", ".join(f"{n} {d}" for n, d in crops.items()))
    return max(copies), int(every.min())


def measure_features(photos: dict[str, bytes], pictures: list[Image.Image], image_size: int) -> None:
    """The similar_scene ratio: extract (random weights) over photos, pictures and every scene kind, then per kind
    the ratios of the scene pairs and of the distinct mutual-neighbour pairs."""
    from analysis.config import make_config, read_config_section  # noqa: PLC0415
    from analysis.data.decoding import decode_image  # noqa: PLC0415
    from analysis.stats.neighbours import compute_neighbours  # noqa: PLC0415
    from analysis.stats.pairs import compute_scene_ratios  # noqa: PLC0415
    from analysis.store.blocks import read_layer_means  # noqa: PLC0415
    from jobs import extract  # noqa: PLC0415
    from jobs.config import ExtractConfig  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="measure-phash-") as tmp:
        data = Path(tmp) / "data"
        for k, v in photos.items():
            (data / "photo" / k).parent.mkdir(parents=True, exist_ok=True)
            (data / "photo" / k).write_bytes(v)
            im = decode_image(v, 10**9).image
            for kind, make in SCENES.items():
                path = data / kind.replace(" ", "-") / k
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(encode(make(im), quality=90))
        for n, p in enumerate(pictures):
            (data / "picture").mkdir(parents=True, exist_ok=True)
            p.save(data / "picture" / f"{n}.jpg", quality=90)
        t = time.perf_counter()
        extract.main(
            make_config(
                ExtractConfig,
                {
                    **read_config_section(None, "extract"),
                    "data": str(data),
                    "out": str(Path(tmp) / "run"),
                    "weights": "random",
                    "image_size": image_size,
                    "layers": ["conv5_3"],
                    "attribution_layers": None,
                    "device": "cpu",
                    "precision": "fp32",
                    "download": False,
                    "progress": False,
                },
            )
        )
        ids, x = read_layer_means(Path(tmp) / "run", "conv5_3")
        print(
            f"features: extract of {len(ids)} images at {image_size} px, random weights (seed 0), conv5_3 "
            f"channel means, in {time.perf_counter() - t:.0f} s"
        )
    ids = np.asarray([str(i) for i in ids])
    base = np.flatnonzero([i.startswith(("photo/", "picture/")) for i in ids])
    distinct_all, scene_all = [], []
    for kind in SCENES:
        extra = np.flatnonzero([i.startswith(kind.replace(" ", "-") + "/") for i in ids])
        pick = np.concatenate([base, extra])
        sub = x[pick] - x[pick].mean(axis=0, keepdims=True)
        graph = compute_neighbours(sub, 2, 1 << 26)
        a, b, ratio = compute_scene_ratios(graph)
        names = ids[pick]
        twin = {names[i].split("/", 1)[1] for i in range(len(pick)) if i >= len(base)}
        is_scene = np.array(
            [
                names[p].split("/", 1)[1] == names[q].split("/", 1)[1] and names[p].split("/", 1)[1] in twin
                for p, q in zip(a, b)
            ],
            bool,
        )
        found = int(is_scene.sum())
        scene_all += list(ratio[is_scene])
        distinct_all += list(ratio[~is_scene])
        print(
            f"  {kind:12s}: {found}/{len(extra)} scene pairs are mutual nearest neighbours; their ratio "
            f"{summary(ratio[is_scene])}; distinct mutual pairs {summary(ratio[~is_scene])}"
        )
    print(f"  all kinds   : scene pairs {summary(scene_all)}; distinct mutual pairs {summary(distinct_all)}")
    scenes, distinct = np.asarray(scene_all), np.asarray(distinct_all)
    for r in (0.5, 0.6, 0.7, 0.8):
        print(
            f"    ratio {r}: scene pairs found {int((scenes <= r).sum())} of {len(SCENES) * len(photos)}, distinct "
            f"pairs flagged {int((distinct <= r).sum())} of {len(distinct)}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.measure_phash", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    p.add_argument("--photos", type=Path, default=PHOTOS)
    p.add_argument(
        "--pictures",
        type=int,
        default=80,
        help="pictures drawn by this script: half shapes on colour fields, half smooth colour fields (default 80)",
    )
    p.add_argument("--image-size", type=int, default=64, help="the network's input for the features (default 64)")
    p.add_argument("--no-features", dest="features", action="store_false", help="the hash distances only")
    args = p.parse_args(argv)
    if not args.photos.is_dir():
        print(f"measure_phash: no real photos at {args.photos} (a fresh clone has no ../shared): nothing measured")
        return 0
    from analysis.config import read_config_section  # noqa: PLC0415
    from benchmarks.machine import describe_cpu  # noqa: PLC0415

    print(describe_cpu())
    qa = read_config_section(None, "report_qa")
    radius = qa["near_duplicate_bits"]
    photos = read_photos(args.photos)
    pictures = [draw_picture(seed) for seed in range(args.pictures // 2)] + [
        draw_field(seed) for seed in range(args.pictures - args.pictures // 2)
    ]
    t = time.perf_counter()
    copies_max, distinct_min = measure_hash(photos, pictures)
    print(
        f"  copies <= {copies_max} bits, distinct pairs >= {distinct_min} bits ({time.perf_counter() - t:.0f} s); "
        f"radius in use (report_qa.near_duplicate_bits): {radius}"
        + ("" if radius < distinct_min else "  <-- A DISTINCT PAIR IS WITHIN IT")
    )
    if args.features:
        measure_features(photos, pictures, args.image_size)
        print(f"  ratio in use (report_qa.similar_scene_ratio): {qa['similar_scene_ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
