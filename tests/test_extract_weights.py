"""The extract job's weights end to end: the values it records with random, cached ImageNet and classification-pytorch
weights equal an independent computation, and uncached weights fail before any image is read."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.models.feature_extraction import create_feature_extractor

from analysis.data.decoding import decode_image
from analysis.data.preprocessing import make_preprocessing
from analysis.model.vgg16 import CONV_INDICES, load_model, make_vgg16
from tests.helpers import make_flat
from tests.small_runs import run

pytestmark = pytest.mark.slow  # the extract job end to end


def test_recorded_means_and_maxima_equal_feature_extraction(tmp_path):
    data = make_flat(tmp_path / "train", 5)
    out = tmp_path / "out"
    assert run(data, out, "--weights", "random", "--layers", "conv1_2,conv3_3,conv5_3") == 0

    # Independent path: torchvision's feature extractor on the ReLU nodes of the same (seeded) weights.
    model = load_model(
        "random",
        classes=None,
        classes_file=None,
        class_map=(("cat", 281, 285), ("dog", 151, 268)),
        download=False,
        seed=0,
    ).model
    nodes = {f"features.{CONV_INDICES[n] + 1}": n for n in ("conv1_2", "conv3_3", "conv5_3")}
    for m in model.features:
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    # Same memory format as the job, so that both run the same convolution kernels (NCHW rounds differently).
    model = model.to(memory_format=torch.channels_last)
    extractor = create_feature_extractor(model, return_nodes={**nodes, "classifier.6": "logits"})
    pre = make_preprocessing("imagenet", 64)
    files = sorted(data.glob("*.jpg"))
    x = torch.stack([pre.transform(decode_image(f.read_bytes(), 10**8).image) for f in files])
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():  # in the job's batches of 4: oneDNN's rounding depends on the batch shape
        parts = [extractor(x[i : i + 4]) for i in range(0, len(x), 4)]
    feats = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    ids = [f.name for f in files]
    for layer in nodes.values():
        mean = pd.read_parquet(out / "activations" / layer).set_index("image_id").loc[ids].to_numpy()
        mx = pd.read_parquet(out / "activations_max" / layer).set_index("image_id").loc[ids].to_numpy()
        np.testing.assert_allclose(mean, feats[layer].mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(mx, feats[layer].amax(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-7)
    logits = feats["logits"].double().numpy()
    expect_cat = np.log(np.exp(logits[:, 281:286]).sum(axis=1))
    preds = pd.read_parquet(out / "predictions").set_index("image_id").loc[ids]
    np.testing.assert_allclose(preds.logit_cat, expect_cat, rtol=1e-5)
    assert (preds.imagenet_top1_index.to_numpy() == logits.argmax(axis=1)).all()


def test_imagenet_weights_come_from_the_torch_hub_cache(tmp_path, torch_home):
    ckpt = torch_home / "hub" / "checkpoints" / "vgg16-397923af.pth"
    ckpt.parent.mkdir(parents=True)
    torch.manual_seed(3)
    torch.save(make_vgg16(1000).state_dict(), ckpt)
    data = make_flat(tmp_path / "train", 2)
    out = tmp_path / "out"
    assert run(data, out, "--set", "download=false", "--layers", "conv5_3") == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["weights"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert not meta["weights"]["random"]
    preds = pd.read_parquet(out / "predictions")
    assert preds.imagenet_top1.notna().all()


def test_uncached_weights_fail_before_reading_any_image(tmp_path, torch_home, monkeypatch, capsys):
    import analysis.data.sources

    def fail(*_a, **_k):
        raise AssertionError("an image was read before the weights were checked")

    monkeypatch.setattr(analysis.data.sources, "read_bytes", fail)
    monkeypatch.setattr("analysis.data.dataset.read_bytes", fail, raising=False)
    data = make_flat(tmp_path / "train", 2)
    assert run(data, tmp_path / "out", "--set", "download=false") == 2
    err = capsys.readouterr().err
    assert str(torch_home) in err and "vgg16-397923af.pth" in err
    assert not (tmp_path / "out" / "run.json").exists()


def _recipe_logits(model, path: Path, size: int) -> np.ndarray:
    """classification-pytorch's own recipe: resize the short side, center crop, x / 127.5 - 1."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    w, h = img.size
    ow, oh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    img = img.resize((ow, oh), Image.BILINEAR)
    top, left = int(round((oh - size) / 2.0)), int(round((ow - size) / 2.0))
    arr = np.asarray(img, np.float32)[top : top + size, left : left + size] / 127.5 - 1.0
    with torch.inference_mode():
        return model(torch.from_numpy(arr).permute(2, 0, 1)[None]).numpy()[0]


@pytest.mark.parametrize("data_parallel", [False, True])
def test_classification_pytorch_checkpoint_gives_that_codes_logits(tmp_path, data_parallel):
    torch.manual_seed(5)
    model = make_vgg16(2).eval()
    ckpt = tmp_path / "ep100-loss0.1.pth"
    torch.save((torch.nn.DataParallel(model) if data_parallel else model).state_dict(), ckpt)
    classes = tmp_path / "cls_classes.txt"
    classes.write_text("cat\ndog\n")
    data = make_flat(tmp_path / "train", 3)
    out = tmp_path / "out"
    assert (
        run(
            data,
            out,
            "--weights",
            str(ckpt),
            "--preprocess",
            "classification-pytorch",
            "--classes-file",
            str(classes),
            "--layers",
            "conv5_3",
        )
        == 0
    )
    preds = pd.read_parquet(out / "predictions").set_index("image_id")
    for f in sorted(data.glob("*.jpg")):
        expect = _recipe_logits(model, f, 64)
        np.testing.assert_allclose(
            preds.loc[f.name, ["logit_cat", "logit_dog"]].to_numpy(np.float64), expect, rtol=1e-4, atol=1e-5
        )
    meta = json.loads((out / "run.json").read_text())
    assert meta["preprocess"]["name"] == "classification-pytorch" and meta["classes"] == ["cat", "dog"]
    assert "imagenet_top1" not in preds.columns


def test_classification_pytorch_parity_on_the_real_seed_photos(tmp_path, seed_images):
    """Real, non-square photos (299x196, 499x375) at the recipe's 224 px: resize rounding must agree too."""
    import shutil

    data = tmp_path / "photos"
    data.mkdir()
    for name in ("cat.jpg", "dog.jpg"):
        shutil.copy(seed_images / name, data / name)
    torch.manual_seed(7)
    model = make_vgg16(2).eval()
    ckpt = tmp_path / "best_epoch_weights.pth"
    torch.save(model.state_dict(), ckpt)
    out = tmp_path / "out"
    assert (
        run(
            data,
            out,
            "--weights",
            str(ckpt),
            "--preprocess",
            "classification-pytorch",
            "--image-size",
            "224",
            "--classes-file",
            str(seed_images / "cls_classes.txt"),
            "--layers",
            "conv5_3",
        )
        == 0
    )
    preds = pd.read_parquet(out / "predictions").set_index("image_id")
    for name in ("cat.jpg", "dog.jpg"):
        np.testing.assert_allclose(
            preds.loc[name, ["logit_cat", "logit_dog"]].to_numpy(np.float64),
            _recipe_logits(model, data / name, 224),
            rtol=1e-4,
            atol=1e-5,
        )
