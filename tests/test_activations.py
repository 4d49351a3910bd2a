"""Channel means and maxima from the hooks, checked against torchvision's feature extractor on the same batch."""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import pytest
import torch
from torch import nn

from analysis.config import LAYER_NAMES
from analysis.model.activations import ChannelReducer
from analysis.model.vgg16 import CONV_INDICES, layer_channels, make_vgg16, relu_modules
from tests.small_runs import trace_maps

SUBSET = ["conv1_2", "conv3_3", "conv5_3"]


@pytest.fixture(scope="module")
def model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return make_vgg16(2).eval()


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))  # (B, 3, H, W)


def reference(model: nn.Module, x: torch.Tensor, layers) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Post-ReLU maps of the traced copy (tests/small_runs.py), reduced in float64."""
    maps = trace_maps(model, x, layers)  # name -> (B, C, H, W)
    return {n: (m.double().mean(dim=(2, 3)), m.double().amax(dim=(2, 3))) for n, m in maps.items()}


def assert_matches(got, expected, rtol=1e-5):
    assert list(got) == list(expected)
    for name, (means, maxes, peaks) in got.items():
        assert peaks is None  # not asked for
        assert means.dtype == maxes.dtype == torch.float32, name
        torch.testing.assert_close(means.double(), expected[name][0], rtol=rtol, atol=1e-9, msg=name)
        torch.testing.assert_close(maxes.double(), expected[name][1], rtol=rtol, atol=1e-9, msg=name)


def assert_no_hooks(model: nn.Module) -> None:
    assert all(not m._forward_hooks for m in relu_modules(model).values())


def test_means_and_maxima_of_all_layers_match_the_feature_extractor(model, batch):
    with ChannelReducer(model, LAYER_NAMES) as reducer, torch.inference_mode():
        model(batch)
        got = reducer.take()
    assert_no_hooks(model)
    assert [tuple(got[n][0].shape) for n in LAYER_NAMES] == [(2, c) for c in layer_channels(model).values()]
    assert all(got[n][0].max() > 0 for n in LAYER_NAMES)  # live activations, not an all-zero comparison
    assert_matches(got, reference(model, batch, LAYER_NAMES))


def test_a_subset_of_layers_and_take_clears_the_store(model, batch):
    with ChannelReducer(model, SUBSET) as reducer, torch.inference_mode():
        model(batch[:1])
        first = reducer.take()
        with pytest.raises(RuntimeError, match="no forward pass recorded"):
            reducer.take()
        model(batch)
        second = reducer.take()
    assert list(first) == SUBSET and first["conv5_3"][0].shape == (1, 512)
    assert_matches(second, reference(model, batch, SUBSET))


def test_channels_last_input_and_model(model, batch):
    seen = []
    probe = relu_modules(model)["conv3_3"].register_forward_hook(
        lambda m, i, out: seen.append(out.is_contiguous(memory_format=torch.channels_last))
    )
    model.to(memory_format=torch.channels_last)
    x = batch.contiguous(memory_format=torch.channels_last)
    try:
        with ChannelReducer(model, SUBSET) as reducer, torch.inference_mode():
            model(x)
            got = reducer.take()
        # same layout for the reference: channels_last convs sum in another order (~2e-4 relative by conv5_3)
        expected = reference(model, x, SUBSET)
    finally:
        probe.remove()
        model.to(memory_format=torch.contiguous_format)
    assert seen == [True]  # the hooks really saw channels_last maps
    assert_matches(got, expected)


def test_bf16_autocast_means_are_accumulated_in_float32(model, batch):
    layers = ["conv1_1", "conv2_2"]
    with ChannelReducer(model, layers) as reducer, torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        model(batch)
        got = reducer.take()
    with torch.autocast("cpu", torch.bfloat16):
        expected = reference(model, batch, layers)  # the same bf16 maps, reduced in float64
    # a bf16 accumulation of 2304 / 576 values would be off by ~1e-2
    assert_matches(got, expected, rtol=1e-5)


def test_with_autograd_on_the_results_hold_no_graph(model, batch):
    with ChannelReducer(model, ["conv5_3"]) as reducer:
        model(batch[:1])
        means, maxes, _ = reducer.take()["conv5_3"]
    assert means.grad_fn is None and maxes.grad_fn is None  # a graph would keep the feature maps alive


def test_hooks_are_removed_when_the_block_raises(model, batch):
    with pytest.raises(ZeroDivisionError):
        with ChannelReducer(model, LAYER_NAMES):
            assert all(m._forward_hooks for m in relu_modules(model).values())
            raise ZeroDivisionError
    assert_no_hooks(model)


def test_an_unknown_layer_lists_the_valid_names(model):
    with pytest.raises(ValueError, match=r"unknown layer 'conv6_1'; valid layers: conv1_1, conv1_2, .*conv5_3"):
        ChannelReducer(model, ["conv5_3", "conv6_1"])


@pytest.mark.parametrize("chunk_bytes", [64, 1000, 1 << 30])
def test_sliced_mean_max_equals_numpy_on_any_values(monkeypatch, chunk_bytes):
    """The cache-sized slices (CPU, channels_last) give numpy's mean and max, negatives and uneven slices included."""
    import analysis.model.map_reductions as acts

    monkeypatch.setattr(acts, "_CHUNK_BYTES", chunk_bytes)
    x = torch.randn(3, 5, 7, 9, generator=torch.Generator().manual_seed(0)) - 0.5
    ref = x.double().numpy()
    for t in (x, x.contiguous(memory_format=torch.channels_last)):
        means, maxes, _ = acts.compute_mean_max(t)
        assert means.dtype == maxes.dtype == torch.float32 and means.shape == (3, 5)
        np.testing.assert_allclose(means.numpy(), ref.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(maxes.numpy(), ref.max(axis=(2, 3)).astype(np.float32))


@pytest.mark.parametrize("chunk_bytes", [64, 1000, 1 << 30])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_mean_alone_equals_numpy_in_every_dtype_and_slicing(monkeypatch, chunk_bytes, dtype):
    """compute_mean (the pre-pool layers' mean): float32 means of the map's own values, whether it reduces the
    whole map (float32, other layouts) or sums cache-sized slices (a bf16/fp16 channels_last map on the CPU)."""
    import analysis.model.map_reductions as acts

    monkeypatch.setattr(acts, "_CHUNK_BYTES", chunk_bytes)
    x = (torch.randn(3, 5, 7, 9, generator=torch.Generator().manual_seed(1)) - 0.5).to(dtype)
    ref = x.double().numpy().mean(axis=(2, 3))
    for t in (x, x.contiguous(memory_format=torch.channels_last)):
        means = acts.compute_mean(t)
        assert means.dtype == torch.float32 and means.shape == (3, 5)
        np.testing.assert_allclose(means.numpy(), ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(means.numpy(), acts.compute_mean_max(t)[0].numpy(), rtol=1e-5, atol=1e-6)


POOLED = ["conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"]  # each followed by a 2x2 max pool


@pytest.mark.parametrize("hw", [(64, 64), (50, 50), (36, 44), (64, 50)])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_maxima_of_pooled_layers_are_the_maps_own_bit_for_bit(model, hw, precision):
    """Even sides: the max comes from the pool's output; odd sides (50 -> 25 at conv2_2, 36 -> 9 at conv3_3,
    48/64 -> 3/4 ...): from the map. Either way it is the map's max exactly, and the means are untouched."""
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(2))
    pooled_calls = []
    for name in POOLED:
        pool = model.features[CONV_INDICES[name] + 2]
        assert isinstance(pool, nn.MaxPool2d)
    autocast = torch.autocast("cpu", torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with ChannelReducer(model, LAYER_NAMES) as reducer, torch.inference_mode(), autocast:
        spy = [
            model.features[CONV_INDICES[n] + 2].register_forward_hook(lambda m, i, o, n=n: pooled_calls.append(n))
            for n in POOLED
        ]
        model(x)
        got = reducer.take()
    for h in spy:
        h.remove()
    with autocast:
        expected = reference(model, x, LAYER_NAMES)
    for name in LAYER_NAMES:
        np.testing.assert_array_equal(got[name][1].numpy(), expected[name][1].float().numpy(), err_msg=name)
        torch.testing.assert_close(got[name][0].double(), expected[name][0], rtol=1e-5, atol=1e-9, msg=name)
    assert pooled_calls == POOLED


def test_the_pool_of_an_odd_map_misses_part_of_it_so_the_map_is_reduced(model):
    """The control: at 36 px conv3_3's map is 9 x 9 and its pool sees only 8 x 8; the pool's max is wrong for some
    channel, and the reducer's is right."""
    x = torch.randn(2, 3, 36, 36, generator=torch.Generator().manual_seed(3))
    ref = reference(model, x, ["conv3_3"])["conv3_3"][1]
    features = copy.deepcopy(model.features[: CONV_INDICES["conv3_3"] + 3])
    with torch.inference_mode():
        pooled_max = features(x).amax(dim=(2, 3)).double()
    assert (pooled_max < ref).any()
    with ChannelReducer(model, ["conv3_3"]) as reducer, torch.inference_mode():
        model(x)
        np.testing.assert_array_equal(reducer.take()["conv3_3"][1].double().numpy(), ref.numpy())


def test_a_forward_cut_before_the_pool_is_refused(model, batch):
    with ChannelReducer(model, ["conv1_2"]) as reducer, torch.inference_mode():
        model.features[:4](batch)  # conv1_1, relu, conv1_2, relu: the pool never runs
        with pytest.raises(RuntimeError, match="max pool"):
            reducer.take()
