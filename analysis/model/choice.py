"""The keys that choose a model (weights, classes, ImageNet class map, seed) and the one call that loads it.

The extract's and inspect's configs (jobs/config.py ModelKeys) and a finished run's config.yaml (analysis/store/run.py
RunSource) all carry these keys under these names; each loads the model they choose through `load_chosen_model`, so
no caller spells out vgg16.load_model's arguments again.
"""

from __future__ import annotations

from typing import Protocol

from analysis.model.vgg16 import LoadedModel, load_model


class ModelChoice(Protocol):
    """What chooses the model: `weights` is "imagenet", "random" or a checkpoint's path."""

    weights: str
    classes: tuple[str, ...] | None  # an N-way checkpoint's class names, in head order
    classes_file: str | None  # ... or a file of them, one a line
    imagenet_classes: tuple[tuple[str, int, int], ...]  # (class, first, last) ImageNet indices, for 1000-way weights
    seed: int  # of random weights


def load_chosen_model(choice: ModelChoice, *, download: bool, progress: bool = True) -> LoadedModel:
    """The model `choice` names; WeightsError before any image is read. `download`: fetch torchvision's ImageNet
    weights when they are not cached (never for a finished run's re-run); `progress`: show that download's bar."""
    return load_model(
        choice.weights,
        classes=choice.classes,
        classes_file=choice.classes_file,
        class_map=choice.imagenet_classes,
        download=download,
        seed=choice.seed,
        progress=progress,
    )
