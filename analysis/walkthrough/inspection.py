"""The numbers of the one-image walkthrough: the network's answer and a summary of each layer's feature maps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from analysis.model.heads import compute_class_logits, compute_probabilities
from analysis.model.vgg16 import LoadedModel

TOP_IMAGENET = 5


@dataclass(frozen=True)
class Answer:
    classes: tuple[str, ...]
    logits: np.ndarray  # (K,) float32, the logits of the analysis classes
    probs: np.ndarray  # (K,) float32, softmax of `logits`
    pred: int  # index into classes
    imagenet_top: tuple[tuple[int, str, float], ...] | None  # ImageNet head: (index, name, softmax over 1000)


@dataclass(frozen=True)
class LayerMaps:
    layer: str
    maps: np.ndarray  # (C, h, w) float32, after ReLU
    means: np.ndarray  # (C,) float32, spatial mean of each channel
    top: int  # the channel with the highest mean
    contrib: np.ndarray | None = None  # (C,) float32, each channel's contribution to the predicted class's logit

    @property
    def top_contrib(self) -> int | None:
        """The channel the classifier leaned on most for its answer (largest contribution), if attributed."""
        return int(np.argmax(self.contrib)) if self.contrib is not None else None

    @property
    def vmax(self) -> float:
        """The colour scale's top for this layer's pictures: its largest activation (0 when all are zero)."""
        return float(self.maps.max())


def compute_answer(raw: torch.Tensor, loaded: LoadedModel) -> Answer:
    """(1, R) network output -> the analysis classes' logits and probabilities, and the ImageNet top-5."""
    logits = compute_class_logits(raw, loaded)  # (1, K)
    probs = compute_probabilities(logits)  # (1, K)
    top = None
    if loaded.head == "imagenet":
        p = torch.softmax(raw.float(), dim=1)[0]  # (1000,)
        values, indices = p.topk(TOP_IMAGENET)
        top = tuple((int(i), loaded.imagenet_categories[int(i)], float(v)) for v, i in zip(values, indices))
    probs_np = probs[0].numpy().astype(np.float32)
    return Answer(tuple(loaded.classes), logits[0].numpy().astype(np.float32), probs_np, int(np.argmax(probs_np)), top)


def summarize_layer(layer: str, maps: torch.Tensor, contrib: torch.Tensor | None = None) -> LayerMaps:
    """(C, h, w) maps of one image -> means and the top channel (ties: the lowest index, as argmax gives);
    contrib: (C,) contributions to the predicted class, kept as they are."""
    maps_np = maps.numpy().astype(np.float32, copy=False)
    means = maps_np.mean(axis=(1, 2), dtype=np.float64).astype(np.float32)  # (C,)
    return LayerMaps(
        layer, maps_np, means, int(np.argmax(means)), None if contrib is None else contrib.numpy().astype(np.float32)
    )
