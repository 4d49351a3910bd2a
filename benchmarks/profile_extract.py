"""Where the extract's time goes: each part of the job's own code timed on the same images, per image.

    python -m benchmarks.profile_extract [--images 64] [--batch-size 32] [--image-size 224] [--precision fp32,bf16]
                                         [--reductions eager|compiled]  # default: auto, as on a large dataset

The parts are the job's functions called in its order (the dataset's __getitems__ on the job's loading threads,
with its read/digest/decode/fingerprint/preprocess methods timed inside, jobs.forward.to_device and BatchForward,
UnitWriter), after the job's own setup (jobs.extract.prepare), with a clock around each: load (wall; inside it
read, sha256, decode, phash, preprocess to uint8, summed over the threads), collate, copy (pinning, the copy to the
device and the normalization there), forward (net of the hooks), reductions (inside the hooks), attribution (the
backward of every class), rows (logits, the one host copy, prediction rows), parquet (unit commits; the profiled
images make one small unit, so the same batches are also committed again as one unit of the config's unit_size,
2,048 images by default, and that cost per image printed apart: what the job pays). Everything runs
in the main process, as the job does with workers=0; on a GPU the clock synchronizes the device, which costs some
overlap the job would have.

The machine is shared and drifts: the bare forward (model(x), no hooks) is measured before and after every
repeat, and each part is printed as its median over the repeats with the spread (min-max).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import torch

PARTS = ("load", "collate", "copy", "forward", "reductions", "attribution", "rows", "parquet")
# Inside "load": each item's steps, summed over the threads that load a batch (so they can add up to more than it).
STEPS = ("read", "sha256", "decode", "phash", "preprocess")
DEFAULT_UNIT = "parquet at the config's unit size"  # printed apart: not part of the profiled total


class Clock:
    """Seconds per part; `sync` waits for the device so that a part's kernels are charged to it."""

    def __init__(self, device: torch.device):
        self.seconds: dict[str, float] = defaultdict(float)
        self._sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self._lock = threading.Lock()  # the loading threads add to it at once

    @contextlib.contextmanager
    def part(self, name: str, sync: bool = True):
        if sync:
            self._sync()
        t = time.perf_counter()
        try:
            yield
        finally:
            if sync:
                self._sync()
            with self._lock:
                self.seconds[name] += time.perf_counter() - t


class _TimedForward:
    """Stands in for the model or the Attributor in BatchForward: the same calls, each timed."""

    def __init__(self, inner, clock: Clock):
        self._inner, self._clock = inner, clock

    def __call__(self, x):
        with self._clock.part("forward"):
            return self._inner(x)

    def forward(self, x):
        with self._clock.part("forward"):
            return self._inner.forward(x)

    def take_contributions(self, logits):
        with self._clock.part("attribution"):
            return self._inner.take_contributions(logits)

    def take_both(self, logits, gradcam_layers=None):
        with self._clock.part("attribution"):
            return self._inner.take_both(logits, gradcam_layers)


def make_config(
    data: Path,
    out: Path,
    device: str,
    precision: str,
    batch_size: int | None,
    image_size: int,
    attribution: str | None = None,
    weights: str = "random",
):
    """The job's config for these settings, through its own parser (defaults from configs/default.yaml)."""
    from jobs import extract  # noqa: PLC0415

    return extract.parse(
        ["--data", str(data), "--out", str(out), "--weights", weights, "--device", device]
        + ["--precision", precision, "--image-size", str(image_size), "--no-progress"]
        + (["--batch-size", str(batch_size)] if batch_size else [])  # None: the config's
        + (["--attribution-layers", attribution] if attribution else [])
    )


