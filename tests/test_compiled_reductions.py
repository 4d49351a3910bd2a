"""The compiled reductions (analysis/model/compiled.py) against numpy on maps with planted ties, their fallback to
the eager ones, the auto rule, and an extract run with them against one without. One tiny size each: compiling
takes seconds per shape on 2 cores."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.config import ConfigError
from analysis.model import compiled
from analysis.model.activations import ChannelReducer
from analysis.model.compiled import AUTO_MIN_IMAGES, CompiledReductions, choose_reductions
from analysis.model.map_reductions import EAGER
from analysis.model.vgg16 import make_vgg16
from analysis.store import contract
from tests.helpers import make_flat
from tests.small_runs import run, trace_maps


def tied_maps(batch: int, dtype: torch.dtype) -> torch.Tensor:
    """(batch, 6, 5, 7) post-ReLU-like maps, channels_last: channel 0 all zeros, channel 1 its max at three places
    (the first at row 1, a later row and the row's end), the rest rounded to a few levels (bf16: ties everywhere)."""
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 6, 5, 7, generator=g).relu().mul(4).round().div(4)
    x[:, 0] = 0
    x[:, 1] = 0.5
    x[:, 1, 1, 4] = x[:, 1, 3, 0] = x[:, 1, 4, 6] = 9.0
    return x.to(dtype).contiguous(memory_format=torch.channels_last)


