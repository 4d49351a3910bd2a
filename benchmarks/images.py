"""Kaggle-like JPEGs for the benchmarks (no downloads): cat.0.jpg, dog.1.jpg ... at 500 x 375 by default.

Kaggle's Dogs vs. Cats train.zip holds 25,000 JPEGs in 543 MB (about 22 KB each, most near 500 x 375 or smaller).
Smooth colour fields alone compress to a few KB and decode faster than photos; a mid-frequency layer brings the files
to about 30 KB at quality 75, so decoding costs about what it costs on the real files.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def write_image(path: Path, seed: int, size: tuple[int, int] = (500, 375), quality: int = 75) -> int:
    """One JPEG of `size` (width, height); returns its size in bytes."""
    from PIL import Image  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    w, h = size
    coarse = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    fine = Image.fromarray(rng.integers(0, 256, (max(1, h // 4), max(1, w // 4), 3), dtype=np.uint8))
    pixels = 0.8 * np.asarray(coarse, np.float32) + 0.2 * np.asarray(fine.resize(size, Image.BILINEAR), np.float32)
    Image.fromarray(pixels.astype(np.uint8)).save(path, format="JPEG", quality=quality)
    return path.stat().st_size


def _write_range(args: tuple[str, int, int, tuple[int, int]]) -> int:
    root, start, stop, size = args
    return sum(
        write_image(Path(root) / f"{'cat' if i % 2 == 0 else 'dog'}.{i}.jpg", i, size) for i in range(start, stop)
    )


def write_images(
    root: Path, n: int, size: tuple[int, int] = (500, 375), processes: int | None = None, first: int = 0
) -> int:
    """Files first .. n-1 (cat.0.jpg, dog.1.jpg, ...) into root, written by `processes` processes (default: every
    core); returns the bytes written. The same numbers and size give the same files."""
    root.mkdir(parents=True, exist_ok=True)
    count = n - first
    if count <= 0:
        return 0
    processes = max(1, min(processes or len(os.sched_getaffinity(0)), count))
    step = -(-count // processes)
    jobs = [(str(root), s, min(n, s + step), size) for s in range(first, n, step)]
    if processes == 1:
        return sum(map(_write_range, jobs))
    with ProcessPoolExecutor(processes) as pool:
        return sum(pool.map(_write_range, jobs))
