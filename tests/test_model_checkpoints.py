"""Weights given as a file (--weights PATH): checkpoints in every accepted shape, the class names they carry, and
clear failures for the rest, never advice to load a file unsafely."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from analysis.model.vgg16 import WeightsError, make_vgg16
from tests.small_runs import (
    assert_no_unsafe_advice,
    assert_same_weights,
    file_sha256,
    load_weights,
    make_state_dict,
    write_refused,
)


def make_module(state: dict[str, torch.Tensor]) -> nn.Module:
    """A real torchvision VGG16 holding `state` (without copying the broadcast matrices)."""
    with torch.device("meta"):
        model = make_vgg16(state["classifier.6.weight"].shape[0])
    model.load_state_dict(state, assign=True)
    return model


def test_two_way_checkpoint_with_classes(tmp_path):
    state = make_state_dict(2)
    path = tmp_path / "cats_dogs.pth"
    torch.save(state, path)

    loaded = load_weights(path, classes=("cat", "dog"))

    assert_same_weights(loaded.model, state)
    assert (loaded.head, loaded.classes, loaded.class_map, loaded.imagenet_categories) == (
        "classes",
        ("cat", "dog"),
        None,
        None,
    )
    assert (loaded.weights_id, loaded.weights_sha256) == ("file:cats_dogs.pth", file_sha256(path))
    with torch.inference_mode():
        assert loaded.model(torch.zeros(1, 3, 32, 32)).shape == (1, 2)


def test_classification_pytorch_checkpoint_from_dataparallel_with_classes_file(tmp_path):
    state = make_state_dict(2, seed=1)
    path = tmp_path / "ep100-loss0.1.pth"
    torch.save(nn.DataParallel(make_module(state)).state_dict(), path)  # how classification-pytorch saves
    assert next(iter(torch.load(path, weights_only=True))).startswith("module.")
    classes_file = tmp_path / "cls_classes.txt"
    classes_file.write_text("cat\n\n  dog  \n")

    loaded = load_weights(path, classes_file=str(classes_file))

    assert_same_weights(loaded.model, state)
    assert loaded.classes == ("cat", "dog")


def test_checkpoint_nested_under_a_key_with_its_class_names(tmp_path):
    state = make_state_dict(2)
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 7, "model_state_dict": state, "classes": ["cat", "dog"]}, path)
    loaded = load_weights(path)
    assert_same_weights(loaded.model, state)
    assert loaded.classes == ("cat", "dog")


def test_safetensors_with_class_names_in_metadata(tmp_path):
    state = {k: v.half().contiguous() for k, v in make_state_dict(2).items()}  # safetensors stores dense tensors
    path = tmp_path / "model.safetensors"
    save_file(state, str(path), metadata={"classes": json.dumps(["cat", "dog"])})
    loaded = load_weights(path)
    assert_same_weights(loaded.model, state)  # fp16 in the file, fp32 in the model
    assert loaded.classes == ("cat", "dog")


def test_thousand_way_checkpoint_uses_the_imagenet_mapping(tmp_path):
    path = tmp_path / "imagenet_finetune.pth"
    torch.save(make_state_dict(1000), path)
    loaded = load_weights(path, classes=("ignored", "names", "here"))
    assert (loaded.head, loaded.classes) == ("imagenet", ("cat", "dog"))
    assert loaded.weights_id == "file:imagenet_finetune.pth"


def test_head_that_does_not_fit_the_class_names_fails_with_both_counts(tmp_path):
    path = tmp_path / "three.pth"
    torch.save(make_state_dict(3), path)
    with pytest.raises(WeightsError, match=r"3-way head \(classifier\.6\.weight \(3, 4096\)\).*2 classes"):
        load_weights(path, classes=("cat", "dog"))
    with pytest.raises(WeightsError, match="--classes"):
        load_weights(path)


def test_class_names_that_disagree_fail(tmp_path):
    path = tmp_path / "named.pth"
    torch.save({"state_dict": make_state_dict(2), "class_names": ["cat", "dog"]}, path)
    with pytest.raises(WeightsError, match=r"the checkpoint \(cat, dog\) differ from --classes \(dog, cat\)"):
        load_weights(path, classes=("dog", "cat"))


def test_a_state_dict_that_is_not_vgg16_names_the_keys(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(WeightsError) as e:
        load_weights(path, classes=("cat", "dog"))
    message = str(e.value)
    assert "not a torchvision VGG16" in message and "\n" not in message
    assert "features.0.weight (64, 3, 3, 3)" in message and "conv1.weight (64, 3, 7, 7)" in message

    state = make_state_dict(2)
    state["features.0.weight"] = torch.zeros(64, 1, 3, 3)  # a grayscale first conv
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"features\.0\.weight expected \(64, 3, 3, 3\) got \(64, 1, 3, 3\)"):
        load_weights(path, classes=("cat", "dog"))


def test_a_pickled_model_is_not_a_plain_state_dict(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save(nn.Linear(2, 2), path)  # torch.save(model) instead of torch.save(model.state_dict())
    with pytest.raises(WeightsError, match=r"not a plain state dict.*torch\.nn\.modules\.linear\.Linear"):
        load_weights(path)


@pytest.mark.parametrize("kind", ["whole model", "code", "plain pickle", "text"])
def test_a_refused_checkpoint_says_to_re_save_the_state_dict_never_to_load_it_unsafely(tmp_path, kind):
    path = tmp_path / "model.pth"
    write_refused(path, kind)
    with pytest.raises(WeightsError) as e:
        load_weights(path)
    assert_no_unsafe_advice(str(e.value))
    assert str(path) in str(e.value) and "torch.save(model.state_dict(), path)" in str(e.value)


@pytest.mark.parametrize("content", [None, b"", b"\x00not a checkpoint" * 10])
def test_missing_empty_or_garbled_files_fail(tmp_path, content):
    path = tmp_path / "weights.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match="weights.pth"):
        load_weights(path)


def test_missing_classes_file_fails(tmp_path):
    path = tmp_path / "two.pth"
    torch.save(make_state_dict(2), path)
    with pytest.raises(WeightsError, match="classes file .*nope.txt"):
        load_weights(path, classes_file=str(tmp_path / "nope.txt"))