def profile_parts(
    cfg, max_images: int | None = None, reductions: str | None = None
) -> tuple[dict[str, float], int, str]:
    """({part: seconds}, images, the reductions' name) of one pass of the job's code over cfg.data, after one warm-up
    batch. reductions: eager | compiled | auto; None: what the job picks for a large dataset."""
    from analysis.data.dataset import ImageDataset, collate_images  # noqa: PLC0415
    from analysis.model.activations import ChannelReducer  # noqa: PLC0415
    from analysis.model.attribution import Attributor  # noqa: PLC0415
    from analysis.model.compiled import choose_reductions  # noqa: PLC0415
    from analysis.store.writer import UnitSchemas, UnitWriter  # noqa: PLC0415
    from jobs import extract, extract_units  # noqa: PLC0415
    from jobs.forward import BatchForward, to_device  # noqa: PLC0415

    job = extract.prepare(cfg)  # the job's setup: OUT, the files, the model on its device, the values' layout
    device, pre, values, found = job.execution.device, job.preprocessing, job.values, job.found
    records = found.records[:max_images] if max_images else found.records
    model = job.model.requires_grad_(False)
    attributed = values.attribution is not None
    clock = Clock(device)

    def timed(part: str, fn, sync: bool = True):
        def run(*args):
            with clock.part(part, sync):
                return fn(*args)

        return run

    class TimedReducer(ChannelReducer):  # every hook the reducer installs, on the maps and on the pools
        def _make_hook(self, name):
            return timed("reductions", super()._make_hook(name))

        def _make_pool_hook(self, name):
            return timed("reductions", super()._make_pool_hook(name))

    class TimedDataset(ImageDataset):  # the dataset's own steps, each in its part of the clock (no device sync)
        read = timed("read", ImageDataset.read, sync=False)
        digest = timed("sha256", ImageDataset.digest, sync=False)
        fingerprint = timed("phash", ImageDataset.fingerprint, sync=False)
        decode = timed("decode", ImageDataset.decode, sync=False)
        preprocess = timed("preprocess", ImageDataset.preprocess, sync=False)

    dataset = TimedDataset(
        records, pre, cfg.max_image_pixels, cfg.max_file_bytes, found.root, threads=extract_units.load_threads(0)
    )  # the job's loading with workers=0

    step = job.execution.batch_size
    batches = [range(s, min(len(records), s + step)) for s in range(0, len(records), step)]
    schemas = UnitSchemas.make(job.loaded.classes, job.loaded.head == "imagenet", values, {})
    writer = UnitWriter(job.out, values, schemas, cfg.unit_size)
    grad_mode = torch.no_grad() if attributed else torch.inference_mode()
    att = Attributor(model, values.attribution.layers) if attributed else contextlib.nullcontext()
    kept = []  # (rows, ok, acts) of every counted batch
    # The reductions the job picks for a large dataset (auto: compiled where a compiler is); the warm-up batch
    # compiles them, outside the clock.
    reductions = choose_reductions(reductions or cfg.reductions, device, job.execution.precision, 10**9)[0]
    reducer = TimedReducer(model, list(values.channels), values.peak_grid is not None, reductions)
    with grad_mode, reducer, att as a:
        forward = _TimedForward(a if attributed else model, clock)
        compute = BatchForward(dataclasses.replace(job, model=forward), reducer, forward if attributed else None)
        for k, indices in enumerate([batches[0]] + batches):  # the first batch warms up and is not counted
            with clock.part("load"):
                items = dataset.__getitems__(list(indices))
            with clock.part("collate"):
                batch = collate_images(items)
            with clock.part("copy"):
                images = batch.images.pin_memory() if device.type == "cuda" else batch.images
                batch = dataclasses.replace(batch, images=to_device(images, pre, device))
            t = clock.seconds.copy()
            with clock.part("rows"):
                acts, rows = compute(batch)
            # rows: BatchForward less the forward (whose clock holds the reductions) and the attribution
            inside = sum(clock.seconds[p] - t.get(p, 0.0) for p in ("forward", "attribution"))
            clock.seconds["rows"] -= inside
            if k == 0:
                clock.seconds.clear()
                continue
            with clock.part("parquet"):
                writer.add(rows, batch.ok, acts)
            kept.append((rows, batch.ok, acts))
        with clock.part("parquet"):
            writer.close()
    # The same batches again, repeated into one unit of the config's size: the job's Parquet cost per image.
    default_unit = UnitWriter(job.out / "default-unit", values, schemas, cfg.unit_size)
    filled, t = 0, time.perf_counter()
    for rows, ok, acts in itertools.cycle(kept):
        if filled + len(ok) > cfg.unit_size:
            break
        default_unit.add(rows, ok, acts)
        filled += len(ok)
    default_unit.close()
    clock.seconds[DEFAULT_UNIT] = (time.perf_counter() - t) / max(1, filled) * len(records)
    # The forward's clock ran around the hooks: charge the reductions once.
    clock.seconds["forward"] -= clock.seconds["reductions"]
    return {p: clock.seconds.get(p, 0.0) for p in PARTS + STEPS + (DEFAULT_UNIT,)}, len(records), reductions.name


