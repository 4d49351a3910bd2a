"""Which channels drive the decision: gradient x activation per channel, and Grad-CAM, for a batch at a time.

    contrib[k, c] = sum over h, w of A_c(h, w) * d logit_k / d A_c(h, w)        (captum's LayerGradientXActivation)
    gradcam_k     = ReLU(sum over c of mean_hw(d logit_k / d A_c) * A_c)          (Selvaraju et al. 2017)

A is the post-ReLU map of an attributed layer, logit_k the class logit as the tables store it. The forward is split
at the lowest attributed layer: the layers below it run without a graph (their activations are reduced by the
hooks as usual), the rest with one, so the backward goes from the logits down to that layer only; no parameter
gets a gradient. One backward per class: one batched backward for all classes (autograd.grad with
is_grads_batched) measured within noise of it on a 2-core CPU and changes the sums' rounding, so the tables would no
longer be bit for bit those of earlier runs (docs/benchmarks.md). With every bias zero the network is positively
homogeneous and, for each layer, the contributions sum to the logit (Euler): the tests check exactly that.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from analysis.model.activations import MapReductions
from analysis.model.map_reductions import EAGER
from analysis.model.vgg16 import CONV_INDICES, relu_modules

GRADCAM_LAYER = "conv5_3"  # the last conv layer, as in Selvaraju et al.: the most semantic maps still in space
METHOD = "gradient x activation summed over space: contrib[k, c] = sum_hw A_c * d logit_k / d A_c (A after ReLU)"


class Attributor:
    """Context manager around VGG16 for the attributed layers: `forward(x)` returns the raw logits with a graph from
    the lowest attributed layer up; `take_contributions(logits)` or `take_gradcams(logits)` then backpropagate.

        with Attributor(model, ["conv4_3", "conv5_3"]) as att:
            raw = att.forward(x)                          # (B, K_raw), like model(x)
            with torch.enable_grad():                     # the logits must be in the graph too
                logits = class_logits(raw)
            contrib = att.take_contributions(logits)      # {layer: (B, K, C) float32}
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], reductions: MapReductions = EAGER):
        """reductions: what sums each map times its gradient (the eager or the compiled reductions)."""
        self.model = model
        self.reductions = reductions
        self.layers = tuple(sorted(dict.fromkeys(layers), key=CONV_INDICES.__getitem__))
        if not self.layers:
            raise ValueError("an Attributor needs at least one layer")
        relus = relu_modules(model)
        self.channels = {name: model.features[CONV_INDICES[name]].out_channels for name in self.layers}
        self._split = CONV_INDICES[self.layers[0]] + 2  # features[:split] ends with the lowest layer's ReLU
        self._modules = {name: relus[name] for name in self.layers[1:]}
        self._handles: list = []
        self._maps: dict[str, torch.Tensor] = {}

    def __enter__(self):
        for name, module in self._modules.items():
            self._handles.append(module.register_forward_hook(self._keep(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._maps = {}

    def _keep(self, name: str):
        def hook(module, inputs, output):
            if torch.is_grad_enabled():
                self._maps[name] = output  # the tensor itself: the backward needs it in the graph

        return hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        with torch.no_grad():
            low = m.features[: self._split](x)  # (B, C, H, W) post-ReLU of the lowest layer
        with torch.enable_grad():
            low = low.detach().requires_grad_(True)
            self._maps = {self.layers[0]: low}
            y = m.features[self._split :](low)
            # At 224 px the map is already the pool's 7 x 7: each bin one cell, the pool an exact identity whose
            # backward would still cost a pass over the map per class.
            same = isinstance(m.avgpool, nn.AdaptiveAvgPool2d) and tuple(y.shape[-2:]) == _pair(m.avgpool.output_size)
            y = torch.flatten(y if same else m.avgpool(y), 1)
            return m.classifier(y)

    def _backward(self, logits: torch.Tensor, contributions: bool, gradcams: Sequence[str]):
        """gradcams: the layers whose Grad-CAMs are made (each (a * mean g) is a pass over the map per class)."""
        maps = [self._maps[name] for name in self.layers]
        k = logits.shape[1]
        contrib: dict[str, list[torch.Tensor]] = {name: [] for name in self.layers}
        cams: dict[str, list[torch.Tensor]] = {name: [] for name in gradcams}
        for j in range(k):
            # Images are independent (eval mode: no batch statistics), so the gradient of the batch's sum is each
            # image's own gradient.
            with torch.enable_grad():
                target = logits[:, j].sum()
            grads = torch.autograd.grad(target, maps, retain_graph=j < k - 1)
            for name, a, g in zip(self.layers, maps, grads):
                a = a.detach()
                if contributions:
                    contrib[name].append(self.reductions.contribution(a, g))  # (B, C) float32
                if name in cams:
                    a, g = a.float(), g.float()
                    cams[name].append(torch.relu((a * g.mean(dim=(2, 3), keepdim=True)).sum(dim=1)))  # (B, h, w)
        self._maps = {}
        return (
            {name: torch.stack(v, dim=1) for name, v in contrib.items()} if contributions else None,
            {name: torch.stack(v, dim=1) for name, v in cams.items()},
        )

    def take_contributions(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """{layer: (B, K, C) float32} gradient x activation of each class logit, summed over space."""
        return self._backward(logits, True, ())[0]

    def take_gradcams(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """{layer: (B, K, h, w) float32} Grad-CAM of each class at the layer's resolution (not upsampled)."""
        return self._backward(logits, False, self.layers)[1]

    def take_both(
        self, logits: torch.Tensor, gradcam_layers: Sequence[str] | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Contributions of every layer and Grad-CAMs (of `gradcam_layers`, default every layer) from the same
        backward passes: the Grad-CAMs cost no backward of their own."""
        layers = self.layers if gradcam_layers is None else tuple(gradcam_layers)
        unknown = [name for name in layers if name not in self.layers]
        if unknown:
            raise ValueError(f"Grad-CAM of {unknown}: not attributed layers ({', '.join(self.layers)})")
        return self._backward(logits, True, layers)


def _pair(size) -> tuple:
    return (size, size) if isinstance(size, int) else tuple(size)
