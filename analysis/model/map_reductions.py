"""A map's per-channel spatial mean, max and peak (the flat index of the max), in plain PyTorch operations: the
`eager` reductions of ChannelReducer, and the fallback of the compiled ones (analysis/model/compiled.py).

A peak is the flat index y * w + x of a channel's maximum; on ties the first position in row-major order wins, in
every path (torch.max and argmax return the first maximal index).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Reduction(NamedTuple):
    """One layer's per-channel reductions of a batch, each (B, C) on the map's device."""

    mean: torch.Tensor  # float32
    max: torch.Tensor | None  # float32; None only while the pool after the layer has not run
    peak: torch.Tensor | None  # int64 flat index of the max on the peak grid; None unless peaks were asked for


_CHUNK_BYTES = 2 << 20  # a slice this size stays in the CPU's cache between its sum and its max
_SEARCH_SLICES = 8  # a map of fewer slices gets its peaks from torch.max over the whole map (faster there)


def compute_mean(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> per-channel spatial mean (B, C) float32, for a map whose max comes from elsewhere.

    In float32 one reduction over the whole map is as fast as any slicing, and one op beats the sliced loop's
    hundreds on a busy machine. A bf16/fp16 map on the CPU is summed in cache-sized slices: PyTorch's float32
    accumulation of a whole reduced-precision map is 2-8x slower (8 x 64 x 224 x 224 bf16: 67 ms against 8.6 ms
    in 2 MB slices, 2-core AMD EPYC; the same rounding error, about 1e-7).
    """
    v, rows = _slices(x)
    if v is None or x.dtype == torch.float32:
        return x.mean(dim=(2, 3), dtype=torch.float32)
    sums = v[:, :rows].sum(dim=1, dtype=torch.float32)
    for start in range(rows, v.shape[1], rows):
        sums += v[:, start : start + rows].sum(dim=1, dtype=torch.float32)
    return sums / v.shape[1]


def _slices(x: torch.Tensor) -> tuple[torch.Tensor | None, int]:
    """(the (B, HW, C) view of a channels_last CPU map, rows of HW per cache-sized slice), or (None, 0) where
    slicing does not apply: another device or layout, or a map that fits one slice."""
    b, c, h, w = x.shape
    rows = max(1, _CHUNK_BYTES // max(1, b * c * x.element_size()))
    if x.device.type != "cpu" or rows >= h * w or not x.is_contiguous(memory_format=torch.channels_last):
        return None, 0
    return x.permute(0, 2, 3, 1).reshape(b, h * w, c), rows


def compute_mean_max(x: torch.Tensor, peaks: bool = False) -> Reduction:
    """(B, C, H, W) -> per-channel spatial mean (B, C) float32, max (B, C) float32 and, when asked, the max's flat
    index y * W + x (B, C) int64, the first on ties.

    On the CPU a map is far larger than the cache, and two separate passes (mean, then max) read it from memory
    twice. Reducing it in slices of rows that fit the cache reads it once: measured 35-40% less time for the
    reductions of VGG16's layers at batch 32 (2-core AVX-512 CPU). On a GPU the plain reductions are right.
    The peaks follow the slices (`_reduce_slices`); a map of few slices takes them from torch.max instead.
    """
    v, rows = _slices(x)  # v: (B, HW, C), a view of the channels_last map
    if v is None:
        means = x.mean(dim=(2, 3), dtype=torch.float32)
        if not peaks:
            return Reduction(means, x.amax(dim=(2, 3)).float(), None)
        maxes, where = x.flatten(2).max(dim=2)  # a view for contiguous and channels_last maps alike
        return Reduction(means, maxes.float(), where)
    search = peaks and v.shape[1] >= _SEARCH_SLICES * rows
    sums, maxes, where = _reduce_slices(v, rows, True, search)
    if peaks and not search:
        maxes, where = x.flatten(2).max(dim=2)  # the same maxima, bit for bit
    return Reduction(sums / v.shape[1], maxes.float(), where)


def compute_max_peak(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) -> (per-channel max (B, C) in x's dtype, its flat index y * W + x (B, C) int64, the first on
    ties): torch.max over the flattened map, or on a large channels_last CPU map the sliced search of
    `_reduce_slices`."""
    v, rows = _slices(x)
    if v is None or v.shape[1] < _SEARCH_SLICES * rows:
        return x.flatten(2).max(dim=2)
    return _reduce_slices(v, rows, False, True)[1:]


def _reduce_slices(v: torch.Tensor, rows: int, sums: bool, peaks: bool):
    """v (B, HW, C) in slices of `rows` rows -> (float32 sums or None, maxes in v's dtype, peaks or None), each
    (B, C).

    The peaks: each slice's max against the running one (strictly greater: an earlier slice wins a tie) says which
    slice holds the first max, and one gather of a slice's size finds it there (`_locate`). torch.max(dim=1) on
    the slices, which returns the indices at once, is 1.6-14x slower than their amax (bf16-fp32, 2-core EPYC);
    over the whole channels_last map, torch.max is 3-4x slower than this search on conv1 at 224 px, and faster
    only on a map of a few slices (`_SEARCH_SLICES`: 14 x 14 at batch 16)."""
    total = v[:, :rows].sum(dim=1, dtype=torch.float32) if sums else None
    maxes = v[:, :rows].amax(dim=1)
    slice_of_max = torch.zeros(maxes.shape, dtype=torch.int64, device=v.device) if peaks else None
    for k, start in enumerate(range(rows, v.shape[1], rows), start=1):
        part = v[:, start : start + rows]  # (B, rows, C)
        if sums:
            total += part.sum(dim=1, dtype=torch.float32)
        part_max = part.amax(dim=1)
        if peaks:
            slice_of_max.masked_fill_(part_max > maxes, k)
        torch.maximum(maxes, part_max, out=maxes)
    return total, maxes, _locate(v, maxes, slice_of_max, rows) if peaks else None


def _locate(v: torch.Tensor, maxes: torch.Tensor, slice_of_max: torch.Tensor, rows: int) -> torch.Tensor:
    """The first row of v (B, HW, C) equal to maxes (B, C) within the slice of `rows` rows that holds it: (B, C).
    Gathered as (B, C, rows), each channel's rows in a run: 2-3x faster than (B, rows, C), whose reads jump between
    channels' slices at every element."""
    first = slice_of_max * rows  # (B, C)
    index = (first.unsqueeze(2) + torch.arange(rows, device=v.device)).clamp_(max=v.shape[1] - 1)  # (B, C, rows)
    found = torch.gather(v.transpose(1, 2), 2, index) == maxes.unsqueeze(2)  # clamped rows repeat the last one
    return first + found.to(torch.uint8).argmax(dim=2)


class EagerReductions:
    """The reductions ChannelReducer calls, as the functions of this module."""

    name = "eager"
    fuses_pool = False  # the max pool runs as it is; its output gives the pre-pool layers' maxima

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        return compute_mean(x)

    def mean_max(self, x: torch.Tensor, peaks: bool) -> Reduction:
        return compute_mean_max(x, peaks)

    def max_peak(self, x: torch.Tensor, peaks: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, C, H, W) -> (per-channel max (B, C) float32, its flat index (B, C) int64 or None)."""
        if not peaks:
            return x.amax(dim=(2, 3)).float(), None
        maxes, where = compute_max_peak(x)
        return maxes.float(), where

    def pool_mean(self, x: torch.Tensor) -> None:
        return None  # the pool is not fused here

    def contribution(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) map and its gradient -> (B, C) float32 sum over space of their product."""
        return (a.float() * g.float()).sum(dim=(2, 3))


EAGER = EagerReductions()
