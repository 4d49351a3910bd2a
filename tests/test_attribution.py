"""Channel contributions (gradient x activation) and Grad-CAM: exact invariants on stored tables, captum as an
independent reference, and what the run identity and `none` do."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from captum.attr import LayerGradCam, LayerGradientXActivation
from torch import nn

from analysis.data.decoding import decode_image
from analysis.data.preprocessing import make_preprocessing
from analysis.model.attribution import Attributor
from analysis.model.heads import compute_class_logits
from analysis.model.vgg16 import load_model, make_vgg16, relu_modules
from tests.helpers import make_flat
from tests.small_runs import run

LAYERS = ["conv3_3", "conv4_3", "conv5_3"]


def zero_bias_checkpoint(path, seed=0):
    """A 2-way VGG16 with every bias zero: positively homogeneous, so contributions sum to the logit."""
    torch.manual_seed(seed)
    model = make_vgg16(2)
    state = {k: (torch.zeros_like(v) if k.endswith("bias") else v) for k, v in model.state_dict().items()}
    torch.save(state, path)
    return path


def read_contributions(out, cls, layer) -> pd.DataFrame:
    return pd.read_parquet(out / "attributions" / cls / layer).set_index("image_id")


@pytest.mark.slow
def test_contributions_sum_to_the_logit_when_the_network_is_homogeneous(tmp_path):
    data = make_flat(tmp_path / "train", 5)
    ckpt = zero_bias_checkpoint(tmp_path / "vgg.pth")
    out = tmp_path / "out"
    assert (
        run(
            data,
            out,
            "--weights",
            str(ckpt),
            "--classes",
            "cat,dog",
            "--layers",
            "conv5_3",
            "--attribution-layers",
            ",".join(LAYERS),
        )
        == 0
    )
    preds = pd.read_parquet(out / "predictions").set_index("image_id")
    for cls in ("cat", "dog"):
        logits = preds[f"logit_{cls}"].to_numpy(np.float64)
        assert np.abs(logits).max() > 0
        for layer in LAYERS:
            contrib = read_contributions(out, cls, layer).loc[preds.index]
            assert contrib.shape[1] == {"conv3_3": 256}.get(layer, 512)
            np.testing.assert_allclose(
                contrib.to_numpy(np.float64).sum(axis=1),
                logits,
                rtol=1e-4,
                atol=1e-5 * np.abs(logits).max(),
                err_msg=f"{cls} {layer}",
            )
    meta = json.loads((out / "run.json").read_text())
    assert meta["attribution"]["layers"] == LAYERS and meta["attribution"]["classes"] == ["cat", "dog"]


def _captum_reference(out, data, layer):
    """captum's LayerGradientXActivation over the same images, on a copy of the model with out-of-place ReLUs."""
    loaded = load_model(
        "random",
        classes=None,
        classes_file=None,
        class_map=(("cat", 281, 285), ("dog", 151, 268)),
        download=False,
        seed=0,
    )
    model = copy.deepcopy(loaded.model).eval()
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    prep = make_preprocessing("imagenet", 64)
    ids = sorted(p.name for p in data.glob("*.jpg"))
    x = torch.stack([prep.transform(decode_image((data / i).read_bytes(), 10**8).image) for i in ids])
    forward = lambda t: compute_class_logits(model(t), loaded)  # noqa: E731
    module = relu_modules(model)[layer]
    return ids, x, model, forward, module


@pytest.mark.slow
def test_stored_contributions_equal_captum(tmp_path):
    data = make_flat(tmp_path / "train", 4)
    out = tmp_path / "out"
    assert run(data, out, "--weights", "random", "--layers", "conv5_3", "--attribution-layers", "conv4_3,conv5_3") == 0
    for layer in ("conv4_3", "conv5_3"):
        ids, x, model, forward, module = _captum_reference(out, data, layer)
        for k, cls in enumerate(("cat", "dog")):
            want = LayerGradientXActivation(forward, module).attribute(x, target=k).sum(dim=(2, 3))  # (B, C)
            got = read_contributions(out, cls, layer).loc[ids].to_numpy()
            scale = float(want.detach().abs().max())
            np.testing.assert_allclose(got, want.detach().numpy(), atol=1e-4 * scale, rtol=1e-4)


