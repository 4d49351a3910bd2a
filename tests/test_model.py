"""Weights: the torch hub cache path of the ImageNet weights, checkpoints in every accepted shape, clear failures."""
from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from analysis.config import LAYER_NAMES
from analysis.model.vgg16 import (CONV_INDICES, WeightsError, imagenet_weights_path, layer_channels, load_model,
                            make_vgg16, relu_modules)

CLASS_MAP = (("cat", 281, 285), ("dog", 151, 268))
BIG = ("classifier.0.weight", "classifier.3.weight")  # 119M of VGG16's 138M parameters


def make_state_dict(num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision VGG16 keys and shapes with random values. The two big classifier matrices are one random row
    broadcast (stride 0): torch.save stores that row only, so a checkpoint costs ~60 MB instead of 553 MB."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in make_vgg16(num_classes).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s[1], generator=g).expand(s) if k in BIG else torch.randn(s, generator=g) * 0.01
            for k, s in shapes.items()}


def make_module(state: dict[str, torch.Tensor]) -> nn.Module:
    """A real torchvision VGG16 holding `state` (without copying the broadcast matrices)."""
    with torch.device("meta"):
        model = make_vgg16(state["classifier.6.weight"].shape[0])
    model.load_state_dict(state, assign=True)
    return model


def load(weights, **kw):
    args = dict(classes=None, classes_file=None, class_map=CLASS_MAP, download=False, seed=0)
    return load_model(str(weights), **{**args, **kw})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for key in ("features.0.weight", "features.28.bias", "classifier.0.weight", "classifier.6.weight"):
        assert params[key].dtype == torch.float32 and params[key].device.type == "cpu"
        assert torch.equal(params[key], state[key].float()), key


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

    loaded = load("imagenet")

    assert no_network == []
    assert_same_weights(loaded.model, state)
    assert not loaded.model.training
    assert loaded.weights_sha256 == sha256(path)
    assert loaded.weights_path == str(path)
    assert loaded.weights_id == "torchvision:VGG16_Weights.IMAGENET1K_V1"
    assert (loaded.head, loaded.classes, loaded.class_map, loaded.random) == ("imagenet", ("cat", "dog"),
                                                                               CLASS_MAP, False)
    assert len(loaded.imagenet_categories) == 1000 and loaded.imagenet_categories[281] == "tabby"
    assert "not torchvision's ImageNet weights" in caplog.text  # random weights under the official name


def test_imagenet_uncached_without_download_names_the_cache_path(torch_home, no_network):
    with pytest.raises(WeightsError) as e:
        load("imagenet", download=False)
    message = str(e.value)
    assert str(imagenet_weights_path()) in message and "--weights random" in message and "\n" not in message
    assert no_network == []


def test_imagenet_download_failure_is_a_weights_error(torch_home, no_network):
    with pytest.raises(WeightsError) as e:
        load("imagenet", download=True)
    assert no_network == [torchvision.models.VGG16_Weights.IMAGENET1K_V1.url]  # through torchvision's loader
    assert str(imagenet_weights_path()) in str(e.value) and "no route to host" in str(e.value)
    assert not imagenet_weights_path().exists()


# ---------------------------------------------------------------------------------------------------------------
# --weights random

def test_random_weights_are_seeded_and_leave_the_global_rng_alone():
    rng = torch.get_rng_state()
    first = load("random", seed=3).model.features[0].weight.detach().clone()
    second = load("random", seed=3)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(first, second.model.features[0].weight)
    assert (second.weights_id, second.random, second.head, second.weights_sha256) == ("random(seed=3)", True,
                                                                                       "imagenet", None)


# ---------------------------------------------------------------------------------------------------------------
# --weights PATH

def test_two_way_checkpoint_with_classes(tmp_path):
    state = make_state_dict(2)
    path = tmp_path / "cats_dogs.pth"
    torch.save(state, path)

    loaded = load(path, classes=("cat", "dog"))

    assert_same_weights(loaded.model, state)
    assert (loaded.head, loaded.classes, loaded.class_map, loaded.imagenet_categories) == ("classes", ("cat", "dog"),
                                                                                           None, None)
    assert (loaded.weights_id, loaded.weights_sha256) == ("file:cats_dogs.pth", sha256(path))
    with torch.inference_mode():
        assert loaded.model(torch.zeros(1, 3, 32, 32)).shape == (1, 2)


def test_classification_pytorch_checkpoint_from_dataparallel_with_classes_file(tmp_path):
    state = make_state_dict(2, seed=1)
    path = tmp_path / "ep100-loss0.1.pth"
    torch.save(nn.DataParallel(make_module(state)).state_dict(), path)  # how classification-pytorch saves
    assert next(iter(torch.load(path, weights_only=True))).startswith("module.")
    classes_file = tmp_path / "cls_classes.txt"
    classes_file.write_text("cat\n\n  dog  \n")

    loaded = load(path, classes_file=str(classes_file))

    assert_same_weights(loaded.model, state)
    assert loaded.classes == ("cat", "dog")


def test_checkpoint_nested_under_a_key_with_its_class_names(tmp_path):
    state = make_state_dict(2)
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 7, "model_state_dict": state, "classes": ["cat", "dog"]}, path)
    loaded = load(path)
    assert_same_weights(loaded.model, state)
    assert loaded.classes == ("cat", "dog")


