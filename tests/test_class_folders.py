"""Folders that name the model's classes are class folders whatever their files are called; class names and labels
match whatever their case; DATA that is one image, and labels CSV ids that match nothing, are named in one line."""

from __future__ import annotations

import logging
import string
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.data.discovery import DataError, find_images
from analysis.data.labels import apply_labels, describe_ids, describe_plural_twins, match_class_names
from analysis.model.vgg16 import WeightsError, make_vgg16, read_classes_file
from tests.helpers import JPEG, record_rows, write_files, write_image
from tests.small_runs import run

CLASSES = ("cat", "dog")
OXFORD = {"cats/Abyssinian_14.jpg": JPEG, "cats/Bombay_10.jpg": JPEG, "dogs/beagle_3.jpg": JPEG, "dogs/pug_7.jpg": JPEG}


def _labelled(data, classes=CLASSES):
    """Discovery with the classes, then plural folders matched onto them, as the extract does."""
    return match_class_names(find_images(data, classes), classes)[0]


def test_oxford_photos_in_keras_class_folders_are_labelled_by_the_folder(tmp_path):
    write_files(tmp_path, OXFORD)
    disc = _labelled(tmp_path)
    assert record_rows(disc) == [
        ("cats/Abyssinian_14.jpg", None, "cat"),
        ("cats/Bombay_10.jpg", None, "cat"),
        ("dogs/beagle_3.jpg", None, "dog"),
        ("dogs/pug_7.jpg", None, "dog"),
    ]
    assert disc.layout == "class-folders (cats, dogs)"
    # Without the classes, discovery keeps reading the names (a parent of two Kaggle-flat folders).
    assert {r.label for r in find_images(tmp_path).records} == {"abyssinian", "bombay", "beagle", "pug"}


def test_oxford_class_folders_under_splits_keep_the_split(tmp_path):
    write_files(tmp_path, {f"{split}/{rel}": JPEG for split in ("train", "validation") for rel in OXFORD})
    table = record_rows(_labelled(tmp_path))
    assert {(split, label) for _, split, label in table} == {
        ("train", "cat"),
        ("train", "dog"),
        ("validation", "cat"),
        ("validation", "dog"),
    }
    assert all(label == ("cat" if "/cats/" in image_id else "dog") for image_id, _, label in table)


@pytest.mark.parametrize(
    "files",
    [
        {"cat/cat.1.jpg": JPEG, "cat/cat.2.jpg": JPEG, "dog/dog.1.jpg": JPEG},  # the folder is the prefix too
        {"cats/cat.1.jpg": JPEG, "cats/dog.9.jpg": JPEG, "dogs/dog.1.jpg": JPEG},  # the folder wins over a prefix
    ],
)
def test_a_class_folder_labels_its_files_whatever_their_prefix(tmp_path, files):
    write_files(tmp_path, files)
    assert {i: lab for i, _, lab in record_rows(_labelled(tmp_path))} == {
        i: ("cat" if i.startswith("cat") else "dog") for i in files
    }


def test_mixed_case_class_folders(tmp_path):
    write_files(
        tmp_path,
        {"Cat/Abyssinian_1.jpg": JPEG, "Cat/Bombay_1.jpg": JPEG, "DOGS/beagle_1.jpg": JPEG, "DOGS/pug_1.jpg": JPEG},
    )
    assert [lab for _, _, lab in record_rows(_labelled(tmp_path))] == ["cat", "cat", "dog", "dog"]


def test_the_stray_subfolder_rule_holds_for_folders_that_name_no_class(tmp_path):
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
    assert (
        record_rows(_labelled(tmp_path / "train"))
        == record_rows(find_images(tmp_path / "train"))
        == [
            ("cat.0.jpg", None, "cat"),
            ("cat.1.jpg", None, "cat"),
            ("dog.0.jpg", None, "dog"),
            ("extra/9.jpg", None, None),
            ("extra/cat.7.jpg", None, "cat"),
            ("extra/deeper/dog.8.jpg", None, "dog"),
        ]
    )


def test_a_folder_beside_its_plural_stays_two_labels_with_a_warning_that_names_both(tmp_path):
    write_files(
        tmp_path, {"train/cat/1.jpg": JPEG, "train/cats/2.jpg": JPEG, "train/cats/3.jpg": JPEG, "train/dog/4.jpg": JPEG}
    )
    disc = _labelled(tmp_path)
    assert [lab for _, _, lab in record_rows(disc)] == ["cat", "cats", "cats", "dog"]
    assert describe_plural_twins(disc, CLASSES) == [
        "folder train/cat/ and folder train/cats/ both name the class 'cat': kept as two labels, and 'cats' is "
        "not a class of the model, so `correct` is null for its 2 images; move them into one folder (or rename "
        "one) and rerun, or pass --labels FILE.csv"
    ]
    assert describe_plural_twins(_labelled(tmp_path / "train" / "cats"), CLASSES) == []


