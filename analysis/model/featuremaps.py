"""Whole feature maps of chosen layers, for looking at one image (or a handful).

The dataset pass keeps only per-channel reductions (analysis/model/activations.py); to draw a channel we need its map.
Hooks sit on the ReLU after each chosen conv, so a map is what the next layer reads. VGG16's ReLUs are
inplace=True, so the hook copies its output: the tensor it sees is a buffer that belongs to the forward pass.
"""

from __future__ import annotations

import torch

from analysis.model.activations import LayerHooks


class FeatureMapRecorder(LayerHooks):
    """`with FeatureMapRecorder(model, layers) as rec: model(x); maps = rec.take()` gives
    {layer: (B, C, H, W) float32 CPU tensor}; hooks are removed on exit."""

    missing_message = "no feature map recorded for {layers}: run the model inside the `with` block"

    def record(self, output: torch.Tensor) -> torch.Tensor:
        # output is overwritten in place later in the forward: copy it.
        return output.to("cpu", torch.float32, copy=True)
