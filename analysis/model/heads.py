"""From the network's raw logits to the analysis classes.

An ImageNet head has 1000 logits; a dataset class is a set of ImageNet classes (cat = 281-285, dog = 151-268), and
the logit of a set is the logsumexp of its members: softmax over the folded logits then gives each class the total
probability of its members, renormalised over the classes of the analysis.
"""

from __future__ import annotations

import torch

from analysis.model.vgg16 import LoadedModel


def compute_class_logits(raw: torch.Tensor, loaded: LoadedModel) -> torch.Tensor:
    """(B, K_raw) network logits -> (B, K) float32 logits of `loaded.classes`, in that order."""
    raw = raw.float()
    if loaded.head == "classes":
        if raw.shape[1] != len(loaded.classes):
            raise ValueError(f"logits have {raw.shape[1]} columns but the head has {len(loaded.classes)} classes")
        return raw
    if loaded.head != "imagenet":
        raise ValueError(f"head {loaded.head!r} is not known; expected 'imagenet' or 'classes'")
    if raw.shape[1] != 1000:
        raise ValueError(f"an ImageNet head needs 1000 logits, got {raw.shape[1]}")
    return torch.stack(
        [
            torch.logsumexp(raw[:, first : last + 1], dim=1)  # inclusive range -> (B,)
            for _, first, last in loaded.class_map
        ],
        dim=1,
    )  # (B, K)


def compute_probabilities(class_logits: torch.Tensor) -> torch.Tensor:
    """(B, K) logits -> (B, K) float32 softmax over the classes."""
    return torch.softmax(class_logits.float(), dim=1)