_CASED = st.text(alphabet="aA", min_size=3, max_size=3)


@settings(max_examples=40, deadline=None)
@given(
    cat=st.tuples(_CASED, st.sampled_from(["", "s", "S", "es"])),
    dog=st.tuples(_CASED, st.sampled_from(["", "s", "S", "es"])),
    stem=st.text(alphabet=string.ascii_letters, min_size=1, max_size=8),
    split=st.booleans(),
)
def test_any_case_or_plural_of_a_class_is_a_class_folder(cat, dog, stem, split):
    def spell(word, casing, ending):  # casing: 'aAa' -> cAt
        return "".join(c.upper() if m == "A" else c for c, m in zip(word, casing)) + ending

    folders = {"cat": spell("cat", *cat), "dog": spell("dog", *dog)}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        top = root / "train" if split else root
        write_files(top, {f"{folders[c]}/{stem}_{i}.jpg": JPEG for c in CLASSES for i in range(2)})
        table = record_rows(_labelled(root))
    assert sorted((i.split("/")[-2], s, lab) for i, s, lab in table) == sorted(
        (folders[c], "train" if split else None, c) for c in CLASSES for _ in range(2)
    )


def test_one_image_file_as_data_says_so_in_one_line(tmp_path, capsys):
    image = write_image(tmp_path / "cat.0.jpg")
    with pytest.raises(
        DataError,
        match=r"^DATA '.*cat\.0\.jpg' is one image file; DATA must be a folder or a "
        r"\.zip of images",
    ):
        find_images(image)
    assert run(image, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is one image file; DATA must be a folder or a .zip" in err
    assert "BadZipFile" not in err


def test_unmatched_csv_ids_are_named_first_ten_then_counted(tmp_path):
    write_files(tmp_path, {"cat/1.jpg": JPEG})
    ids = [f"missing/{i:02d}.jpg" for i in range(12)]
    disc, unmatched = apply_labels(find_images(tmp_path), {**{i: "cat" for i in ids}, "cat/1.jpg": "dog"})
    assert unmatched == ids and record_rows(disc) == [("cat/1.jpg", None, "dog")]
    assert describe_ids(unmatched) == ", ".join(repr(i) for i in ids[:10]) + " and 2 more"
    assert describe_ids(ids[:2]) == "'missing/00.jpg', 'missing/01.jpg'"


def test_class_names_from_a_file_are_lower_cased_and_may_not_differ_only_in_case(tmp_path):
    path = tmp_path / "cls_classes.txt"
    path.write_text("Cat\nDOG\n")
    assert read_classes_file(str(path)) == ("cat", "dog")
    path.write_text("Cat\ncat\n")
    with pytest.raises(WeightsError, match=r"class names repeat once lower-cased \(Cat, cat\)"):
        read_classes_file(str(path))


@pytest.mark.slow
def test_capitalised_classes_label_capitalised_folders_end_to_end(tmp_path, caplog):
    """--classes Cat,Dog on Cat/ Dog/ folders, with a checkpoint that names CAT, dog: labels and `correct` kept."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in make_vgg16(2).state_dict().items()}
    # Zero weights stored as one element each (stride 0): a 2-way VGG16 checkpoint of a few kilobytes.
    ckpt = tmp_path / "two_way.pt"
    torch.save({"classes": ["CAT", "dog"], **{k: torch.zeros(()).expand(s) for k, s in shapes.items()}}, ckpt)
    data = tmp_path / "data"
    for i in range(2):
        write_image(data / "Cat" / f"{i}.jpg", size=(40, 32), seed=i)
        write_image(data / "Dog" / f"{i}.jpg", size=(40, 32), seed=10 + i)
    csv = tmp_path / "labels.csv"
    csv.write_text("image_id,label\n" + "".join(f"Cat/{i}.png,cat\n" for i in range(11)), encoding="utf-8")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="cnn_blackbox"):
        assert (
            run(
                data,
                out,
                "--weights",
                str(ckpt),
                "--classes",
                "Cat,Dog",
                "--layers",
                "conv5_3",
                "--image-size",
                "32",
                "--labels",
                str(csv),
            )
            == 0
        )
    preds = pd.read_parquet(out / "predictions").set_index("image_id").sort_index()
    assert preds.label.to_dict() == {"Cat/0.jpg": "cat", "Cat/1.jpg": "cat", "Dog/0.jpg": "dog", "Dog/1.jpg": "dog"}
    assert preds.correct.notna().all()
    assert [c for c in preds.columns if c.startswith("prob_")] == ["prob_cat", "prob_dog"]
    unmatched = [r.getMessage() for r in caplog.records if "match no image" in r.getMessage()]
    assert len(unmatched) == 1 and "11 image ids" in unmatched[0]
    assert "'Cat/0.png', 'Cat/1.png'" in unmatched[0] and "'Cat/9.png' and 1 more" in unmatched[0]
    assert not any("not among the model's classes" in r.getMessage() for r in caplog.records)