def test_gradcam_equals_captum():
    torch.manual_seed(1)
    model = make_vgg16(2).eval().requires_grad_(False)
    reference = copy.deepcopy(model)
    for m in reference.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad(), Attributor(model, ["conv4_3", "conv5_3"]) as att:
        raw = att.forward(x)
        with torch.enable_grad():
            logits = raw.float()
        cams = att.take_gradcams(logits)  # {layer: (B, K, h, w)}
    for layer in ("conv4_3", "conv5_3"):
        for k in range(2):
            want = LayerGradCam(reference, relu_modules(reference)[layer]).attribute(
                x, target=k, relu_attributions=True
            )
            scale = float(want.detach().abs().max()) or 1.0
            np.testing.assert_allclose(cams[layer][:, k].numpy(), want[:, 0].detach().numpy(), atol=1e-4 * scale)


@pytest.mark.parametrize("size", [64, 224])  # 224: conv5_3's pooled map is already 7 x 7, and the split skips avgpool
def test_the_split_forward_gives_the_plain_forward_logits(size):
    torch.manual_seed(2)
    model = make_vgg16(2).eval().requires_grad_(False)
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        plain = model(x)
        with Attributor(model, ["conv2_2", "conv5_1"]) as att:
            split = att.forward(x)
    torch.testing.assert_close(split, plain, rtol=0, atol=0)
    assert not any(p.grad is not None for p in model.parameters())


@pytest.mark.slow
def test_none_writes_no_tables_and_other_layers_are_another_run(tmp_path, capsys):
    data = make_flat(tmp_path / "train", 2)
    out = tmp_path / "out"
    assert run(data, out, "--weights", "random", "--layers", "conv5_3", "--attribution-layers", "none") == 0
    assert not (out / "attributions").exists()
    assert json.loads((out / "run.json").read_text())["attribution"] is None
    capsys.readouterr()
    assert run(data, out, "--weights", "random", "--layers", "conv5_3", "--attribution-layers", "conv5_3") == 2
    assert "attribution: null there" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["conv9_9", "conv5_3,fc7"])
def test_unknown_attribution_layer_fails_at_start(tmp_path, capsys, bad):
    assert (
        run(make_flat(tmp_path / "train", 1), tmp_path / "out", "--weights", "random", "--attribution-layers", bad) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "attribution_layers: unknown layer" in err and "conv5_3" in err


@pytest.mark.slow
def test_inspect_shows_each_channels_contribution_and_gradcam(tmp_path):
    from jobs import cli
    from jobs import inspect as inspect_job
    from tests.helpers import write_image

    image = write_image(tmp_path / "cat.1.jpg", size=(80, 64), seed=4)
    assert (
        cli.run_main(
            inspect_job.parse,
            inspect_job.main,
            "inspect",
            [
                "--image",
                str(image),
                "--out",
                str(tmp_path / "o"),
                "--weights",
                "random",
                "--image-size",
                "64",
                "--layers",
                "conv4_3,conv5_3",
            ],
        )
        == 0
    )
    page = tmp_path / "o" / "inspect" / inspect_job.make_page_name(str(image))
    numbers = json.loads((page / "inspect.json").read_text())
    ids, x, model, forward, module = _captum_reference(None, tmp_path, "conv5_3")
    pred = numbers["classes"].index(numbers["predicted"])
    want = LayerGradientXActivation(forward, module).attribute(x, target=pred).sum(dim=(2, 3))[0].detach().numpy()
    got = np.asarray(numbers["layers"]["conv5_3"]["contributions"])
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=1e-4)
    top = numbers["layers"]["conv5_3"]["top_contribution_channel"]
    assert top == int(np.argmax(want))
    html = (page / "index.html").read_text(encoding="utf-8")
    assert (
        "gradcam.png" in html and (page / "gradcam.png").stat().st_size > 0 and (page / "contrib_conv5_3.png").exists()
    )
    assert f"the channel the classifier leaned on most is c{top} " in html
    assert f"the one with the highest mean, is c{numbers['layers']['conv5_3']['top_channel']} " in html
