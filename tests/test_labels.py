"""Labels: Kaggle names by their prefix, stray subfolders of a Kaggle folder, plural class folders, the CSV last."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from analysis.data.discovery import find_images
from analysis.data.labels import apply_labels, match_class_names
from analysis.data.names import make_id_part
from tests.helpers import JPEG, record_rows, write_files, write_image
from tests.small_runs import run


def test_kaggle_label_is_the_prefix_whatever_follows(tmp_path):
    write_files(
        tmp_path / "train",
        {
            n: JPEG
            for n in (
                "cat.fluffy.jpg",
                "cat.ñandú 9027.jpg",
                "dog.0001.jpg",
                "Dog_12.png",
                "cat-3.jpeg",
                "dog.a.b.c.jpg",
                "cat.jpg",
                "1.jpg",
                "-dash.jpg",
                "_cat.1.jpg",
            )
        },
    )
    labels = {image_id: label for image_id, _, label in record_rows(find_images(tmp_path / "train"))}
    assert labels == {
        "cat.fluffy.jpg": "cat",
        "cat.ñandú 9027.jpg": "cat",
        "dog.0001.jpg": "dog",
        "Dog_12.png": "dog",
        "cat-3.jpeg": "cat",
        "dog.a.b.c.jpg": "dog",
        # no separator before the extension, or no letters before the first separator: no label
        "cat.jpg": None,
        "1.jpg": None,
        "-dash.jpg": None,
        "_cat.1.jpg": None,
    }


def test_a_name_that_is_not_utf8_keeps_its_label(tmp_path):
    root = os.fsencode(tmp_path / "train")
    os.makedirs(root)
    for name in (b"dog.9032.\xff\xfe.jpg", b"cat.\xe9t\xe9.jpg", b"dog.1.jpg"):
        with open(root + b"/" + name, "wb") as f:
            f.write(JPEG)
    assert record_rows(find_images(tmp_path / "train")) == [
        ("cat.\\xe9t\\xe9.jpg", None, "cat"),
        ("dog.1.jpg", None, "dog"),
        ("dog.9032.\\xff\\xfe.jpg", None, "dog"),
    ]


def test_stray_subfolder_of_a_kaggle_folder_is_labelled_from_names(tmp_path):
    write_files(
        tmp_path / "train",
        {
            "cat.0.jpg": JPEG,
            "dog.0.jpg": JPEG,
            "cat.1.jpg": JPEG,
            "extra/cat.7.jpg": JPEG,
            "extra/deeper/dog.8.jpg": JPEG,
            "extra/9.jpg": JPEG,
        },
    )
    disc = find_images(tmp_path / "train")
    assert record_rows(disc) == [
        ("cat.0.jpg", None, "cat"),
        ("cat.1.jpg", None, "cat"),
        ("dog.0.jpg", None, "dog"),
        ("extra/9.jpg", None, None),
        ("extra/cat.7.jpg", None, "cat"),
        ("extra/deeper/dog.8.jpg", None, "dog"),
    ]
    assert "extra" in disc.layout


def test_class_folder_names_that_are_not_utf8_become_escaped_labels(tmp_path):
    root = os.fsencode(tmp_path)
    for folder in (b"Caf\xe9", b"Dog"):
        os.makedirs(root + b"/" + folder)
        with open(root + b"/" + folder + b"/1.jpg", "wb") as f:
            f.write(JPEG)
    assert record_rows(find_images(tmp_path)) == [("Caf\\xe9/1.jpg", None, "caf\\xe9"), ("Dog/1.jpg", None, "dog")]


@pytest.mark.parametrize(
    "labels, classes, mapped",
    [
        ({"cats", "dogs"}, ["cat", "dog"], {"cats": "cat", "dogs": "dog"}),
        ({"cats", "dogs", "birds"}, ["cat", "dog"], {"cats": "cat", "dogs": "dog"}),  # birds stays birds
        ({"cat", "cats"}, ["cat", "dog"], {}),  # two folders, one class: not merged
        ({"boxes", "dogs"}, ["box", "dog"], {"boxes": "box", "dogs": "dog"}),
        ({"cats", "dogs"}, ["cat", "cats", "dog"], {"dogs": "dog"}),  # cats is a class of its own
        ({"cat", "dog"}, ["cat", "dog"], {}),
    ],
)
def test_plural_folders_map_onto_classes_only_when_unambiguous(tmp_path, labels, classes, mapped):
    write_files(tmp_path, {f"{lab}/1.jpg": JPEG for lab in labels} | {f"{lab}/2.jpg": JPEG for lab in labels})
    disc, mapping = match_class_names(find_images(tmp_path), classes)
    assert mapping == mapped
    assert {r.label for r in disc.records} == {mapped.get(lab, lab) for lab in labels}


@pytest.mark.slow
def test_keras_layout_gets_labels_and_the_csv_still_wins(tmp_path, caplog):
    data = tmp_path / "cats_and_dogs_filtered"
    for i in range(3):
        for split in ("train", "validation"):
            write_image(data / split / "cats" / f"cat.{i}.jpg", seed=i)
            write_image(data / split / "dogs" / f"dog.{i}.jpg", seed=10 + i)
    csv = tmp_path / "labels.csv"
    csv.write_text("image_id,label\ntrain/cats/cat.0.jpg,dog\n", encoding="utf-8")
    out = tmp_path / "out"
    with caplog.at_level("INFO", logger="cnn_blackbox"):
        assert run(data, out, "--weights", "random", "--layers", "conv5_3", "--labels", str(csv)) == 0
    preds = pd.read_parquet(out / "predictions").set_index("image_id")
    expected = {i: ("dog" if i == "train/cats/cat.0.jpg" else "cat" if "/cats/" in i else "dog") for i in preds.index}
    assert preds.label.to_dict() == expected
    assert preds.correct.notna().all()  # the report can compare classes
    meta = json.loads((out / "run.json").read_text())
    assert meta["data"]["label_map"] == {"cats": "cat", "dogs": "dog"}
    assert [r.message for r in caplog.records].count(
        "labels matched to the model's classes: cats -> cat, dogs -> dog (--labels FILE.csv overrides)"
    ) == 1


def test_csv_ids_are_the_table_ids_and_windows_paths_still_match(tmp_path):
    write_files(tmp_path, {"Cat/1.jpg": JPEG, "Dog/back\\slash.jpg": JPEG})
    disc = find_images(tmp_path)
    slash_id = make_id_part("back\\slash.jpg")
    labelled, unmatched = apply_labels(disc, {"Cat\\1.jpg": "Dog", f"Dog/{slash_id}": "Cat", "nothing.jpg": "x"})
    assert record_rows(labelled) == [("Cat/1.jpg", None, "dog"), (f"Dog/{slash_id}", None, "cat")]
    assert unmatched == ["nothing.jpg"]
