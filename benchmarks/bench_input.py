"""The input path alone, each way against the way before, interleaved A B A B so that the machine's drift hits
both alike:

- from decoded image to the network's input: float32 made per image in the loader (before) against uint8 in the
  loader and one normalization per batch where the model runs (Preprocessing.to_uint8, collate_images,
  jobs.forward.to_device); and the bytes each batch carries through a worker's shared memory, the pinning and the
  copy to a GPU;
- loading a batch in the main process (read, sha256, decode, pHash, preprocess: ImageDataset.__getitems__) one item
  after another (before) against on the forward's threads (jobs.extract_units.load_threads, what workers=0 does);
- the steps of one item alone: decode, the pHash of the decoded image (what it adds to the loader), preprocess.

    python -m benchmarks.bench_input [--images 64] [--batch-size 32] [--image-size 224] [--repeats 5]

Kaggle-sized JPEGs (500 x 375) are written first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def before(pre, images, batch_size: int, device: torch.device) -> float:
    """Seconds for the old path: per image pil_to_tensor, convert_image_dtype and normalize (a clone, sub_, div_),
    then the float32 batch stacked, copied and made channels_last."""
    import torchvision.transforms.functional as F  # noqa: PLC0415

    t = time.perf_counter()
    for s in range(0, len(images), batch_size):
        items = []
        for im in images[s : s + batch_size]:
            x = F.convert_image_dtype(F.pil_to_tensor(pre.view(im)), torch.float)
            items.append(F.normalize(x, mean=list(pre.mean), std=list(pre.std)))
        torch.stack(items).to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    return time.perf_counter() - t


def now(pre, images, batch_size: int, device: torch.device) -> float:
    """Seconds for the job's path: to_uint8 per image, collate_images, to_device (copy, channels_last, normalize)."""
    from analysis.data.dataset import Item, collate_images  # noqa: PLC0415
    from jobs.forward import to_device  # noqa: PLC0415

    t = time.perf_counter()
    for s in range(0, len(images), batch_size):
        items = [Item(i, pre.to_uint8(im), None, 0, 0, "JPEG") for i, im in enumerate(images[s : s + batch_size])]
        to_device(collate_images(items).images, pre, device)
    return time.perf_counter() - t


def load(dataset, n: int, batch_size: int) -> float:
    """Seconds to load every batch of the dataset as the job's DataLoader asks for it (__getitems__)."""
    t = time.perf_counter()
    for s in range(0, n, batch_size):
        dataset.__getitems__(list(range(s, min(n, s + batch_size))))
    return time.perf_counter() - t


def time_steps(files: list[bytes], pre, repeats: int) -> dict[str, list[float]]:
    """Seconds per image of each step an item takes after reading: decode, the pHash, preprocess; one pass each
    per repeat, the steps interleaved."""
    from analysis.data.decoding import decode_image  # noqa: PLC0415
    from analysis.data.perceptual_hash import compute_phash  # noqa: PLC0415

    images = [decode_image(data, 10**9).image for data in files]
    steps = {
        "decode": lambda: [decode_image(data, 10**9) for data in files],
        "phash": lambda: [compute_phash(im) for im in images],
        "preprocess": lambda: [pre.to_uint8(im) for im in images],
    }
    out: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t = time.perf_counter()
            step()
            out[name].append((time.perf_counter() - t) / len(files))
    return out


def main(argv: list[str] | None = None) -> int:
    from analysis.data.dataset import ImageDataset  # noqa: PLC0415
    from analysis.data.decoding import decode_image  # noqa: PLC0415
    from analysis.data.discovery import find_images  # noqa: PLC0415
    from analysis.data.preprocessing import make_preprocessing  # noqa: PLC0415
    from benchmarks.images import write_images  # noqa: PLC0415
    from benchmarks.machine import describe_cpu  # noqa: PLC0415
    from jobs.extract_units import load_threads  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    print(describe_cpu(), flush=True)
    device = torch.device("cpu")
    pre = make_preprocessing("imagenet", args.image_size)
    threads = load_threads(0)
    with tempfile.TemporaryDirectory(prefix="bench-input-") as tmp:
        write_images(Path(tmp), args.images)
        images = [decode_image(f.read_bytes(), 10**9).image for f in sorted(Path(tmp).iterdir())]
        steps = time_steps([f.read_bytes() for f in sorted(Path(tmp).iterdir())], pre, args.repeats)
        found = find_images(tmp)
        serial, threaded = (ImageDataset(found.records, pre, 10**9, 10**9, found.root, threads=k) for k in (1, threads))
        load(serial, args.images, args.batch_size), load(threaded, args.images, args.batch_size)  # warm-up
        one, many = [], []
        for _ in range(args.repeats):
            one.append(load(serial, args.images, args.batch_size))
            many.append(load(threaded, args.images, args.batch_size))
    with torch.inference_mode():
        before(pre, images, args.batch_size, device), now(pre, images, args.batch_size, device)  # warm-up
        a, b = [], []
        for _ in range(args.repeats):
            a.append(before(pre, images, args.batch_size, device))
            b.append(now(pre, images, args.batch_size, device))
    ms = lambda v: v / len(images) * 1000  # noqa: E731
    ratio = [y / x for x, y in zip(a, b)]
    n = args.image_size
    print(
        f"{len(images)} images 500 x 375 -> {n} px, batch {args.batch_size}, ms per image, median (min-max): "
        f"float32 per image {ms(statistics.median(a)):.2f} ({ms(min(a)):.2f}-{ms(max(a)):.2f}), "
        f"uint8 + one normalization per batch {ms(statistics.median(b)):.2f} ({ms(min(b)):.2f}-{ms(max(b)):.2f}); "
        f"now / before {statistics.median(ratio):.3f} ({min(ratio):.3f}-{max(ratio):.3f}), {args.repeats} pairs"
    )
    ratio = [y / x for x, y in zip(one, many)]
    print(
        f"loading a batch (read, sha256, decode, pHash, preprocess), ms per image: one item after another "
        f"{ms(statistics.median(one)):.2f} ({ms(min(one)):.2f}-{ms(max(one)):.2f}), on {threads} threads "
        f"{ms(statistics.median(many)):.2f} ({ms(min(many)):.2f}-{ms(max(many)):.2f}); threads / one "
        f"{statistics.median(ratio):.3f} ({min(ratio):.3f}-{max(ratio):.3f}), {args.repeats} pairs"
    )
    d, h, q = (statistics.median(steps[k]) * 1000 for k in ("decode", "phash", "preprocess"))
    print(
        f"steps of one item, ms per image, median of {args.repeats}: decode {d:.2f}, pHash of the decoded image "
        f"{h:.2f} ({h / d:.2f}x decoding), preprocess to {n} px {q:.2f}; the pHash adds {h / (d + q):.0%} to "
        "decode + preprocess"
    )
    print(
        f"bytes per batch of {args.batch_size} through shared memory, pinning and the copy: float32 "
        f"{args.batch_size * 3 * n * n * 4 / 2**20:.3g} MiB, uint8 {args.batch_size * 3 * n * n / 2**20:.3g} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
