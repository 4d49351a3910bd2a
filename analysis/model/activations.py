"""Per-channel spatial mean and max of the post-ReLU activations, and where the max is, reduced inside forward hooks.

VGG16's ReLUs are in-place and each feature map is large (64 x 224 x 224 floats per image at conv1), so the hook
reduces (B, C, H, W) -> (B, C) on the model's device as soon as the map exists and keeps nothing else: no feature
map outlives the forward pass that made it.

A peak is the flat index y * w + x of a channel's maximum on the layer's peak grid (`compute_peak_grids`): the
pooled grid for the layers whose max comes from the max pool after them, else the layer's own; on ties the first
position in row-major order wins, in every path (torch.max and argmax return the first maximal index).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import torch
from torch import nn

from analysis.config import ConfigError
from analysis.model.vgg16 import CONV_INDICES, relu_modules


class LayerHooks:
    """Context manager: a forward hook on the ReLU after each named conv turns that layer's output into what
    `record(output)` returns, kept until `take()`. The handles are removed on exit, also when the block raises.
    VGG16's ReLUs are inplace: `record` must reduce or copy the map, never keep the tensor it is given."""

    missing_message = "no forward pass recorded for {layers}: run the model inside the with block before take()"

    def __init__(self, model: nn.Module, layers: Sequence[str]):
        modules = relu_modules(model)
        for name in layers:
            if name not in modules:
                raise ConfigError(f"layers: unknown layer {name!r}; valid layers: {', '.join(modules)}")
        self.layers = tuple(dict.fromkeys(layers))
        self._modules = {name: modules[name] for name in self.layers}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._store: dict[str, Any] = {}

    def record(self, output: torch.Tensor) -> Any:
        raise NotImplementedError

    def __enter__(self):
        if self._handles:
            raise RuntimeError(f"{type(self).__name__} is already active; it cannot be entered twice")
        try:
            for module, hook in self._hooks():
                self._handles.append(module.register_forward_hook(hook))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._remove()
        self._store = {}

    def _hooks(self):
        """(module, forward hook) pairs to install on entry."""
        return [(module, self._make_hook(name)) for name, module in self._modules.items()]

    def take(self) -> dict[str, Any]:
        """{layer: what `record` made of it} for the last forward pass; forgotten afterwards."""
        missing = [name for name in self.layers if name not in self._store]
        if missing:
            raise RuntimeError(self.missing_message.format(layers=", ".join(missing)))
        out, self._store = {name: self._store[name] for name in self.layers}, {}
        return out

    def _make_hook(self, name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            # detach: with autograd on, a reduction's backward would otherwise keep the whole map alive.
            self._store[name] = self.record(output.detach())

        return hook

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


class Reduction(NamedTuple):
    """One layer's per-channel reductions of a batch, each (B, C) on the map's device."""

    mean: torch.Tensor  # float32
    max: torch.Tensor | None  # float32; None only while the pool after the layer has not run
    peak: torch.Tensor | None  # int64 flat index of the max on the peak grid; None unless peaks were asked for


class ChannelReducer(LayerHooks):
    """Every forward pass inside the block records a `Reduction` per layer; `take()` hands them over.

        with ChannelReducer(model, ["conv4_3", "conv5_3"], peaks=True) as reducer:
            for x in batches:
                logits = model(x)
                stats = reducer.take()  # {"conv4_3": Reduction(mean (B, 512), max (B, 512), peak (B, 512)), ...}

    A second forward before `take()` replaces the first one's values.

    The five layers before a 2x2 max pool (conv1_2, conv2_2, conv3_3, conv4_3, conv5_3) take their maxima from the
    pool's output, a quarter of the elements, when the map's height and width are even: every element is then in
    exactly one window, so the max of the pooled map is the max of the map, bit for bit (the mean is then one
    reduction over the map: the same value up to float32 rounding). With an odd side the pool (floor mode) drops the
    last row or column and the map itself is reduced.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], peaks: bool = False):
        super().__init__(model, layers)
        self.peaks = peaks
        self._pools = {name: pool for name in self.layers if (pool := following_pool(model, name)) is not None}

    def record(self, output: torch.Tensor) -> Reduction:
        # output: (B, C, H, W), any memory format; under autocast it is bf16/fp16, so accumulate in float32.
        return compute_mean_max(output, self.peaks)

    def _hooks(self):
        return super()._hooks() + [(pool, self._make_pool_hook(name)) for name, pool in self._pools.items()]

    def take(self) -> dict[str, Any]:
        waiting = [name for name, r in self._store.items() if r.max is None]
        if waiting:
            raise RuntimeError(
                f"the maxima of {', '.join(waiting)} come from the max pool after each: run the "
                "features past it before take()"
            )
        return super().take()

    def _make_hook(self, name: str):
        if name not in self._pools:
            return super()._make_hook(name)

        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            x = output.detach()
            if x.shape[-2] % 2 or x.shape[-1] % 2:
                self._store[name] = self.record(x)
            else:
                self._store[name] = Reduction(compute_mean(x), None, None)  # the pool hook adds the max

        return hook

    def _make_pool_hook(self, name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            r = self._store.get(name)
            if r is not None and r.max is None:
                x = output.detach()  # (B, C, h/2, w/2): the peak is on this grid
                if self.peaks:
                    maxes, peaks = compute_max_peak(x)
                    self._store[name] = Reduction(r.mean, maxes.float(), peaks)
                else:
                    self._store[name] = Reduction(r.mean, x.amax(dim=(2, 3)).float(), None)

        return hook


def following_pool(model: nn.Module, layer: str) -> nn.Module | None:
    """The 2x2, stride-2 max pool right after the layer's ReLU, or None."""
    features, i = model.features, CONV_INDICES[layer] + 2
    pool = features[i] if i < len(features) else None
    if (
        isinstance(pool, nn.MaxPool2d)
        and _pair(pool.kernel_size) == _pair(pool.stride) == (2, 2)
        and _pair(pool.padding) == (0, 0)
        and _pair(pool.dilation) == (1, 1)
    ):
        return pool
    return None


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


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


def compute_map_sizes(model: nn.Module, size: int) -> dict[str, tuple[int, int]]:
    """Layer -> (h, w) of its map for a size x size input, by the output-size arithmetic of the convs and pools."""
    h = w = size
    names = {id(module): name for name, module in relu_modules(model).items()}
    sizes = {}
    for module in model.features:
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
            h, w = (_out_size(n, module, axis) for axis, n in enumerate((h, w)))
        if id(module) in names:
            sizes[names[id(module)]] = (h, w)
    return sizes


def _out_size(n: int, module: nn.Module, axis: int) -> int:
    k, s, p, d = (_pair(getattr(module, a))[axis] for a in ("kernel_size", "stride", "padding", "dilation"))
    span = n + 2 * p - d * (k - 1) - 1
    return (-(-span // s) if getattr(module, "ceil_mode", False) else span // s) + 1


def compute_peak_grids(model: nn.Module, layers: Sequence[str], size: int) -> dict[str, tuple[int, int]]:
    """Layer -> (h, w) of the grid its peaks index, for a size x size input: the 2x2 pool's output for a layer whose
    max ChannelReducer takes from it (even sides), else the layer's own map."""
    sizes = compute_map_sizes(model, size)
    grids = {}
    for name in layers:
        h, w = sizes[name]
        pooled = following_pool(model, name) is not None and h % 2 == 0 and w % 2 == 0
        grids[name] = (h // 2, w // 2) if pooled else (h, w)
    return grids