def test_safetensors_with_class_names_in_metadata(tmp_path):
    state = {k: v.half().contiguous() for k, v in make_state_dict(2).items()}  # safetensors stores dense tensors
    path = tmp_path / "model.safetensors"
    save_file(state, str(path), metadata={"classes": json.dumps(["cat", "dog"])})
    loaded = load(path)
    assert_same_weights(loaded.model, state)  # fp16 in the file, fp32 in the model
    assert loaded.classes == ("cat", "dog")


def test_thousand_way_checkpoint_uses_the_imagenet_mapping(tmp_path):
    path = tmp_path / "imagenet_finetune.pth"
    torch.save(make_state_dict(1000), path)
    loaded = load(path, classes=("ignored", "names", "here"))
    assert (loaded.head, loaded.classes) == ("imagenet", ("cat", "dog"))
    assert loaded.weights_id == "file:imagenet_finetune.pth"


def test_head_that_does_not_fit_the_class_names_fails_with_both_counts(tmp_path):
    path = tmp_path / "three.pth"
    torch.save(make_state_dict(3), path)
    with pytest.raises(WeightsError, match=r"3-way head \(classifier\.6\.weight \(3, 4096\)\).*2 classes"):
        load(path, classes=("cat", "dog"))
    with pytest.raises(WeightsError, match="--classes"):
        load(path)


def test_class_names_that_disagree_fail(tmp_path):
    path = tmp_path / "named.pth"
    torch.save({"state_dict": make_state_dict(2), "class_names": ["cat", "dog"]}, path)
    with pytest.raises(WeightsError, match=r"the checkpoint \(cat, dog\) differ from --classes \(dog, cat\)"):
        load(path, classes=("dog", "cat"))


def test_a_state_dict_that_is_not_vgg16_names_the_keys(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(WeightsError) as e:
        load(path, classes=("cat", "dog"))
    message = str(e.value)
    assert "not a torchvision VGG16" in message and "\n" not in message
    assert "features.0.weight (64, 3, 3, 3)" in message and "conv1.weight (64, 3, 7, 7)" in message

    state = make_state_dict(2)
    state["features.0.weight"] = torch.zeros(64, 1, 3, 3)  # a grayscale first conv
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"features\.0\.weight expected \(64, 3, 3, 3\) got \(64, 1, 3, 3\)"):
        load(path, classes=("cat", "dog"))


def test_a_pickled_model_is_not_a_plain_state_dict(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save(nn.Linear(2, 2), path)  # torch.save(model) instead of torch.save(model.state_dict())
    with pytest.raises(WeightsError, match=r"not a plain state dict.*torch\.nn\.modules\.linear\.Linear"):
        load(path)


class _Runs:
    """An object whose unpickling calls a function: what weights_only=True exists to refuse."""

    def __reduce__(self):
        return (print, ("this ran",))


def _write_refused(path: Path, kind: str) -> None:
    if kind == "whole model":
        torch.save(nn.Linear(2, 2), path)
    elif kind == "code":
        torch.save({"w": torch.zeros(1), "x": _Runs()}, path)
    elif kind == "plain pickle":
        path.write_bytes(pickle.dumps(_Runs(), protocol=2))
    else:
        path.write_text("hello world")


def _assert_no_unsafe_advice(message: str) -> None:
    assert "\n" not in message and "\x1b" not in message, message
    assert "weights_only=False" not in message and "False" not in message, message
    assert "safe_globals" not in message and "trust" not in message, message


@pytest.mark.parametrize("kind", ["whole model", "code", "plain pickle", "text"])
def test_a_refused_checkpoint_says_to_re_save_the_state_dict_never_to_load_it_unsafely(tmp_path, kind):
    path = tmp_path / "model.pth"
    _write_refused(path, kind)
    with pytest.raises(WeightsError) as e:
        load(path)
    _assert_no_unsafe_advice(str(e.value))
    assert str(path) in str(e.value) and "torch.save(model.state_dict(), path)" in str(e.value)


@pytest.mark.parametrize("kind", ["code", "plain pickle", "text"])
def test_refused_cached_imagenet_weights_say_to_delete_them_never_to_load_them_unsafely(torch_home, no_network,
                                                                                        kind):
    path = imagenet_weights_path()
    path.parent.mkdir(parents=True)
    _write_refused(path, kind)
    with pytest.raises(WeightsError) as e:
        load("imagenet", download=False)
    _assert_no_unsafe_advice(str(e.value))
    assert str(path) in str(e.value) and "delete the file" in str(e.value)


@pytest.mark.parametrize("content", [None, b"", b"\x00not a checkpoint" * 10])
def test_missing_empty_or_garbled_files_fail(tmp_path, content):
    path = tmp_path / "weights.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match="weights.pth"):
        load(path)


def test_missing_classes_file_fails(tmp_path):
    path = tmp_path / "two.pth"
    torch.save(make_state_dict(2), path)
    with pytest.raises(WeightsError, match="classes file .*nope.txt"):
        load(path, classes_file=str(tmp_path / "nope.txt"))
