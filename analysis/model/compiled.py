"""The hooks' reductions compiled by torch.compile (inductor: C++ on the CPU, Triton on a GPU): each map's
per-channel sum, max and peak in one pass over it, at the memory's speed.

A map (B, C, H, W) in channels_last is (B, H, W, C) in memory. Each image row's sum and max per channel come from
one pass (a vectorized loop over the channels); the rows' maxima, 1/W of the map, say which row holds each
channel's first maximum, and one gather of that row (W values per channel) finds its first column: the peak is
row * W + column, the first maximum in row-major order, as torch.max gives it, bit for bit. Measured on a 2-core
Xeon with AMX, VGG16's 13 layers at batch 32, 224 px, the pre-pool layers' maxima from their pool
(benchmarks/bench_reductions.py --compiled), without the pools below: 0.37x the eager time in bf16 (3.1 against
8.3 ms per image), 0.78x in fp32 (5.7 against 7.2), both about 9 GB/s, this machine's memory speed; argmax itself
compiled (inductor's argmax does not vectorize) was 2.3x slower than this. Fusing the ReLU into the same pass did
not help (1.28 against 1.36 ms per image on conv1_1's map): the ReLU's own pass stays.

The 2x2 max pool after conv1_2, conv2_2, conv3_3, conv4_3 and conv5_3 does: it reads the map anyway, so with these
reductions ChannelReducer replaces the pool's forward by `pool_mean`, the pooled map (bit for bit) and the layer's
mean from that one pass. The reductions and the five pools together: 0.30x eager in bf16 (4.0 against 12.9 ms per
image, of which PyTorch's own pools took 4.8), 0.57x in fp32 (6.9 against 12.6).

Compiling costs about 20-25 s on 2 cores for VGG16's shapes (inductor caches the code on disk: a later run takes
a few seconds). The batch size is a symbolic dimension, so a short last batch or a batch with failed images
compiles nothing new; a batch of one image uses the eager reductions. Any failure to compile or run (no C++
compiler, no Triton) is logged once and the eager reductions take over for the rest of the run: the values are
the same either way, up to float32 rounding of the means.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil

import torch

from analysis.config import ConfigError
from analysis.model.map_reductions import EAGER, EagerReductions, Reduction

log = logging.getLogger("cnn_blackbox")

# auto compiles when the process has at least this many images to do. Measured on a 2-core Xeon with AMX, batch 32,
# 224 px (bench_reductions --compiled: the reductions with peaks and the five max pools they read from): compiled
# 4.0 against 12.9 ms per image in bf16, 6.9 against 12.6 in fp32; compiling took 8-11 s with inductor's on-disk
# cache warm and 20-25 s cold, so it repays itself after 1,300-4,600 images; a quarter of the forward of 8,000.
AUTO_MIN_IMAGES = 8_000


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)  # (B, H, W, C): a plain view of a channels_last map


def _peak(t: torch.Tensor, row_max: torch.Tensor, maxes: torch.Tensor) -> torch.Tensor:
    """t (B, H, W, C), row_max (B, H, C), maxes (B, C) -> the flat index of each channel's first maximum."""
    b, h, w, c = t.shape
    rows = torch.arange(h, device=t.device).view(1, h, 1)
    row = torch.where(row_max == maxes.unsqueeze(1), rows, h).amin(dim=1)  # (B, C): the first row holding it
    line = t.gather(1, row.view(b, 1, 1, c).expand(b, 1, w, c)).squeeze(1)  # (B, W, C): that row
    cols = torch.arange(w, device=t.device).view(1, w, 1)
    return row * w + torch.where(line == maxes.unsqueeze(1), cols, w).amin(dim=1)


def _mean(x: torch.Tensor) -> torch.Tensor:
    t = _rows(x)
    return t.float().sum(dim=(1, 2)) / (t.shape[1] * t.shape[2])


