"""Feature maps recorded by hooks against a second way of computing them (torchvision's FX feature extractor)."""

import pytest
import torch
from torchvision.models.feature_extraction import create_feature_extractor

from analysis.config import ConfigError
from analysis.model.featuremaps import FeatureMapRecorder
from analysis.model.vgg16 import CONV_INDICES, make_vgg16

LAYERS = ("conv1_1", "conv2_2", "conv5_3")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return make_vgg16(1000).eval()


def _hook_count(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_maps_equal_feature_extractor(model):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))  # (B, 3, H, W)
    with torch.inference_mode(), FeatureMapRecorder(model, LAYERS) as rec:
        model(x)
        maps = rec.take()
    # The FX extractor returns the ReLU node's output; its graph copies the model, so no hooks are involved.
    nodes = {f"features.{CONV_INDICES[name] + 1}": name for name in LAYERS}
    extractor = create_feature_extractor(model, return_nodes=nodes).eval()
    with torch.inference_mode():
        expected = extractor(x.clone())
    for name in LAYERS:
        got = maps[name]
        assert got.dtype == torch.float32 and got.device.type == "cpu"
        assert got.shape == expected[name].shape
        torch.testing.assert_close(got, expected[name], rtol=1e-5, atol=1e-6)
    assert maps["conv1_1"].shape == (2, 64, 64, 64) and maps["conv5_3"].shape == (2, 512, 4, 4)
    assert _hook_count(model) == 0


def test_maps_are_copies_not_the_inplace_buffer(model):
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode(), FeatureMapRecorder(model, ("conv1_1",)) as rec:
        model(x)
        first = rec.take()["conv1_1"]
        kept = first.clone()
        model(torch.zeros_like(x))  # a second pass reuses nothing we hold
        rec.take()
    torch.testing.assert_close(first, kept)
    assert (first >= 0).all()  # post-ReLU


def test_hooks_removed_on_error(model):
    with pytest.raises(RuntimeError, match="boom"):
        with FeatureMapRecorder(model, LAYERS):
            assert _hook_count(model) == len(LAYERS)
            raise RuntimeError("boom")
    assert _hook_count(model) == 0


def test_take_without_forward_and_unknown_layer(model):
    with FeatureMapRecorder(model, ("conv1_1",)) as rec, pytest.raises(RuntimeError, match="no feature map"):
        rec.take()
    with pytest.raises(ConfigError, match="valid layers: conv1_1, conv1_2"):
        FeatureMapRecorder(model, ("conv6_1",))
