"""The concept stage on bad input (issue #21): a class with fewer images than concepts, a class with no ok image, an
unlabeled run, dead (all-zero) activations, images or DATA gone since the run. Never an exception: notes, and
tables that hold what could be computed; the job alone refuses a run whose DATA is gone, in one line."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest
import torch

from analysis.concepts import stage
from analysis.concepts.stage import ConceptSettings, compute_concepts, write_concept_tables
from analysis.stats.groups import make_groups
from analysis.store import concept_contract as cc
from analysis.store import contract, tables
from analysis.store.run import read_finished_run
from jobs import cli
from jobs import concepts as concepts_job
from tests.helpers import write_image
from tests.small_runs import run

SETTINGS = ConceptSettings("conv5_3", 8, 2000, 4, 0)


def extract(tmp_path, files: dict[str, int]):
    """A random-weights run of conv5_3 over `files` (relative path: image seed; seed -1: a broken file)."""
    for name, seed in files.items():
        path = tmp_path / "data" / name
        if seed < 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\xff\xd8\xff\xe0 truncated")
        else:
            write_image(path, size=(64, 64), seed=seed)
    assert run(tmp_path / "data", tmp_path / "out", "--weights", "random", "--layers", "conv5_3") == 0
    return tmp_path / "out"


def concepts_of(out, settings: ConceptSettings = SETTINGS):
    finished = read_finished_run(out)
    predictions = tables.read_predictions(out, finished.meta["classes"])
    groups = make_groups(predictions, finished.meta["classes"])
    return compute_concepts(finished, predictions, groups, settings, torch.device("cpu"))


@pytest.fixture(scope="module")
def few(tmp_path_factory):
    """Three cats, and a dog folder holding only a broken file."""
    files = {"Cat/0.png": 0, "Cat/1.png": 1, "Cat/2.png": 2, "Dog/broken.jpg": -1}
    return extract(tmp_path_factory.mktemp("few"), files)


def test_fewer_images_than_concepts_and_a_class_without_images(few, tmp_path):
    result = concepts_of(few)
    assert result.notes == (
        "class 'cat': 3 images, fewer than 8 concepts: 3 concepts",
        "class 'dog': no ok images; no concepts",
    )
    assert result.concepts[contract.CLASS].tolist() == ["cat"] * 3
    assert len(result.images) == 3 * 3  # 3 ok images x the one class with concepts x 3 concepts
    assert not result.images.isna().any().any()
    write_concept_tables(tmp_path, result)
    assert json_notes(tmp_path / cc.CONCEPTS) == list(result.notes)


def test_dead_channels_skip_the_class_with_a_note(few, tmp_path, monkeypatch):
    """conv5_3 with zero weights and bias: every activation is 0."""
    real = stage.load_run_model

    def dead(run):
        loaded = real(run)
        conv = loaded.loaded.model.features[28]
        with torch.no_grad():
            conv.weight.zero_()
            conv.bias.zero_()
        return loaded

    monkeypatch.setattr(stage, "load_run_model", dead)
    result = concepts_of(few)
    assert result.notes == (
        "class 'cat': its activations at conv5_3 are all zero (dead channels); skipped",
        "class 'dog': no ok images; no concepts",
    )
    assert result.images.empty and result.concepts.empty
    write_concept_tables(tmp_path, result)  # empty tables, with the notes
    assert pq.read_table(tmp_path / cc.CONCEPT_IMAGES).num_rows == 0
    assert json_notes(tmp_path / cc.CONCEPT_IMAGES) == list(result.notes)


def test_an_unlabeled_run_has_concepts_per_predicted_class(tmp_path):
    out = extract(tmp_path, {f"{i}.png": 10 + i for i in range(4)})
    predicted = tables.read_predictions(out, ("cat", "dog"))[contract.PRED].value_counts().to_dict()
    result = concepts_of(out, ConceptSettings("conv5_3", 2, 2000, 4, 0))
    assert result.notes[0] == "unlabeled run: each class's concepts come from the images predicted as it"
    assert result.meta["group_by"] == contract.GROUP_PRED
    for cls in ("cat", "dog"):
        if predicted.get(cls):
            assert result.meta["classes"][cls]["n_images"] == predicted[cls]
        else:
            assert f"class {cls!r}: no ok images; no concepts" in result.notes
    assert len(result.images) == 4 * 2 * len(result.meta["classes"])


def test_images_and_data_gone_since_the_run(tmp_path, capsys):
    out = extract(tmp_path, {"Cat/0.png": 0, "Cat/1.png": 1, "Dog/0.png": 2, "Dog/1.png": 3})
    (tmp_path / "data" / "Dog" / "1.png").unlink()
    result = concepts_of(out, ConceptSettings("conv5_3", 1, 2, 4, 0))  # Dog/1.png was in the dog's sample
    assert result.notes[-1].startswith("1 images could not be read now and have no concepts (first: 'Dog/1.png'")
    assert len(result.images) == 3 * 2
    shutil.rmtree(tmp_path / "data")
    gone = concepts_of(out)
    assert gone.images.empty and gone.notes[-1].startswith("no concepts: the run's DATA cannot be read any more")
    assert cli.run_main(concepts_job.parse, concepts_job.main, "concepts", ["--run", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "DATA cannot be read any more" in err, err


def json_notes(path) -> list[str]:
    return json.loads(pq.read_schema(path).metadata[contract.METADATA_KEY])["notes"]