def _mean_max(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    t = _rows(x)
    return t.float().sum(dim=(1, 2)) / (t.shape[1] * t.shape[2]), t.amax(dim=(1, 2)).float()


def _mean_max_peak(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    t = _rows(x)
    sums, row_max = t.float().sum(dim=2), t.amax(dim=2)  # (B, H, C) each: one pass over the map
    maxes = row_max.amax(dim=1)
    return sums.sum(dim=1) / (t.shape[1] * t.shape[2]), maxes.float(), _peak(t, row_max, maxes)


def _max(x: torch.Tensor) -> torch.Tensor:
    return x.amax(dim=(2, 3)).float()


def _max_peak(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    t = _rows(x)
    row_max = t.amax(dim=2)
    maxes = row_max.amax(dim=1)
    return maxes.float(), _peak(t, row_max, maxes)


def _pool_mean(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) with even sides -> (its 2x2 max pool, bit for bit F.max_pool2d's, channels_last; the per-channel
    mean (B, C) float32), from one pass over the map."""
    b, c, h, w = x.shape
    t = _rows(x).reshape(b, h // 2, 2, w // 2, 2, c)
    pooled = t.amax(dim=(2, 4))  # (B, h/2, w/2, C)
    sums = t.float().sum(dim=(2, 4))  # each window's sum, in the same loop
    return pooled.permute(0, 3, 1, 2), sums.sum(dim=(1, 2)) / (h * w)


def _contribution(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return (_rows(a).float() * _rows(g).float()).sum(dim=(1, 2))  # one pass over both, nothing materialized


class CompiledReductions:
    """ChannelReducer's reductions (`activations.MapReductions`), compiled; the eager ones where they cannot be."""

    name = "compiled"
    fuses_pool = True

    def __init__(self, fallback: EagerReductions = EAGER):
        self.fallback = fallback
        self.failure: str | None = None  # why the compiled reductions were given up, once they were
        fns = {"mean": _mean, "mean_max": _mean_max, "mean_max_peak": _mean_max_peak, "max": _max, "peak": _max_peak}
        fns.update(contribution=_contribution, pool_mean=_pool_mean)
        self._fns = {key: torch.compile(fn, dynamic=False) for key, fn in fns.items()}
        # Every distinct map shape is one compilation of the same function: VGG16 has up to 6 per function, and a
        # process that runs several sizes or precisions (the tests) more; the default limit is 8.
        config = torch._dynamo.config
        limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # its older name
        setattr(config, limit, max(getattr(config, limit), 64))

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        out = self._run("mean", x)
        return self.fallback.mean(x) if out is None else out

    def mean_max(self, x: torch.Tensor, peaks: bool) -> Reduction:
        out = self._run("mean_max_peak" if peaks else "mean_max", x)
        if out is None:
            return self.fallback.mean_max(x, peaks)
        return Reduction(*out) if peaks else Reduction(*out, None)

    def max_peak(self, x: torch.Tensor, peaks: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self._run("peak" if peaks else "max", x)
        if out is None:
            return self.fallback.max_peak(x, peaks)
        return out if peaks else (out, None)

    def pool_mean(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(the 2x2 max pool of x, x's mean) in one pass; None where the pool must run (one image, a failure)."""
        return self._run("pool_mean", x)

    def contribution(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        out = self._run("contribution", a, g)
        return self.fallback.contribution(a, g) if out is None else out

    def _run(self, key: str, *xs: torch.Tensor):
        """The compiled function's output, or None where the eager one must run (one image, or after a failure)."""
        if self.failure is not None or xs[0].shape[0] < 2:
            return None
        try:
            for x in xs:
                torch._dynamo.mark_dynamic(x, 0)  # any batch size >= 2 with one compiled code per layer
            with torch.no_grad():  # one grad mode for the hooks under and over the attributed layers
                return self._fns[key](*xs)
        except Exception as e:  # noqa: BLE001 - inductor raises many kinds (no compiler, no Triton, a codegen bug)
            self.failure = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
            log.warning("compiled reductions failed (%s); the eager reductions run from here on", self.failure)
            return None


def choose_reductions(setting: str, device: torch.device, precision: str, images: int):
    """(the reductions for a run of `images` images on `device` in `precision`, why them): `setting` is the config's
    reductions, auto | eager | compiled."""
    if setting == "eager":
        return EAGER, "eager (reductions: eager)"
    missing = _missing_compiler(device)
    if setting == "compiled":
        if missing:
            raise ConfigError(f"reductions: 'compiled' needs {missing}; use auto or eager")
        return CompiledReductions(), "compiled (reductions: compiled)"
    if setting != "auto":
        raise ConfigError(f"reductions: {setting!r} is not allowed; choose one of auto, eager, compiled")
    if missing:
        return EAGER, f"eager (auto: torch.compile would need {missing})"
    if images < AUTO_MIN_IMAGES:
        return EAGER, f"eager (auto: {images:,} images to do, under the {AUTO_MIN_IMAGES:,} that repay compiling)"
    return CompiledReductions(), f"compiled (auto: {images:,} images to do in {precision})"


def _missing_compiler(device: torch.device) -> str | None:
    """What torch.compile lacks on `device`, or None."""
    if device.type == "cuda":
        return None if importlib.util.find_spec("triton") else "Triton (pip install triton)"
    if device.type == "cpu":
        return None if any(shutil.which(cc) for cc in ("g++", "c++", "clang++")) else "a C++ compiler (g++)"
    return f"inductor on {device.type}, which this job does not use"
