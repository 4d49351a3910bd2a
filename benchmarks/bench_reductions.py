"""The hooks' reductions alone, on VGG16's real maps of one batch: every layer's mean and max taken from the map
(map only) against the five pre-pool layers' maxima taken from their 2x2 max pool's output (a quarter of the
elements) and their means alone (`compute_mean`: one reduction in float32, cache-sized slices in bf16), as
analysis/model/activations.py does, without and with the peaks (where each max is: the extract records them),
interleaved A B C A B C so that the machine's drift hits all alike.

    python -m benchmarks.bench_reductions [--batch-size 32] [--image-size 224] [--precision fp32,bf16] [--repeats 5]
                                          [--compiled]   # also torch.compile's one-pass mean and max, against eager
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def capture_maps(batch: int, size: int, precision: str) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """layer -> (post-ReLU map, its max pool's output or None), channels_last, as the job's forward makes them."""
    from analysis.model.activations import following_pool  # noqa: PLC0415
    from analysis.model.precision import autocast  # noqa: PLC0415
    from analysis.model.vgg16 import CONV_INDICES, make_vgg16  # noqa: PLC0415

    model = make_vgg16(1000).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    maps = {}
    with torch.inference_mode(), autocast(torch.device("cpu"), precision):
        y = x
        for i, module in enumerate(model.features):
            y = module(y)
            for name, conv in CONV_INDICES.items():
                if i == conv + 1:
                    maps[name] = y.clone()
        for name in list(maps):
            pool = following_pool(model, name)
            maps[name] = (maps[name], pool(maps[name]) if pool is not None else None)
    return maps


def reduce_all(maps, use_pool: bool, peaks: bool = False) -> float:
    from analysis.model.activations import compute_max_peak, compute_mean, compute_mean_max  # noqa: PLC0415

    t = time.perf_counter()
    for full, pooled in maps.values():
        even = full.shape[-2] % 2 == 0 and full.shape[-1] % 2 == 0
        if use_pool and pooled is not None and even:  # what ChannelReducer does for a pre-pool layer
            compute_mean(full)
            compute_max_peak(pooled) if peaks else pooled.amax(dim=(2, 3)).float()
        else:
            compute_mean_max(full, peaks)
    return time.perf_counter() - t


def describe(name: str, seconds: list[float], batch: int) -> str:
    """The median and range of the times, in ms per image."""
    ms = [t / batch * 1000 for t in seconds]
    return f"{name} {statistics.median(ms):.2f} ({min(ms):.2f}-{max(ms):.2f})"


def compare_compiled(maps, batch: int, repeats: int) -> str:
    """Every layer's mean and max in one pass compiled by inductor (static shapes), against the job's eager
    `compute_mean_max` (no peaks, no pool lever), interleaved: issue #23's item 1, measured before it is built."""
    from analysis.model.activations import compute_mean_max  # noqa: PLC0415

    def fused(x):  # (B, C, H, W) -> (B, C) float32 mean, (B, C) float32 max
        return x.float().mean(dim=(2, 3)), x.amax(dim=(2, 3)).float()

    compiled = torch.compile(fused, dynamic=False)
    fulls = [full for full, _ in maps.values()]
    t = time.perf_counter()
    for x in fulls:  # one compilation per shape
        compiled(x)
    compile_s = time.perf_counter() - t
    eager, fast = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        for x in fulls:
            compute_mean_max(x)
        eager.append(time.perf_counter() - t)
        t = time.perf_counter()
        for x in fulls:
            compiled(x)
        fast.append(time.perf_counter() - t)
    ratio = [f / e for f, e in zip(fast, eager)]
    gain = (statistics.median(eager) - statistics.median(fast)) / batch
    pays = f", paid back after {compile_s / gain:,.0f} images" if gain > 0 else ", never paid back"
    return (
        f"{describe('eager mean and max', eager, batch)}, {describe('compiled', fast, batch)}; compiled / eager "
        f"{statistics.median(ratio):.3f} ({min(ratio):.3f}-{max(ratio):.3f}), {repeats} pairs; compiling the "
        f"{len(fulls)} shapes {compile_s:.1f} s{pays}"
    )


def main(argv: list[str] | None = None) -> int:
    from benchmarks.machine import describe_cpu  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--precision", default="fp32,bf16")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compiled", action="store_true", help="also torch.compile's one-pass mean and max (slow start)")
    args = p.parse_args(argv)
    print(describe_cpu(), flush=True)
    for precision in args.precision.split(","):
        maps = capture_maps(args.batch_size, args.image_size, precision)
        reduce_all(maps, False), reduce_all(maps, True), reduce_all(maps, True, True)  # warm-up
        before, after, peaks = [], [], []
        with torch.inference_mode():
            for _ in range(args.repeats):
                before.append(reduce_all(maps, False))
                after.append(reduce_all(maps, True))
                peaks.append(reduce_all(maps, True, True))
        ratio = [a / b for a, b in zip(after, before)]
        cost = [p / a for p, a in zip(peaks, after)]
        print(
            f"{precision} batch {args.batch_size} size {args.image_size}: all 13 layers' reductions, ms per image: "
            f"{describe('map only', before, args.batch_size)}, "
            f"{describe('pre-pool maxima from the pool', after, args.batch_size)}, "
            f"{describe('the same with peaks', peaks, args.batch_size)}; "
            f"pool / map only {statistics.median(ratio):.3f} ({min(ratio):.3f}-{max(ratio):.3f}), "
            f"with peaks / without {statistics.median(cost):.3f} ({min(cost):.3f}-{max(cost):.3f}), "
            f"{args.repeats} triples",
            flush=True,
        )
        if args.compiled:
            with torch.inference_mode():
                print(f"{precision}: {compare_compiled(maps, args.batch_size, args.repeats)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
