"""Whole feature maps of chosen layers, for looking at one image (or a handful).

The dataset pass keeps only per-channel reductions (analysis/activations.py); to draw a channel we need its map.
Hooks sit on the ReLU after each chosen conv, so a map is what the next layer reads. VGG16's ReLUs are
inplace=True, so the hook copies its output: the tensor it sees is a buffer that belongs to the forward pass.
"""
from __future__ import annotations

import torch

from analysis.config import LAYER_NAMES, ConfigError
from analysis.model import relu_modules


class FeatureMapRecorder:
    """`with FeatureMapRecorder(model, layers) as rec: model(x); maps = rec.take()`; hooks are removed on exit."""

    def __init__(self, model: torch.nn.Module, layers):
        modules = relu_modules(model)
        unknown = [name for name in layers if name not in modules]
        if unknown:
            raise ConfigError(f"layers: unknown layer {unknown[0]!r}; valid layers: {', '.join(LAYER_NAMES)}")
        self.layers = tuple(layers)
        self._modules = {name: modules[name] for name in self.layers}
        self._maps: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> "FeatureMapRecorder":
        try:
            for name, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._make_hook(name)))
        except BaseException:
            self.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _make_hook(self, name: str):
        def hook(module, inputs, output):  # output: (B, C, H, W), overwritten in place later in the forward
            self._maps[name] = output.detach().to("cpu", torch.float32, copy=True)
        return hook

    def release(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def take(self) -> dict[str, torch.Tensor]:
        """{layer: (B, C, H, W) float32 CPU tensor} of the last forward pass; the recorder forgets them."""
        missing = [name for name in self.layers if name not in self._maps]
        if missing:
            raise RuntimeError(f"no feature map recorded for {missing}: run the model inside the `with` block")
        maps, self._maps = {name: self._maps[name] for name in self.layers}, {}
        return maps
