"""The extract's peak and Grad-CAM tables, end to end: a run of three pictures with a planted bright spot, its
activations_peak tables against numpy's argmax of the maps of an independent forward, its gradcam tables against
torch.autograd.grad on the class logit (the gradient-mean weights checked by finite differences), the metadata
that says their grids; and the synthetic run's tables, which the report's tests read."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from torch import nn

from analysis.data.decoding import decode_image
from analysis.data.preprocessing import make_preprocessing
from analysis.model.vgg16 import CONV_INDICES, make_vgg16
from analysis.store import contract
from analysis.store.synthetic import SyntheticRun, write_synthetic_run
from tests.small_runs import run

LAYERS = ["conv1_1", "conv1_2", "conv3_3", "conv5_3"]
SPOTS = {"cat.0.png": (10, 12), "dog.1.png": (40, 25), "cat.2.png": (57, 50)}  # the white 3 x 3 block's centre
POOLED = {"conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"}  # each followed by a 2 x 2 max pool
GRIDS = {"conv1_1": [64, 64], "conv1_2": [32, 32], "conv3_3": [8, 8], "conv5_3": [2, 2]}  # at 64 px


def planted_checkpoint(path):
    """A 2-way VGG16 whose conv1_1 channel 0 sums its 3 x 3 x 3 window (weights 1, bias 0): on a black picture
    (-1 after classification-pytorch's x / 127.5 - 1) it is positive only at a white block, largest at its centre."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = make_vgg16(2)
    state = model.state_dict()
    state["features.0.weight"][0] = 1.0
    state["features.0.bias"][0] = 0.0
    torch.save(state, path)
    model.load_state_dict(state)
    return model


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    """(out, model, x (B, 3, 64, 64) as the run saw it, image ids in x's order)."""
    root = tmp_path_factory.mktemp("planted")
    for name, (y, x) in SPOTS.items():
        pixels = np.zeros((64, 64, 3), np.uint8)
        pixels[y - 1 : y + 2, x - 1 : x + 2] = 255
        (root / "train").mkdir(exist_ok=True)
        Image.fromarray(pixels).save(root / "train" / name)
    model = planted_checkpoint(root / "vgg.pth")
    flags = ["--weights", str(root / "vgg.pth"), "--classes", "cat,dog", "--preprocess", "classification-pytorch"]
    flags += ["--layers", ",".join(LAYERS), "--attribution-layers", "conv4_3,conv5_3", "--unit-size", "2"]
    assert run(root / "train", root / "out", *flags) == 0
    prep = make_preprocessing("classification-pytorch", 64)
    ids = sorted(SPOTS)
    x = torch.stack([prep.transform(decode_image((root / "train" / i).read_bytes(), 10**8).image) for i in ids])
    model = copy.deepcopy(model).eval().requires_grad_(False)
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False  # the maps below are kept whole
    return root / "out", model, x, ids


def read_table(folder, ids) -> pd.DataFrame:
    return pd.read_parquet(folder).set_index(contract.IMAGE_ID).loc[ids]


@pytest.mark.slow
def test_the_planted_spot_is_where_conv1_1_peaks_and_moves_with_it(planted_run):
    out, _, _, ids = planted_run
    peaks = read_table(contract.activation_dir(out, "conv1_1", contract.STAT_PEAK), ids)
    assert peaks[contract.channel_column(0)].tolist() == [SPOTS[i][0] * 64 + SPOTS[i][1] for i in ids]


@pytest.mark.slow
def test_every_layers_stored_peaks_are_the_argmax_of_an_independent_forward(planted_run):
    """The run's forward is channels_last and batched, this one not: values may differ in the last bit, so a peak
    must be a maximum of the reference map, and the argmax itself wherever the two largest cells differ clearly."""
    out, model, x, ids = planted_run
    meta = json.loads((out / contract.RUN_JSON).read_text())
    assert meta["peak_grid"] == GRIDS
    with torch.no_grad():
        y, maps = x, {}
        for i, module in enumerate(model.features[: CONV_INDICES[LAYERS[-1]] + 3]):
            y = module(y)
            maps.update({name: y.numpy() for name in LAYERS if i == CONV_INDICES[name] + (2 if name in POOLED else 1)})
    for name in LAYERS:  # maps[name]: the ReLU's output, or for the pooled layers the 2 x 2 max pool's after it
        folder = contract.activation_dir(out, name, contract.STAT_PEAK)
        assert pq.read_schema(next(folder.iterdir())).field(1).type == "uint16"
        got = read_table(folder, ids).to_numpy(np.int64)  # (B, C)
        grid = maps[name].reshape(len(ids), maps[name].shape[1], -1)  # (B, C, h * w)
        assert list(maps[name].shape[2:]) == GRIDS[name]
        at_peak = np.take_along_axis(grid, got[..., None], axis=2)[..., 0]
        top2 = np.sort(grid, axis=2)[..., -2:]
        scale = grid.max()
        np.testing.assert_allclose(at_peak, top2[..., 1], atol=1e-5 * scale, err_msg=name)
        clear = top2[..., 1] - top2[..., 0] > 1e-4 * scale
        assert clear.mean() > 0.5, name
        np.testing.assert_array_equal(got[clear], grid.argmax(axis=2)[clear], err_msg=name)


@pytest.mark.slow
def test_stored_gradcams_equal_autograd_on_the_logit(planted_run):
    out, model, x, ids = planted_run
    meta = json.loads((out / contract.RUN_JSON).read_text())
    assert meta["gradcam"] == {"layer": "conv5_3", "grid": [4, 4]}
    split = CONV_INDICES["conv5_3"] + 2  # features[:split] ends with conv5_3's ReLU
    model = model.double()

    def upper(a: torch.Tensor) -> torch.Tensor:  # conv5_3's map -> the 2 class logits
        return model.classifier(torch.flatten(model.avgpool(model.features[split:](a)), 1))

    with torch.no_grad():
        a = model.features[:split](x.double())  # (B, 512, 4, 4)
    a.requires_grad_(True)
    logits = upper(a)
    for k, cls in enumerate(("cat", "dog")):
        (g,) = torch.autograd.grad(logits[:, k].sum(), a, retain_graph=True)
        weights = g.mean(dim=(2, 3))  # (B, 512)
        want = torch.relu((weights[..., None, None] * a).sum(dim=1)).detach().reshape(len(ids), -1).numpy()
        got = read_table(contract.gradcam_dir(out, cls, "conv5_3"), ids)
        assert list(got.columns) == [contract.gradcam_column(j) for j in range(16)]
        assert (want > 0).any() and (got.to_numpy() >= 0).all()
        np.testing.assert_allclose(got.to_numpy(np.float64), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
        # The weights without autograd: moving a whole channel by eps moves the logit by eps * sum_yx(d logit/dA_c)
        # (the network above is piecewise linear), i.e. 16 eps times the channel's weight.
        channels = weights.abs().argmax(dim=1)  # (B,) the strongest channel of each image
        bump = torch.zeros_like(a).detach()
        bump[torch.arange(len(ids)), channels] = 1e-6
        with torch.no_grad():
            slope = (upper(a + bump) - upper(a - bump))[:, k] / 2e-6
        np.testing.assert_allclose(slope, 16 * weights[torch.arange(len(ids)), channels].detach(), rtol=1e-5)


def test_the_synthetic_run_has_peaks_and_gradcams_in_its_grids(tmp_path):
    out = write_synthetic_run(
        tmp_path / "run", SyntheticRun(n_images=30, layers={"conv1_2": 4, "conv5_3": 6}, n_errors=2, unit_size=8)
    )
    meta = json.loads((out / contract.RUN_JSON).read_text())
    assert meta["peak_grid"] == {"conv1_2": [32, 32], "conv5_3": [2, 2]}
    assert meta["gradcam"] == {"layer": "conv5_3", "grid": [4, 4]}
    means = pd.read_parquet(contract.activation_dir(out, "conv5_3"))
    for layer, (h, w) in meta["peak_grid"].items():
        peaks = pd.read_parquet(contract.activation_dir(out, layer, contract.STAT_PEAK))
        assert peaks[contract.IMAGE_ID].tolist() == means[contract.IMAGE_ID].tolist()
        values = peaks.drop(columns=contract.IMAGE_ID).to_numpy()
        assert values.dtype == np.uint16 and values.min() >= 0 and values.max() < h * w
    for cls in ("cat", "dog"):
        cams = pd.read_parquet(contract.gradcam_dir(out, cls, "conv5_3"))
        assert cams[contract.IMAGE_ID].tolist() == means[contract.IMAGE_ID].tolist()
        values = cams.drop(columns=contract.IMAGE_ID).to_numpy()
        assert values.shape == (28, 16) and values.dtype == np.float32
        assert (values >= 0).all() and (values == 0).any() and (values.max(axis=1) > 0).mean() > 0.9