def numpy_reductions(x: torch.Tensor):
    a = x.float().numpy().reshape(*x.shape[:2], -1)
    return a.mean(axis=2), a.max(axis=2), a.argmax(axis=2)  # numpy's argmax: the first maximum


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_reductions_equal_numpy_with_ties_at_any_batch_size(dtype):
    reductions = CompiledReductions()
    for batch in (2, 5, 1):  # 5: the symbolic batch; 1: the eager reductions
        x = tied_maps(batch, dtype)
        mean, maxes, peaks = numpy_reductions(x)
        r = reductions.mean_max(x, peaks=True)
        np.testing.assert_array_equal(r.peak.numpy(), peaks)
        np.testing.assert_array_equal(r.max.numpy(), maxes)
        np.testing.assert_allclose(r.mean.numpy(), mean, rtol=1e-6, atol=1e-7)
        assert r.peak[:, 1].tolist() == [1 * 7 + 4] * batch  # the first of the three planted maxima
        assert r.peak[:, 0].tolist() == [0] * batch  # an all-zero channel: the first position
        np.testing.assert_allclose(reductions.mean(x).numpy(), mean, rtol=1e-6, atol=1e-7)
        top, where = reductions.max_peak(x, peaks=True)
        np.testing.assert_array_equal(where.numpy(), peaks)
        np.testing.assert_array_equal(top.numpy(), maxes)
        assert reductions.max_peak(x, peaks=False)[1] is None
        assert reductions.mean_max(x, peaks=False).peak is None
    assert reductions.failure is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_contributions_equal_numpy(dtype):
    """The attribution's sum over space of map x gradient, in one pass: against numpy in float64."""
    reductions = CompiledReductions()
    for batch in (3, 4):
        a, g = (
            tied_maps(batch, dtype),
            torch.randn(batch, 6, 5, 7).to(dtype).contiguous(memory_format=torch.channels_last),
        )
        expected = (a.double().numpy() * g.double().numpy()).sum(axis=(2, 3))
        np.testing.assert_allclose(reductions.contribution(a, g).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert reductions.failure is None


def test_the_fused_pool_gives_the_pool_bit_for_bit_and_every_pre_pool_layers_values():
    """With the compiled reductions the max pools after conv1_2 and conv2_2 run as one pass that also sums the map:
    the logits are those of the plain model bit for bit, and each layer's mean, max and peak (on the pooled grid)
    are numpy's on the maps of a traced copy (torchvision's feature extractor), in bf16 where ties are many."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = make_vgg16(2).eval().to(memory_format=torch.channels_last)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)).contiguous(
        memory_format=torch.channels_last
    )
    layers = ["conv1_2", "conv2_2"]
    reductions, fused_shapes = CompiledReductions(), []
    pool_mean = reductions.pool_mean
    reductions.pool_mean = lambda t: fused_shapes.append(tuple(t.shape)) or pool_mean(t)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = model(x)
        maps = trace_maps(model, x, layers)
        with ChannelReducer(model, layers, peaks=True, reductions=reductions) as reducer:
            fused = model(x)
            got = reducer.take()
        assert "forward" not in vars(model.features[4])  # the pool's own forward is back after the block
    assert fused_shapes == [(3, 64, 32, 32), (3, 128, 16, 16)] and reductions.failure is None
    assert torch.equal(fused, plain)
    for name in layers:
        m = maps[name].float().numpy()  # (B, C, H, W)
        b, c, h, w = m.shape
        pooled = m.reshape(b, c, h // 2, 2, w // 2, 2).max(axis=(3, 5)).reshape(b, c, -1)
        np.testing.assert_allclose(got[name].mean.numpy(), m.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got[name].max.numpy(), m.max(axis=(2, 3)))
        np.testing.assert_array_equal(got[name].peak.numpy(), pooled.argmax(axis=2))


def test_a_failing_compiled_reduction_falls_back_to_eager_once_and_says_so(monkeypatch, caplog):
    reductions = CompiledReductions()

    def broken(x):
        raise RuntimeError("InductorError: no working C++ compiler\nmore lines")

    monkeypatch.setitem(reductions._fns, "mean_max_peak", broken)
    x = tied_maps(3, torch.bfloat16)
    with caplog.at_level(logging.WARNING, logger="cnn_blackbox"):
        r = reductions.mean_max(x, peaks=True)
        again = reductions.mean(x)  # after a failure every reduction is eager, without trying again
    expected = EAGER.mean_max(x, peaks=True)
    assert (
        torch.equal(r.peak, expected.peak) and torch.equal(r.max, expected.max) and torch.equal(r.mean, expected.mean)
    )
    assert torch.equal(again, EAGER.mean(x))
    assert reductions.failure == "RuntimeError: InductorError: no working C++ compiler"
    assert [m for m in caplog.messages if "compiled reductions failed" in m] == [
        "compiled reductions failed (RuntimeError: InductorError: no working C++ compiler); the eager reductions run "
        "from here on"
    ]


def test_auto_compiles_only_where_it_pays_and_can(monkeypatch):
    cpu = torch.device("cpu")
    for precision in ("bf16", "fp32"):
        assert choose_reductions("auto", cpu, precision, AUTO_MIN_IMAGES - 1)[0] is EAGER
        assert choose_reductions("auto", cpu, precision, AUTO_MIN_IMAGES)[0].name == "compiled"
    assert choose_reductions("eager", cpu, "bf16", 10**9)[0] is EAGER
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)  # a machine without a C++ compiler
    chosen, why = choose_reductions("auto", cpu, "bf16", 10**9)
    assert chosen is EAGER and "C++ compiler" in why
    with pytest.raises(ConfigError, match="reductions: 'compiled' needs a C\\+\\+ compiler"):
        choose_reductions("compiled", cpu, "bf16", 10)


@pytest.mark.slow
def test_an_extract_with_compiled_reductions_stores_the_eager_runs_values(tmp_path):
    data = make_flat(tmp_path / "train", 6)
    flags = (
        "--weights",
        "random",
        "--layers",
        "conv1_1,conv5_3",
        "--batch-size",
        "3",
        "--attribution-layers",
        "conv5_3",
    )
    assert run(data, tmp_path / "eager", *flags, "--reductions", "eager") == 0
    assert run(data, tmp_path / "compiled", *flags, "--reductions", "compiled") == 0
    meta = json.loads((tmp_path / "compiled" / "run.json").read_text())
    assert meta["reductions"] == "compiled" and meta["timings"]["compile_seconds"] > 0
    assert json.loads((tmp_path / "eager" / "run.json").read_text())["reductions"] == "eager"
    tables = [(t, layer) for t in (contract.ACTIVATIONS, contract.ACTIVATIONS_MAX, contract.ACTIVATIONS_PEAK)
              for layer in ("conv1_1", "conv5_3")]  # fmt: skip
    tables += [(f"{contract.ATTRIBUTIONS}/{cls}", "conv5_3") for cls in ("cat", "dog")]
    for table, layer in tables:
        a = pd.read_parquet(tmp_path / "eager" / table / layer).set_index("image_id").sort_index()
        b = pd.read_parquet(tmp_path / "compiled" / table / layer).set_index("image_id").sort_index()
        assert len(a) == 6 and list(a.columns) == list(b.columns)
        if table in (contract.ACTIVATIONS_MAX, contract.ACTIVATIONS_PEAK):
            pd.testing.assert_frame_equal(a, b)
        else:  # sums in another order: float32 rounding
            np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=1e-5, atol=1e-6)
