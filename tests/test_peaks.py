"""Where each channel's maximum is (the activations_peak tables): the reducer's peaks against numpy's first argmax
of the whole maps (torchvision's feature extractor), a planted bright spot, the sliced CPU path against the plain
one with many ties, and the peak grids against the shapes torch gives on the meta device."""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import pytest
import torch
from torch import nn

import analysis.model.map_reductions as acts
from analysis.config import LAYER_NAMES
from analysis.model.activations import ChannelReducer, compute_map_sizes, compute_peak_grids
from analysis.model.vgg16 import CONV_INDICES, make_vgg16, relu_modules
from tests.small_runs import trace_maps

POOLED = ["conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"]  # each followed by a 2x2 max pool


@pytest.fixture(scope="module")
def model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return make_vgg16(2).eval()


def whole_maps(model: nn.Module, x: torch.Tensor, layers) -> dict[str, np.ndarray]:
    """Post-ReLU maps (B, C, H, W) of the traced copy (tests/small_runs.py), as float32."""
    return {n: m.float().numpy() for n, m in trace_maps(model, x, layers).items()}


def first_argmax(maps: np.ndarray) -> np.ndarray:
    """(B, C, h, w) -> (B, C) flat index of the maximum; numpy's argmax returns the first one."""
    return maps.reshape(*maps.shape[:2], -1).argmax(axis=2)


