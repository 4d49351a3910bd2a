"""The extract job end to end: every file gets one row, bad ones say why, every image mode decodes, parents of zips
and folders, resume and overwrite, and the outputs readable by pandas, DuckDB and Polars."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.config import LAYER_NAMES
from analysis.store import tables
from tests.helpers import make_flat, write_image
from tests.small_runs import run

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # the extract job end to end


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


def test_documented_pandas_example_runs_against_a_run(tmp_path, monkeypatch):
    # The example lives on the output contract's page, docs/tables.md, which the README links to.
    data = make_flat(tmp_path / "dogs-vs-cats" / "train", 4)
    out = tmp_path / "runs" / "dogs-vs-cats"
    assert run(data.parent, out, "--weights", "random") == 0
    page = (ROOT / "docs" / "tables.md").read_text()
    block = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "docs/tables.md", "exec"), {})
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
    assert run(data, out, "--weights", "random", "--layers", "conv1_1") == 0  # the same run: resumed (complete)
    assert (out / "run.json").read_bytes() == before
    capsys.readouterr()
    assert run(data, out, "--weights", "random", "--layers", "conv1_2") == 2  # a different run: refused
    err = capsys.readouterr().err
    assert "--overwrite" in err and "layers" in err
    assert (out / "run.json").read_bytes() == before
    assert run(data, out, "--weights", "random", "--layers", "conv1_2", "--overwrite") == 0
    assert json.loads((out / "run.json").read_text())["layers"] == {"conv1_2": 64}


def test_missing_data_fails_in_one_line(tmp_path, capsys):
    assert run(tmp_path / "nope", tmp_path / "out", "--weights", "random") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err
