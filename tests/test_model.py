"""Weights: VGG16's layer names, the torch hub cache path of the ImageNet weights (found, missing, failing to
download, refused), and seeded random weights. Checkpoints given as a file are in test_model_checkpoints.py."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision
from torch import nn

from analysis.config import LAYER_NAMES
from analysis.model.vgg16 import (
    CONV_INDICES,
    WeightsError,
    imagenet_weights_path,
    layer_channels,
    make_vgg16,
    relu_modules,
)
from tests.small_runs import (
    CLASS_MAP,
    assert_no_unsafe_advice,
    assert_same_weights,
    file_sha256,
    load_weights,
    make_state_dict,
    write_refused,
)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # a set_dir() elsewhere would win over TORCH_HOME
    return tmp_path / "torch"


@pytest.fixture
def no_network(monkeypatch):
    calls = []

    def refuse(url, dst, *args, **kwargs):
        calls.append(url)
        raise URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return calls


# ---------------------------------------------------------------------------------------------------------------
# Layer names


def test_layer_names_follow_torchvision_vgg16():
    with torch.device("meta"):
        model = make_vgg16(1000)
    convs = [i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    assert list(CONV_INDICES) == list(LAYER_NAMES)
    assert list(CONV_INDICES.values()) == convs
    relus = relu_modules(model)
    assert all(relus[n] is model.features[i + 1] and isinstance(relus[n], nn.ReLU) for n, i in CONV_INDICES.items())
    assert list(layer_channels(model).values()) == [64, 64, 128, 128, 256, 256, 256] + [512] * 6


# ---------------------------------------------------------------------------------------------------------------
# --weights imagenet: torchvision's loader and the torch hub cache


def test_imagenet_weights_come_from_the_hub_cache(torch_home, no_network, caplog):
    path = imagenet_weights_path()
    assert path == torch_home / "hub" / "checkpoints" / "vgg16-397923af.pth"
    state = make_state_dict(1000)
    path.parent.mkdir(parents=True)
    torch.save(state, path)

    loaded = load_weights("imagenet")

    assert no_network == []
    assert_same_weights(loaded.model, state)
    assert not loaded.model.training
    assert loaded.weights_sha256 == file_sha256(path)
    assert loaded.weights_path == str(path)
    assert loaded.weights_id == "torchvision:VGG16_Weights.IMAGENET1K_V1"
    assert (loaded.head, loaded.classes, loaded.class_map, loaded.random) == (
        "imagenet",
        ("cat", "dog"),
        CLASS_MAP,
        False,
    )
    assert len(loaded.imagenet_categories) == 1000 and loaded.imagenet_categories[281] == "tabby"
    assert "not torchvision's ImageNet weights" in caplog.text  # random weights under the official name


def test_imagenet_uncached_without_download_names_the_cache_path(torch_home, no_network):
    with pytest.raises(WeightsError) as e:
        load_weights("imagenet", download=False)
    message = str(e.value)
    assert str(imagenet_weights_path()) in message and "--weights random" in message and "\n" not in message
    assert no_network == []


def test_imagenet_download_failure_is_a_weights_error(torch_home, no_network):
    with pytest.raises(WeightsError) as e:
        load_weights("imagenet", download=True)
    assert no_network == [torchvision.models.VGG16_Weights.IMAGENET1K_V1.url]  # through torchvision's loader
    assert str(imagenet_weights_path()) in str(e.value) and "no route to host" in str(e.value)
    assert not imagenet_weights_path().exists()


@pytest.mark.parametrize("kind", ["code", "plain pickle", "text"])
def test_refused_cached_imagenet_weights_say_to_delete_them_never_to_load_them_unsafely(torch_home, no_network, kind):
    path = imagenet_weights_path()
    path.parent.mkdir(parents=True)
    write_refused(path, kind)
    with pytest.raises(WeightsError) as e:
        load_weights("imagenet", download=False)
    assert_no_unsafe_advice(str(e.value))
    assert str(path) in str(e.value) and "delete the file" in str(e.value)


# ---------------------------------------------------------------------------------------------------------------
# --weights random


def test_random_weights_are_seeded_and_leave_the_global_rng_alone():
    rng = torch.get_rng_state()
    first = load_weights("random", seed=3).model.features[0].weight.detach().clone()
    second = load_weights("random", seed=3)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(first, second.model.features[0].weight)
    assert (second.weights_id, second.random, second.head, second.weights_sha256) == (
        "random(seed=3)",
        True,
        "imagenet",
        None,
    )
