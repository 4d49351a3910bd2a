"""Per-channel spatial mean and max of the post-ReLU activations, and where the max is, reduced inside forward hooks.

VGG16's ReLUs are in-place and each feature map is large (64 x 224 x 224 floats per image at conv1), so the hook
reduces (B, C, H, W) -> (B, C) on the model's device as soon as the map exists and keeps nothing else: no feature
map outlives the forward pass that made it.

A peak is the flat index y * w + x of a channel's maximum on the layer's peak grid (`compute_peak_grids`): the
pooled grid for the layers whose max comes from the max pool after them, else the layer's own; on ties the first
position in row-major order wins, in every path (torch.max and argmax return the first maximal index).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch
from torch import nn

from analysis.config import ConfigError
from analysis.model.map_reductions import EAGER, Reduction
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


class MapReductions(Protocol):
    """How a ChannelReducer reduces one map: `map_reductions.EAGER`, or `compiled.CompiledReductions`."""

    name: str

    def mean(self, x: torch.Tensor) -> torch.Tensor: ...

    def mean_max(self, x: torch.Tensor, peaks: bool) -> Reduction: ...

    def max_peak(self, x: torch.Tensor, peaks: bool) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def contribution(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor: ...

    fuses_pool: bool  # whether pool_mean can stand in for a 2x2 max pool

    def pool_mean(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None: ...


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
    last row or column and the map itself is reduced. With reductions that fuse the pool (the compiled ones), the
    pool's forward is replaced inside the block by one pass that gives the pooled map and the layer's mean.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], peaks: bool = False, reductions: MapReductions = EAGER):
        super().__init__(model, layers)
        self.peaks = peaks
        self.reductions = reductions
        self._pools = {name: pool for name in self.layers if (pool := following_pool(model, name)) is not None}

    def record(self, output: torch.Tensor) -> Reduction:
        # output: (B, C, H, W), any memory format; under autocast it is bf16/fp16, so accumulate in float32.
        return self.reductions.mean_max(output, self.peaks)

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
            elif self.reductions.fuses_pool:
                self._store[name] = Reduction(None, None, None)  # the pool's own pass adds the mean, its hook the max
            else:
                self._store[name] = Reduction(self.reductions.mean(x), None, None)  # the pool hook adds the max

        return hook

    def __enter__(self):
        super().__enter__()
        if self.reductions.fuses_pool:
            for name, pool in self._pools.items():
                pool.forward = self._make_fused_pool(name, pool)  # this instance's forward, until the block ends
        return self

    def _remove(self) -> None:
        for pool in self._pools.values():
            pool.__dict__.pop("forward", None)
        super()._remove()

    def _make_fused_pool(self, name: str, pool: nn.Module):
        """The pool's forward when the reductions fuse it: the pooled map and the layer's mean from one pass over
        the map (the pool reads it anyway). Where a graph needs the pool (the attributed layers) or the fused pass
        is unavailable, the pool itself runs and the mean is reduced apart."""
        plain = type(pool).forward

        def forward(x: torch.Tensor) -> torch.Tensor:
            r = self._store.get(name)
            if r is None or r.mean is not None:
                return plain(pool, x)
            fused = None if x.requires_grad else self.reductions.pool_mean(x)
            if fused is None:
                self._store[name] = Reduction(self.reductions.mean(x.detach()), None, None)
                return plain(pool, x)
            pooled, mean = fused
            self._store[name] = Reduction(mean, None, None)
            return pooled

        return forward

    def _make_pool_hook(self, name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            r = self._store.get(name)
            if r is not None and r.max is None:
                # (B, C, h/2, w/2): the peak is on this grid
                self._store[name] = Reduction(r.mean, *self.reductions.max_peak(output.detach(), self.peaks))

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
        and not pool.return_indices
    ):
        return pool
    return None


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


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
