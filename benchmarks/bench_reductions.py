"""The hooks' reductions alone, on VGG16's real maps of one batch: every layer's mean and max taken from the map
(map only) against the five pre-pool layers' maxima taken from their 2x2 max pool's output (a quarter of the
elements) and their means alone (`compute_mean`: one reduction in float32, cache-sized slices in bf16), as
analysis/model/activations.py does, without and with the peaks (where each max is: the extract records them),
interleaved A B C A B C so that the machine's drift hits all alike.

    python -m benchmarks.bench_reductions [--batch-size 32] [--image-size 224] [--precision fp32,bf16] [--repeats 5]
                                          [--compiled]   # also the compiled reductions (the job's), against eager
"""

from __future__ import annotations

import argparse
import contextlib
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


def reduce_all(maps, use_pool: bool, peaks: bool = False, reductions=None, pools: bool = False) -> float:
    """Seconds to reduce every layer's map as ChannelReducer does (use_pool: the pre-pool layers' maxima from their
    pool), with `reductions` (map_reductions.EAGER by default, or compiled.CompiledReductions); pools: also run
    the pre-pool layers' max pools (fused with the mean where the reductions fuse them, as the job does)."""
    import torch.nn.functional as F  # noqa: PLC0415, N812

    from analysis.model.map_reductions import EAGER  # noqa: PLC0415

    ops = reductions or EAGER
    t = time.perf_counter()
    for full, pooled in maps.values():
        even = full.shape[-2] % 2 == 0 and full.shape[-1] % 2 == 0
        if use_pool and pooled is not None and even:  # what ChannelReducer does for a pre-pool layer
            if pools and ops.fuses_pool:
                pooled = ops.pool_mean(full)[0]
            else:
                pooled = F.max_pool2d(full, 2) if pools else pooled
                ops.mean(full)
            ops.max_peak(pooled, peaks)
        else:
            ops.mean_max(full, peaks)
    return time.perf_counter() - t


def describe(name: str, seconds: list[float], batch: int) -> str:
    """The median and range of the times, in ms per image."""
    ms = [t / batch * 1000 for t in seconds]
    return f"{name} {statistics.median(ms):.2f} ({min(ms):.2f}-{max(ms):.2f})"


def compare_compiled(maps, batch: int, repeats: int) -> str:
    """The job's reductions with peaks and the pool lever, and the five max pools they read from, compiled
    (analysis/model/compiled.py: the pools fused with the means) against eager, interleaved; the compile time and
    the images over which it pays back."""
    from analysis.model.compiled import CompiledReductions  # noqa: PLC0415

    compiled = CompiledReductions()
    t = time.perf_counter()
    reduce_all(maps, True, True, compiled, pools=True)  # one compilation per shape
    compile_s = time.perf_counter() - t
    eager, fast = [], []
    for _ in range(repeats):
        eager.append(reduce_all(maps, True, True, pools=True))
        fast.append(reduce_all(maps, True, True, compiled, pools=True))
    ratio = [f / e for f, e in zip(fast, eager)]
    gain = (statistics.median(eager) - statistics.median(fast)) / batch
    pays = f", paid back after {compile_s / gain:,.0f} images" if gain > 0 else ", never paid back"
    return (
        f"reductions with peaks + the 5 max pools: {describe('eager', eager, batch)}, "
        f"{describe('compiled', fast, batch)}"
        f"; compiled / eager {statistics.median(ratio):.3f} ({min(ratio):.3f}-{max(ratio):.3f}), {repeats} pairs; "
        f"compiling {compile_s:.1f} s{pays}" + (f"; FAILED, eager ran: {compiled.failure}" if compiled.failure else "")
    )


def compare_in_model(batch: int, size: int, precision: str, repeats: int, device: torch.device | None = None) -> str:
    """Issue #23's share: the model's forward with every layer's reductions and peaks in hooks (ChannelReducer,
    eager and compiled) against the bare forward, interleaved; each forward's fastest and median time. On a shared
    VM the fastest of several is the cost; the medians show the noise."""
    from analysis.config import LAYER_NAMES  # noqa: PLC0415
    from analysis.model.activations import ChannelReducer  # noqa: PLC0415
    from analysis.model.compiled import CompiledReductions  # noqa: PLC0415
    from analysis.model.map_reductions import EAGER  # noqa: PLC0415
    from analysis.model.precision import autocast  # noqa: PLC0415
    from analysis.model.vgg16 import make_vgg16  # noqa: PLC0415

    device = device or torch.device("cpu")
    model = make_vgg16(2).eval().to(device, memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    compiled = CompiledReductions()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def forward(reductions) -> float:
        reducer = ChannelReducer(model, LAYER_NAMES, True, reductions) if reductions else contextlib.nullcontext()
        with torch.inference_mode(), autocast(device, precision), reducer:
            sync()
            t = time.perf_counter()
            model(x)
            sync()
            seconds = time.perf_counter() - t
            reducer.take() if reductions else None
        return seconds

    ways = {"bare forward": None, "eager hooks": EAGER, "compiled hooks": compiled}
    for reductions in ways.values():
        forward(reductions)  # warm-up, and the compilation
    times = {name: [] for name in ways}
    for _ in range(repeats):
        for name, reductions in ways.items():
            times[name].append(forward(reductions) / batch * 1000)
    bare = min(times["bare forward"])
    shares = ", ".join(f"{n} {(min(times[n]) - bare) / bare:+.1%}" for n in ("eager hooks", "compiled hooks"))
    figures = ", ".join(f"{n} {min(v):.1f} (median {statistics.median(v):.1f})" for n, v in times.items())
    return (
        f"the forward, ms per image, fastest of {repeats}: {figures}; the reductions' share of the bare forward: "
        + shares
    )


def main(argv: list[str] | None = None) -> int:
    from benchmarks.machine import describe_cpu  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--precision", default="fp32,bf16")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compiled", action="store_true", help="also the compiled reductions, against eager (slow start)")
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
            del maps
            print(f"{precision}: {compare_in_model(args.batch_size, args.image_size, precision, 2 * args.repeats)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
