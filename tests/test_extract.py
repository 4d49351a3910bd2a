"""The extract job end to end: every file gets one row, values equal an independent computation, outputs readable."""
from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.models.feature_extraction import create_feature_extractor

from analysis.store import tables
from analysis.config import LAYER_NAMES
from analysis.data.decoding import decode_image
from analysis.model.vgg16 import CONV_INDICES, make_vgg16, load_model
from analysis.data.preprocessing import make_preprocessing
from jobs import cli
from jobs.extract import main, parse
from tests.conftest import write_image

ROOT = Path(__file__).resolve().parents[1]
# No attribution unless a test asks for it (a later --attribution-layers wins): its backward is most of a small run.
SMALL = ["--image-size", "64", "--batch-size", "4", "--workers", "0", "--precision", "fp32", "--device", "cpu",
         "--no-progress", "--attribution-layers", "none"]


def run(data, out, *extra) -> int:
    return cli.run_main(parse, main, "extract", ["--data", str(data), "--out", str(out), *SMALL, *extra])


def make_flat(root: Path, n: int = 6) -> Path:
    for i in range(n):
        write_image(root / f"{'cat' if i % 2 == 0 else 'dog'}.{i}.jpg", seed=i)
    return root


def test_every_file_found_has_one_row_and_bad_ones_say_why(tmp_path):
    data = make_flat(tmp_path / "train")
    (data / "cat.90.jpg").write_bytes(b"")
    (data / "dog.91.jpg").write_bytes(np.random.default_rng(1).bytes(500))
    good = (data / "cat.0.jpg").read_bytes()
    (data / "cat.92.jpg").write_bytes(good[: len(good) // 2])
    write_image(data / "dog.93.jpg", seed=9, fmt="PNG")  # a PNG named .jpg is a good image
    (data / ".DS_Store").write_bytes(b"\0\0")
    (data / "notes.txt").write_text("not an image")
    out = tmp_path / "out"

    assert run(data, out, "--weights", "random", "--set", "unit_size=3") == 0

    preds = pd.read_parquet(out / "predictions")
    assert sorted(preds.image_id) == sorted(p.name for p in data.glob("*.jpg"))
    assert preds.image_id.is_unique
    reasons = preds.set_index("image_id").error.to_dict()
    assert reasons["cat.90.jpg"] == "empty file"
    assert reasons["dog.91.jpg"] == "not an image"
    assert reasons["cat.92.jpg"] == "truncated"
    ok = preds[preds.status == "ok"]
    assert len(ok) == 7 and ok.error.isna().all() and ok.pred.notna().all()
    assert (preds.set_index("image_id").loc["dog.93.jpg", "format"]) == "PNG"
    np.testing.assert_allclose(ok.prob_cat + ok.prob_dog, 1.0, rtol=1e-6)
    assert (ok.correct == (ok.pred == ok.label)).all()
    bad = preds[preds.status == "error"]
    assert bad[["prob_cat", "pred", "correct"]].isna().all().all()

    meta = json.loads((out / "run.json").read_text())
    assert meta["complete"] and meta["weights"]["random"]
    assert meta["counts"]["found"] == 10 and meta["counts"]["ok"] == 7 and meta["counts"]["error"] == 3
    assert meta["counts"]["skipped"] == 2
    assert meta["layers"] == dict(zip(LAYER_NAMES, [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]))
    assert len(tables.list_parts(out / "predictions")) == 4  # 10 files in units of 3
    for layer in LAYER_NAMES:
        acts = pd.read_parquet(out / "activations" / layer)
        assert sorted(acts.image_id) == sorted(ok.image_id)
        assert acts.shape[1] == 1 + meta["layers"][layer]


def test_recorded_means_and_maxima_equal_feature_extraction(tmp_path):
    data = make_flat(tmp_path / "train", 5)
    out = tmp_path / "out"
    assert run(data, out, "--weights", "random", "--layers", "conv1_2,conv3_3,conv5_3") == 0

    # Independent path: torchvision's feature extractor on the ReLU nodes of the same (seeded) weights.
    model = load_model("random", classes=None, classes_file=None, class_map=(("cat", 281, 285), ("dog", 151, 268)),
                       download=False, seed=0).model
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
        parts = [extractor(x[i:i + 4]) for i in range(0, len(x), 4)]
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


def test_parent_of_zip_and_unlabeled_folder(tmp_path):
    parent = tmp_path / "dogs-vs-cats"
    train = make_flat(tmp_path / "staging" / "train", 4)
    parent.mkdir()
    with zipfile.ZipFile(parent / "train.zip", "w") as zf:
        for f in sorted(train.iterdir()):
            zf.write(f, f"train/{f.name}")
    for i in range(3):
        write_image(parent / "test1" / f"{i + 1}.jpg", seed=20 + i)
    out = tmp_path / "out"
    assert run(parent, out, "--weights", "random", "--workers", "2") == 0
    preds = pd.read_parquet(out / "predictions").set_index("image_id")
    assert preds.loc["train.zip/train/cat.0.jpg", "split"] == "train"
    assert preds.loc["train.zip/train/cat.0.jpg", "label"] == "cat"
    assert preds.loc["test1/1.jpg", "split"] == "test1"
    test1 = preds[preds.split == "test1"]
    assert len(test1) == 3 and test1.label.isna().all() and test1.correct.isna().all()
    assert test1.pred.notna().all()


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
    arr = np.asarray(img, np.float32)[top:top + size, left:left + size] / 127.5 - 1.0
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
    assert run(data, out, "--weights", str(ckpt), "--preprocess", "classification-pytorch",
               "--classes-file", str(classes), "--layers", "conv5_3") == 0
    preds = pd.read_parquet(out / "predictions").set_index("image_id")
    for f in sorted(data.glob("*.jpg")):
        expect = _recipe_logits(model, f, 64)
        np.testing.assert_allclose(preds.loc[f.name, ["logit_cat", "logit_dog"]].to_numpy(np.float64), expect,
                                   rtol=1e-4, atol=1e-5)
    meta = json.loads((out / "run.json").read_text())
    assert meta["preprocess"]["name"] == "classification-pytorch" and meta["classes"] == ["cat", "dog"]
    assert "imagenet_top1" not in preds.columns


def test_readme_pandas_example_runs_against_a_run(tmp_path, monkeypatch):
    data = make_flat(tmp_path / "dogs-vs-cats" / "train", 4)
    out = tmp_path / "runs" / "dogs-vs-cats"
    assert run(data.parent, out, "--weights", "random") == 0
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    conv5 = pd.read_parquet(out / "activations" / "conv5_3").set_index("image_id")
    assert conv5.shape == (4, 512) and (conv5.dtypes == np.float32).all()


def test_duckdb_and_polars_read_the_same_tables(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    pl = pytest.importorskip("polars")
    data = make_flat(tmp_path / "train", 3)
    out = tmp_path / "out"
    assert run(data, out, "--weights", "random", "--layers", "conv5_3", "--set", "unit_size=2") == 0
    pdf = pd.read_parquet(out / "activations" / "conv5_3").sort_values("image_id")
    ddf = duckdb.sql(f"select * from read_parquet('{out}/activations/conv5_3/*.parquet') order by image_id").df()
    plf = pl.read_parquet(out / "activations" / "conv5_3").sort("image_id").to_pandas()
    np.testing.assert_array_equal(ddf.drop(columns="image_id").to_numpy(), pdf.drop(columns="image_id").to_numpy())
    np.testing.assert_array_equal(plf.drop(columns="image_id").to_numpy(), pdf.drop(columns="image_id").to_numpy())
    n = duckdb.sql(f"select count(*) as n from read_parquet('{out}/predictions/*.parquet')").df().n[0]
    assert n == 3


def test_same_run_resumes_and_a_different_one_is_not_replaced_without_overwrite(tmp_path, capsys):
    data = make_flat(tmp_path / "train", 2)
    out = tmp_path / "out"
    assert run(data, out, "--weights", "random", "--layers", "conv1_1") == 0
    before = (out / "run.json").read_bytes()
    assert run(data, out, "--weights", "random", "--layers", "conv1_1") == 0   # the same run: resumed (complete)
    assert (out / "run.json").read_bytes() == before
    capsys.readouterr()
    assert run(data, out, "--weights", "random", "--layers", "conv1_2") == 2   # a different run: refused
    err = capsys.readouterr().err
    assert "--overwrite" in err and "layers" in err
    assert (out / "run.json").read_bytes() == before
    assert run(data, out, "--weights", "random", "--layers", "conv1_2", "--overwrite") == 0
    assert json.loads((out / "run.json").read_text())["layers"] == {"conv1_2": 64}


def test_missing_data_fails_in_one_line(tmp_path, capsys):
    assert run(tmp_path / "nope", tmp_path / "out", "--weights", "random") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err


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
    assert run(data, out, "--weights", str(ckpt), "--preprocess", "classification-pytorch", "--image-size", "224",
               "--classes-file", str(seed_images / "cls_classes.txt"), "--layers", "conv5_3") == 0
    preds = pd.read_parquet(out / "predictions").set_index("image_id")
    for name in ("cat.jpg", "dog.jpg"):
        np.testing.assert_allclose(preds.loc[name, ["logit_cat", "logit_dog"]].to_numpy(np.float64),
                                   _recipe_logits(model, data / name, 224), rtol=1e-4, atol=1e-5)


def test_every_image_mode_gets_an_ok_row_with_its_stored_size(tmp_path):
    """CMYK, grayscale, palette, RGBA, 16-bit and EXIF-rotated files all decode: one ok row each."""
    from PIL import Image

    data = tmp_path / "modes"
    data.mkdir()
    rgb = Image.open(write_image(tmp_path / "src.png", size=(80, 60), seed=3)).convert("RGB")
    rgb.convert("CMYK").save(data / "cat.1.jpg")
    rgb.convert("L").save(data / "cat.2.png")
    rgb.convert("P").save(data / "dog.3.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(data / "dog.4.png")
    Image.fromarray((np.asarray(rgb.convert("L"), np.uint16) * 257)).save(data / "cat.5.png")  # 16-bit grey
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    rgb.save(data / "dog.6.jpg", exif=exif)
    out = tmp_path / "out"
    assert run(data, out, "--weights", "random", "--layers", "conv1_1") == 0
    preds = pd.read_parquet(out / "predictions").set_index("image_id")
    assert len(preds) == 6 and (preds.status == "ok").all(), preds[["status", "error"]]
    assert (preds.width == 80).all() and (preds.height == 60).all()  # as stored, before EXIF rotation
    acts = pd.read_parquet(out / "activations" / "conv1_1").set_index("image_id")
    assert np.isfinite(acts.to_numpy()).all() and len(acts) == 6
