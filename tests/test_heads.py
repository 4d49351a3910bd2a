"""ImageNet logits folded into dataset classes, checked against numpy on constructed logit vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from analysis.config import normalize_class_map, read_config_section
from analysis.model.heads import compute_class_logits, compute_probabilities
from analysis.model.vgg16 import LoadedModel

CLASS_MAP = normalize_class_map("imagenet_classes", read_config_section(None, "extract")["imagenet_classes"])


def make_loaded(head: str, classes=("cat", "dog")) -> LoadedModel:
    return LoadedModel(
        model=nn.Identity(),
        classes=classes,
        head=head,
        weights_id="test",
        weights_path=None,
        weights_sha256=None,
        class_map=CLASS_MAP if head == "imagenet" else None,
        imagenet_categories=None,
        random=False,
    )


def np_logsumexp(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]


def test_default_config_maps_domestic_cats_and_dog_breeds():
    assert CLASS_MAP == (("cat", 281, 285), ("dog", 151, 268))


def test_imagenet_logits_fold_by_logsumexp_over_inclusive_ranges():
    logits = np.random.default_rng(0).normal(0, 3, size=(4, 1000))
    expected = np.stack([np_logsumexp(logits[:, 281:286]), np_logsumexp(logits[:, 151:269])], axis=1)

    out = compute_class_logits(torch.from_numpy(logits).float(), make_loaded("imagenet"))

    assert out.dtype == torch.float32 and out.shape == (4, 2)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    probs = compute_probabilities(out)
    assert probs.dtype == torch.float32
    np.testing.assert_allclose(probs.sum(dim=1).numpy(), 1.0, rtol=1e-6)
    softmax = np.exp(expected - expected.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs.numpy(), softmax / softmax.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_flat_logits_give_each_class_the_share_of_its_range():
    probs = compute_probabilities(compute_class_logits(torch.zeros(1, 1000), make_loaded("imagenet")))
    np.testing.assert_allclose(probs.numpy(), [[5 / 123, 118 / 123]], rtol=1e-6)


@pytest.mark.parametrize("index, predicted", [(283, 0), (281, 0), (285, 0), (151, 1), (268, 1)])
def test_a_big_logit_in_a_range_predicts_that_class(index, predicted):
    logits = torch.zeros(1, 1000)
    logits[0, 100] = 15.0  # outside both ranges: must not matter
    logits[0, index] = 20.0
    probs = compute_probabilities(compute_class_logits(logits, make_loaded("imagenet")))
    assert probs.argmax(dim=1).item() == predicted and probs.max().item() > 0.99


def test_a_class_head_passes_its_logits_through_as_float32():
    raw = torch.tensor([[1.5, -2.0], [0.0, 3.25]], dtype=torch.bfloat16)
    out = compute_class_logits(raw, make_loaded("classes"))
    assert out.dtype == torch.float32 and torch.equal(out, raw.float())


def test_logits_that_do_not_fit_the_head_fail():
    with pytest.raises(ValueError, match="1000 logits"):
        compute_class_logits(torch.zeros(1, 2), make_loaded("imagenet"))
    with pytest.raises(ValueError, match="3 columns"):
        compute_class_logits(torch.zeros(1, 3), make_loaded("classes"))
