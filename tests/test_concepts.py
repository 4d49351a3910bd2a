"""The concept stage on a real run (random weights, 64 px): a planted part is found as a concept, the concepts'
contributions and the residual add up to the extract's attribution tables, the summary table agrees with the image
table and with scikit-learn's AUC, and `python -m jobs.concepts` writes both tables or refuses in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from analysis.concepts.stage import ConceptSettings, compute_concepts
from analysis.data.preprocessing import make_preprocessing
from analysis.stats.groups import make_groups
from analysis.store import concept_contract as cc
from analysis.store import contract, tables
from analysis.store.run import read_finished_run
from jobs import cli
from jobs import concepts as concepts_job
from tests.small_runs import run

SIZE, PATCH, SQUARE, PER_CLASS = 64, 16, 4, 20


def write_planted(root: Path, seed: int = 0) -> dict[str, tuple[int, int, int, int]]:
    """cat/ and dog/ images of smooth random colour; each cat carries a PATCH-px black-and-white checkerboard
    (SQUARE-px squares) at a random place. Returns each cat's patch as (top, left, bottom, right) in pixels of the
    crop the network sees (the same preprocessing run on a mask of the patch)."""
    rng = np.random.default_rng(seed)
    view = make_preprocessing("imagenet", SIZE).view
    yy, xx = np.mgrid[0:PATCH, 0:PATCH]
    checker = ((yy // SQUARE + xx // SQUARE) % 2 * 255).astype(np.uint8)[..., None]
    boxes = {}
    for cls in ("cat", "dog"):
        for i in range(PER_CLASS):
            small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            image = np.asarray(Image.fromarray(small).resize((SIZE, SIZE), Image.BILINEAR)).copy()
            if cls == "cat":
                y, x = rng.integers(0, SIZE - PATCH, 2)
                image[y : y + PATCH, x : x + PATCH] = checker
                mask = np.zeros((SIZE, SIZE, 3), np.uint8)
                mask[y : y + PATCH, x : x + PATCH] = 255
                ys, xs = np.nonzero(np.asarray(view(Image.fromarray(mask)))[..., 0] > 127)
                boxes[f"{cls}/{i}.png"] = (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / cls / f"{i}.png")
    return boxes


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """(run folder, patch boxes): an fp32 extract of conv4_3 and conv5_3 with their attributions."""
    root = tmp_path_factory.mktemp("planted")
    boxes = write_planted(root / "data")
    layers = ["--layers", "conv4_3,conv5_3", "--attribution-layers", "conv4_3,conv5_3"]
    assert run(root / "data", root / "out", "--weights", "random", *layers) == 0
    return root / "out", boxes


def concepts_of(out: Path, layer: str, k: int = 8, images_per_class: int = 2000):
    finished = read_finished_run(out)
    predictions = tables.read_predictions(out, finished.meta["classes"])
    groups = make_groups(predictions, finished.meta["classes"])
    settings = ConceptSettings(layer, k, images_per_class, 16, 0)
    return compute_concepts(finished, predictions, groups, settings, torch.device("cpu"))


@pytest.fixture(scope="module")
def conv4(planted):
    return concepts_of(planted[0], "conv4_3")


def test_a_planted_patch_is_a_concept_that_peaks_on_it(planted, conv4):
    """The issue's thresholds: a cat concept whose peak separates cats from dogs (AUC >= 0.95) and falls inside the
    patch (the centre of the peak's cell, in the crop) in >= 80% of the cat images. Measured on this data (random
    weights, conv4_3 at 64 px: 8 x 8 cells of 8 px) for data seeds 0-5: the best cat concept's peak AUC 0.990-1.0,
    inside the patch in 85-100% of the cats (its cell overlapping the patch: 100%); its presence AUC 0.945-0.992."""
    _, boxes = planted
    cat = conv4.images[conv4.images[contract.CLASS] == "cat"]
    found = []
    for j, rows in cat.groupby(cc.CONCEPT):
        is_cat = rows[contract.IMAGE_ID].str.startswith("cat/").to_numpy()
        inside = [
            top <= y <= bottom and left <= x <= right
            for (top, left, bottom, right), y, x in zip(
                (boxes[i] for i in rows[contract.IMAGE_ID][is_cat]),
                rows[contract.PEAK_Y][is_cat],
                rows[contract.PEAK_X][is_cat],
            )
        ]
        found.append((round(roc_auc_score(is_cat, rows[cc.PEAK]), 3), round(float(np.mean(inside)), 2), j))
    assert any(auc >= 0.95 and share >= 0.8 for auc, share, _ in found), found


@pytest.mark.parametrize("layer", ["conv4_3", "conv5_3"])
def test_contributions_and_the_residual_add_up_to_the_attribution_tables(planted, conv4, layer):
    out, _ = planted
    result = conv4 if layer == "conv4_3" else concepts_of(out, layer, k=4)
    for cls in ("cat", "dog"):
        stored = pd.read_parquet(contract.attribution_dir(out, cls, layer)).set_index(contract.IMAGE_ID)
        row_sum = stored.sum(axis=1).astype(np.float64)  # the layer's total contribution to the class logit
        mine = result.images[result.images[contract.CLASS] == cls]
        concepts = mine.groupby(contract.IMAGE_ID)[cc.CONTRIBUTION].sum().astype(np.float64)
        residual = result.residuals[result.residuals[contract.CLASS] == cls].set_index(contract.IMAGE_ID)
        assert sorted(concepts.index) == sorted(stored.index)  # every ok image has its rows
        both = (concepts + residual["residual"]).reindex(stored.index)
        scale = float(row_sum.abs().max())
        np.testing.assert_allclose(both, row_sum, rtol=1e-4, atol=1e-5 * scale)
        np.testing.assert_allclose(residual["total"].reindex(stored.index), row_sum, rtol=1e-4, atol=1e-5 * scale)


def test_the_summary_agrees_with_the_image_rows_and_scikit_learn(conv4):
    images, summary = conv4.images, conv4.concepts
    assert (images[cc.PRESENCE] >= 0).all() and (images[cc.PEAK] >= images[cc.PRESENCE]).all()
    assert images[[contract.PEAK_Y, contract.PEAK_X]].stack().between(0, SIZE).all()
    assert len(images) == 2 * PER_CLASS * 2 * 8  # every image x class x concept
    for cls, rows in summary.groupby(contract.CLASS):
        assert rows[cc.CONCEPT].tolist() == list(range(8))
        assert rows[cc.IMPORTANCE].is_monotonic_decreasing
        mine = images[images[contract.CLASS] == cls]
        of_class = mine[mine[contract.IMAGE_ID].str.startswith(f"{cls}/")]
        mean = of_class.groupby(cc.CONCEPT)[cc.CONTRIBUTION].mean()
        np.testing.assert_allclose(rows[cc.IMPORTANCE], mean.to_numpy(), rtol=1e-5, atol=1e-9)
        totals = conv4.residuals[conv4.residuals[contract.CLASS] == cls]
        total = totals[totals[contract.IMAGE_ID].str.startswith(f"{cls}/")]["total"].mean()
        residual = totals[totals[contract.IMAGE_ID].str.startswith(f"{cls}/")]["residual"].mean()
        positive = rows[cc.IMPORTANCE].clip(lower=0).sum() + max(residual, 0)  # of one sign with the importance
        if positive > 0:
            np.testing.assert_allclose(rows[cc.SHARE], rows[cc.IMPORTANCE] / positive, rtol=1e-6)
        else:  # nothing pushes the class up (random weights can do that): no share
            assert rows[cc.SHARE].isna().all()
        assert np.isclose(rows[cc.IMPORTANCE].sum() + residual, total, rtol=1e-4)
        for j, auc in zip(rows[cc.CONCEPT], rows[cc.PRESENCE_AUC]):
            one = mine[mine[cc.CONCEPT] == j]
            want = roc_auc_score(one[contract.IMAGE_ID].str.startswith(f"{cls}/"), one[cc.PRESENCE])
            assert auc == pytest.approx(want, abs=1e-12)
        for channels, weights, basis in zip(rows[cc.CHANNELS], rows[cc.WEIGHTS], rows[cc.BASIS]):
            basis = np.asarray(basis)
            assert list(channels) == list(np.argsort(-basis, kind="stable")[:5])
            np.testing.assert_allclose(weights, basis[channels] / basis.sum(), rtol=1e-5)
            assert np.linalg.norm(basis) == pytest.approx(1.0, rel=1e-5)
        assert rows[cc.N_IMAGES].unique().tolist() == [PER_CLASS] and rows[cc.N_SAMPLE].unique().tolist() == [PER_CLASS]
    assert conv4.notes == ()


@pytest.mark.slow
def test_the_job_writes_both_tables_with_their_metadata(planted, tmp_path, caplog):
    out, _ = planted
    argv = ["--run", str(out), "--out", str(tmp_path), "--no-progress", "--set", "images_per_class=12"]
    with caplog.at_level("INFO", logger="cnn_blackbox"):
        assert cli.run_main(concepts_job.parse, concepts_job.main, "concepts", argv + ["--set", "layer=conv4_3"]) == 0
    images = pq.read_table(tmp_path / cc.CONCEPT_IMAGES)
    summary = pq.read_table(tmp_path / cc.CONCEPTS)
    assert images.schema.names == list(cc.CONCEPT_IMAGES_COLUMNS) and summary.schema.names == list(cc.CONCEPTS_COLUMNS)
    meta = json.loads(summary.schema.metadata[contract.METADATA_KEY])
    assert (meta["layer"], meta["k"], meta["images_per_class"], meta["group_by"]) == ("conv4_3", 8, 12, "label")
    assert {c: v["n_sample"] for c, v in meta["classes"].items()} == {"cat": 12, "dog": 12}
    assert json.loads(images.schema.metadata[contract.METADATA_KEY]) == meta
    assert images.num_rows == 2 * PER_CLASS * 2 * 8
    assert any(r.getMessage().startswith("cat: 8 concepts at conv4_3 from 12 of 20 images") for r in caplog.records)


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--set", "layer=conv3_3"], "concepts.layer: 'conv3_3' is not allowed; choose one of conv4_3, conv5_3"),
        (["--set", "concepts=0"], "concepts.concepts: 0 is not allowed"),
        (["--set", "images_per_class=4"], "at least concepts.concepts (8)"),
        (["--set", "colour=red"], "--set colour: unknown config key"),
    ],
)
def test_the_job_refuses_a_bad_request_in_one_line(planted, extra, says, capsys):
    assert cli.run_main(concepts_job.parse, concepts_job.main, "concepts", ["--run", str(planted[0]), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err


def test_the_job_refuses_a_folder_that_is_not_a_finished_run(tmp_path, capsys):
    assert cli.run_main(concepts_job.parse, concepts_job.main, "concepts", ["--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RUN must be" in err, err