def print_breakdown(title: str, runs: list[dict[str, float]], n: int, bare: list[float], unit_size: int) -> None:
    """Per part: ms per image (median, min-max over the repeats) and share of the profiled total."""
    per = {p: [r[p] / n * 1000 for r in runs] for p in PARTS + STEPS + (DEFAULT_UNIT,)}
    total = [sum(r[p] for p in PARTS) / n * 1000 for r in runs]
    bare_ms = [1000 / b for b in bare]
    print(f"\n{title}: {n} images x {len(runs)} repeats; ms per image, median (min-max)")
    for p in PARTS:
        med = statistics.median(per[p])
        print(f"  {p:12s} {med:9.2f} ({min(per[p]):.2f}-{max(per[p]):.2f})  {med / statistics.median(total):6.1%}")
        if p == "load":
            for step in STEPS:
                m = statistics.median(per[step])
                print(
                    f"    {step:10s} {m:9.2f} ({min(per[step]):.2f}-{max(per[step]):.2f})  summed over the "
                    "loading threads"
                )
    print(f"  {'total':12s} {statistics.median(total):9.2f} ({min(total):.2f}-{max(total):.2f})")
    d = per[DEFAULT_UNIT]
    print(
        f"  parquet at units of {unit_size:,} (the config's unit_size, what the job pays) {statistics.median(d):.2f} "
        f"({min(d):.2f}-{max(d):.2f}) ms per image, against {statistics.median(per['parquet']):.2f} above at units "
        f"of {n}"
    )
    print(
        f"  bare forward {statistics.median(bare_ms):9.2f} ({min(bare_ms):.2f}-{max(bare_ms):.2f})  "
        f"model(x) alone, no hooks, measured before and after each repeat"
    )
    outside = statistics.median(total) - statistics.median(per["forward"])
    print(
        f"  bare forward / profiled total {statistics.median(bare_ms) / statistics.median(total):6.3f}   "
        f"everything but the forward: {outside:.2f} ms/img, hooks' reductions "
        f"{statistics.median(per['reductions']) / statistics.median(bare_ms):.1%} of the bare forward"
    )


def main(argv: list[str] | None = None) -> int:
    from benchmarks.bench_extract import bare_forward  # noqa: PLC0415
    from benchmarks.images import write_images  # noqa: PLC0415
    from benchmarks.machine import describe_cpu  # noqa: PLC0415
    from jobs import runtime  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16")
    p.add_argument(
        "--emulated-bf16-size",
        type=int,
        default=96,
        help="image size of the bf16 breakdown where bf16 is emulated (about 15x slower than fp32)",
    )
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--attribution", default=None, help="--attribution-layers of the job (default: the config's)")
    p.add_argument("--reductions", choices=["auto", "eager", "compiled"], help="default: the job's on a large dataset")
    args = p.parse_args(argv)
    runtime.keep_freed_memory()
    print(describe_cpu(), flush=True)
    native = runtime.has_native_bf16(torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train"
        write_images(data, args.images)
        for precision in args.precision.split(","):
            size = args.image_size if precision != "bf16" or native else args.emulated_bf16_size
            runs, bare = [], []
            for r in range(args.repeats):
                bare.append(bare_forward(args.batch_size, size, precision, 1, True))
                cfg = make_config(
                    data, Path(tmp) / f"out-{precision}-{r}", "cpu", precision, args.batch_size, size, args.attribution
                )
                parts, n, reduced = profile_parts(cfg, reductions=args.reductions)
                runs.append(parts)
                bare.append(bare_forward(args.batch_size, size, precision, 1, True))
            note = "" if precision != "bf16" or native else " (bf16 EMULATED on this CPU: for information only)"
            print_breakdown(
                f"{precision} batch {args.batch_size} size {size}, attribution "
                f"{','.join(cfg.attribution_layers) or 'none'}, {reduced} reductions{note}",
                runs,
                n,
                bare,
                cfg.unit_size,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