def pool2(maps: np.ndarray) -> np.ndarray:
    """The 2x2, stride-2 max pool in numpy (floor: an odd last row or column dropped)."""
    b, c, h, w = maps.shape
    return maps[:, :, : h // 2 * 2, : w // 2 * 2].reshape(b, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


@pytest.mark.parametrize("size", [64, 50])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("path", ["plain", "sliced", "searched"])
def test_every_layers_peaks_are_the_first_argmax_of_its_map(model, monkeypatch, size, precision, path):
    """Every layer, both precisions (bf16: many ties, the first position wins), the plain reductions and the sliced
    CPU path of a channels_last map (its peaks from torch.max on a map of few slices, else from the sliced search;
    "searched": the search on every map). A pooled layer's peak is on the pool's grid, and its cell holds the map's
    max."""
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    net = copy.deepcopy(model)
    if path != "plain":
        monkeypatch.setattr(acts, "_CHUNK_BYTES", 4096)  # a few rows per slice at every layer
        monkeypatch.setattr(acts, "_SEARCH_SLICES", 1 if path == "searched" else acts._SEARCH_SLICES)
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast("cpu", torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with ChannelReducer(net, LAYER_NAMES, peaks=True) as reducer, torch.inference_mode(), autocast:
        net(x)
        got = reducer.take()
    with autocast:
        maps = whole_maps(net, x, LAYER_NAMES)
    grids = compute_peak_grids(net, LAYER_NAMES, size)
    for name in LAYER_NAMES:
        m, (h, w) = maps[name], grids[name]
        on_pool = name in POOLED and m.shape[2] % 2 == 0 and m.shape[3] % 2 == 0
        grid_map = pool2(m) if on_pool else m
        assert grid_map.shape[2:] == (h, w), name
        peaks = got[name].peak
        assert peaks.dtype == torch.int64 and peaks.shape == m.shape[:2]
        np.testing.assert_array_equal(peaks.numpy(), first_argmax(grid_map), err_msg=name)
        np.testing.assert_array_equal(got[name].max.numpy(), m.max(axis=(2, 3)), err_msg=name)
        if on_pool:
            y, xs = np.divmod(peaks.numpy(), w)
            for b, c in np.ndindex(*m.shape[:2]):
                cell = m[b, c, 2 * y[b, c] : 2 * y[b, c] + 2, 2 * xs[b, c] : 2 * xs[b, c] + 2]
                assert cell.max() == m[b, c].max(), (name, b, c)
    if precision == "bf16":  # the tie rule was exercised: some channel has its max in more than one place
        m = maps["conv1_1"]
        assert ((m == m.max(axis=(2, 3), keepdims=True)) & (m > 0)).reshape(*m.shape[:2], -1).sum(axis=2).max() > 1


def test_a_bright_spot_that_moves_moves_the_conv1_1_peak():
    """A planted signal: conv1_1's channel 0 sums its 3 x 3 x 3 window (weights 1, bias 0); on a zero image with a
    3 x 3 block of ones, it peaks exactly at the block's centre, wherever the block is."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        net = make_vgg16(2).eval()
    with torch.no_grad():
        net.features[0].weight[0] = 1.0
        net.features[0].bias[0] = 0.0
    centres = [(5, 7), (20, 3), (30, 30), (1, 28)]
    x = torch.zeros(len(centres), 3, 32, 32)
    for i, (y, xc) in enumerate(centres):
        x[i, :, y - 1 : y + 2, xc - 1 : xc + 2] = 1.0
    with ChannelReducer(net, ["conv1_1"], peaks=True) as reducer, torch.inference_mode():
        net(x)
        peaks = reducer.take()["conv1_1"].peak[:, 0]
    assert peaks.tolist() == [y * 32 + xc for y, xc in centres]


@pytest.mark.parametrize("chunk_bytes", [64, 250, 1000, 1 << 30])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_sliced_and_plain_peaks_agree_with_numpy_on_ties(monkeypatch, chunk_bytes, dtype):
    """Rounded values (many equal maxima in a channel): the sliced search (channels_last CPU, on maps of any number
    of slices here), the plain one (contiguous) and compute_max_peak all give numpy's first argmax; negatives and
    uneven slices included."""
    monkeypatch.setattr(acts, "_CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(acts, "_SEARCH_SLICES", 1)
    x = (torch.randn(3, 5, 7, 9, generator=torch.Generator().manual_seed(4)) * 2).round().to(dtype)
    want = first_argmax(x.float().numpy())
    assert (x.flatten(2) == x.flatten(2).amax(dim=2, keepdim=True)).sum(dim=2).max() > 1  # ties are there
    for t in (x, x.contiguous(memory_format=torch.channels_last)):
        r = acts.compute_mean_max(t, peaks=True)
        np.testing.assert_array_equal(r.peak.numpy(), want)
        np.testing.assert_array_equal(r.max.numpy(), x.float().amax(dim=(2, 3)).numpy())
        maxes, peaks = acts.compute_max_peak(t)
        np.testing.assert_array_equal(peaks.numpy(), want)
        assert maxes.dtype == dtype
        assert acts.compute_mean_max(t).peak is None  # not asked for: no search


@pytest.mark.parametrize("size", [32, 36, 50, 64, 224, 301])
def test_peak_grids_are_the_shapes_a_forward_gives(size):
    """The arithmetic (known before any image) against torch's own shape inference on the meta device: each
    layer's map, and the pool's output for the pooled layers with even sides."""
    with torch.device("meta"):
        net = make_vgg16(2)
    shapes: dict[str, tuple[int, int]] = {}
    handles = [
        m.register_forward_hook(lambda m, i, o, n=n: shapes.update({n: tuple(o.shape[2:])}))
        for n, m in relu_modules(net).items()
    ]
    pooled: dict[str, tuple[int, int]] = {}
    handles += [
        net.features[CONV_INDICES[n] + 2].register_forward_hook(lambda m, i, o, n=n: pooled.update({n: o.shape[2:]}))
        for n in POOLED
    ]
    net.features(torch.empty(1, 3, size, size, device="meta"))
    for h in handles:
        h.remove()
    assert compute_map_sizes(net, size) == shapes
    grids = compute_peak_grids(net, LAYER_NAMES, size)
    for name in LAYER_NAMES:
        h, w = shapes[name]
        want = tuple(pooled[name]) if name in POOLED and h % 2 == 0 and w % 2 == 0 else (h, w)
        assert grids[name] == want, name
    assert size != 224 or (grids["conv5_3"], compute_map_sizes(net, size)["conv5_3"]) == ((7, 7), (14, 14))
