"""Each image's concept values at the concept layer, for a batch and one class's concepts.

    A (B, C, h, w)  post-ReLU maps of the layer;   G = d logit_class / d A  (the class logit the tables store)
    U = project(A as (B*h*w, C) rows, bases)  ->  (B, h, w, k) coefficients >= 0
    presence_j     = mean_p U[p, j]                peak_j = max_p U[p, j]   (and which cell)
    contribution_j = sum_p U[p, j] * (basis_j . G[p])
    residual       = sum_p (A[p] - U[p] @ bases) . G[p]
    sum_j contribution_j + residual = sum_p,c A * G: the layer's total contribution, which is the sum over channels
    of the extract's attribution row for that class and layer (gradient x activation summed over space).

The network is cut where the extract's Attributor cuts it (analysis/model/attribution.py): below the layer without a
graph, above it with one, so the backward runs from the logits down to the layer only.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import torch
from torch import nn

from analysis.concepts.nmf import project
from analysis.model.heads import compute_class_logits
from analysis.model.precision import autocast
from analysis.model.vgg16 import CONV_INDICES, LoadedModel


class LayerSplit:
    """VGG16 cut after `layer`'s ReLU: `bottom(x)` gives the layer's maps (no graph), `top(a)` the raw logits."""

    def __init__(self, model: nn.Module, layer: str):
        self.model = model
        self.split = CONV_INDICES[layer] + 2  # features[:split] ends with the layer's ReLU, as in the Attributor

    def bottom(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model.features[: self.split](x)  # (B, C, h, w)

    def top(self, a: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.classifier(torch.flatten(m.avgpool(m.features[self.split :](a)), 1))  # (B, K_raw)


def iter_class_gradients(
    split: LayerSplit, loaded: LoadedModel, maps: torch.Tensor, classes: Sequence[int], precision: str = "fp32"
) -> Iterator[tuple[int, torch.Tensor]]:
    """maps (B, C, h, w) -> (class index, (B, C, h, w) float32 d logit_class / d maps) for each of `classes`, one
    backward each from the class logits of analysis.model.heads (the extract's); one gradient held at a time. Images
    are independent in eval mode: the gradient of the batch's sum is each image's own."""
    if not classes:
        return
    a = maps.detach().float().requires_grad_(True)
    with torch.enable_grad():
        with autocast(a.device, precision):
            raw = split.top(a)
        logits = compute_class_logits(raw.float(), loaded)  # (B, K)
        targets = [logits[:, j].sum() for j in classes]
    for n, (j, target) in enumerate(zip(classes, targets)):  # the graph exists: no grad mode needed to go back
        (g,) = torch.autograd.grad(target, a, retain_graph=n < len(classes) - 1)
        yield j, g.float()


@dataclasses.dataclass(frozen=True)
class ConceptValues:
    """One class's k concepts on a batch of B images; float32 on the host."""

    presence: torch.Tensor  # (B, k)
    peak: torch.Tensor  # (B, k)
    peak_y: torch.Tensor  # (B, k) pixels of the crop: the centre of the peak's cell
    peak_x: torch.Tensor  # (B, k)
    contribution: torch.Tensor  # (B, k)
    residual: torch.Tensor  # (B,)
    total: torch.Tensor  # (B,) sum_p,c A * G


def compute_concept_values(maps: torch.Tensor, grads: torch.Tensor, bases: torch.Tensor, crop: int) -> ConceptValues:
    """maps, grads (B, C, h, w), bases (k, C) -> the batch's ConceptValues; crop: the side of the network's input."""
    b, c, h, w = maps.shape
    k = bases.shape[0]
    rows = maps.detach().float().permute(0, 2, 3, 1).reshape(-1, c)  # (B*h*w, C)
    g = grads.float().permute(0, 2, 3, 1).reshape(-1, c)  # (B*h*w, C)
    u = project(rows, bases)  # (B*h*w, k)
    contribution = (u * (g @ bases.T)).reshape(b, h * w, k).sum(dim=1)  # (B, k)
    residual = ((rows - u @ bases) * g).sum(dim=1).reshape(b, h * w).sum(dim=1)  # (B,)
    total = (rows * g).sum(dim=1).reshape(b, h * w).sum(dim=1)  # (B,)
    u = u.reshape(b, h * w, k)
    cell = u.argmax(dim=1)  # (B, k) first maximum on ties
    peak = u.gather(1, cell[:, None, :])[:, 0]  # (B, k)
    peak_y = ((cell // w).float() + 0.5) * (crop / h)
    peak_x = ((cell % w).float() + 0.5) * (crop / w)
    host = [t.cpu() for t in (u.mean(dim=1), peak, peak_y, peak_x, contribution, residual, total)]
    return ConceptValues(*host)


def compute_concept_maps(maps: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    """maps (B, C, h, w), bases (k, C) -> (B, k, h, w) coefficients: each concept's heatmap over the layer's grid."""
    b, c, h, w = maps.shape
    u = project(maps.detach().float().permute(0, 2, 3, 1).reshape(-1, c), bases)  # (B*h*w, k)
    return u.reshape(b, h, w, -1).permute(0, 3, 1, 2)
