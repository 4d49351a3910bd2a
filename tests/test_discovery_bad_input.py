"""What discovery skips, refuses or relabels, on trees made here: symlinks, unsafe zip members, capped skip
examples, missing, empty or corrupt DATA, and labels from a CSV (good ones and bad)."""

from __future__ import annotations

import os
import zipfile
from dataclasses import replace

import pytest

from analysis.data.discovery import DataError, find_images
from analysis.data.labels import apply_labels, read_labels_csv
from tests.helpers import JPEG, KAGGLE_TEST, PNG, record_rows, write_files, write_zip


def test_symlinks_followed_inside_data_only(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "outside"
    write_files(data, {"train/cat.0.jpg": JPEG, "train/dog.0.jpg": JPEG, ".store/test1/1.jpg": JPEG})
    write_files(outside, {"cat.9.jpg": JPEG, "more/dog.9.jpg": JPEG})
    os.symlink(data / "train" / "cat.0.jpg", data / "train" / "cat.1.jpg")  # file inside: followed
    os.symlink(data / ".store" / "test1", data / "test1")  # folder inside: followed
    os.symlink(outside / "cat.9.jpg", data / "train" / "cat.9.jpg")  # file outside
    os.symlink(outside / "more", data / "more")  # folder outside
    os.symlink(data, data / "train" / "loop")  # loop back to DATA
    os.symlink(data / "train", data / "test1" / "again")  # a folder already found
    os.symlink(data / "train" / "gone.jpg", data / "train" / "dangling.jpg")
    disc = find_images(data)
    assert record_rows(disc) == [
        ("test1/1.jpg", "test1", None),
        ("train/cat.0.jpg", "train", "cat"),
        ("train/cat.1.jpg", "train", "cat"),
        ("train/dog.0.jpg", "train", "dog"),
    ]
    # The link's checked target is what is read: a link re-pointed outside DATA after discovery leads nowhere new.
    assert disc.records[2].path == os.path.realpath(data / "train" / "cat.0.jpg")
    assert disc.skipped == {
        "symlink outside DATA": 2,
        "symlink to a folder already found": 2,
        "broken symlink": 1,
        "hidden or system folder (not searched)": 1,
    }
    assert ("more", "symlink outside DATA") in disc.skipped_examples


def test_unsafe_duplicate_and_nested_zip_members_are_skipped(tmp_path):
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as zf:
        for name in ("../evil.jpg", "/abs.jpg", "a/../../b.jpg", "./c.jpg", "C:/win.jpg", "ok/cat.0.jpg", "inner.zip"):
            zf.writestr(name, JPEG)
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("ok/cat.0.jpg", PNG)
    disc = find_images(tmp_path / "d.zip")
    assert [r.member for r in disc.records] == ["ok/cat.0.jpg"]
    assert disc.skipped == {"unsafe zip member path": 5, "duplicate zip member": 1, "zip inside a zip (not read)": 1}


def test_skipped_examples_are_capped_but_counts_are_not(tmp_path):
    write_files(tmp_path, {f"note{i:02}.txt": b"x" for i in range(25)} | {"cat.0.jpg": JPEG})
    disc = find_images(tmp_path)
    assert disc.skipped == {"not an image extension": 25}
    assert len(disc.skipped_examples) == 20 and disc.skipped_examples[0] == ("note00.txt", "not an image extension")


def test_missing_empty_and_corrupt_data(tmp_path):
    with pytest.raises(DataError, match=r"DATA '.*nope' does not exist"):
        find_images(tmp_path / "nope")
    write_files(tmp_path / "empty", {".DS_Store": b"x", "notes.txt": b"x", "sub/readme.md": b"x"})
    with pytest.raises(
        DataError,
        match=r"Found 0 images in '.*empty' \(3 other files skipped\)\. "
        r"Supported image extensions are .*\.jpg",
    ):
        find_images(tmp_path / "empty")
    write_zip(tmp_path / "dogs-vs-cats.zip", {"train.zip": b"x", "test1.zip": b"x", "sampleSubmission.csv": b"x"})
    with pytest.raises(DataError, match=r"\(3 other files skipped\).*unzip it once and pass the folder"):
        find_images(tmp_path / "dogs-vs-cats.zip")
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="neither a folder nor a readable .zip"):
        find_images(tmp_path / "bad.zip")


def test_labels_csv_overrides_and_names_unmatched(tmp_path):
    write_files(tmp_path / "test1", KAGGLE_TEST)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("\ufeffimage_id,label,source\n1.jpg,Dog,vet\n\nmissing.jpg,cat,x\n", encoding="utf-8")
    labels = read_labels_csv(csv_path)
    assert labels == {"1.jpg": "dog", "missing.jpg": "cat"}
    disc, unmatched = apply_labels(find_images(tmp_path / "test1"), labels)
    assert record_rows(disc) == [("1.jpg", None, "dog"), ("2.jpg", None, None)]
    assert unmatched == ["missing.jpg"]
    # Labels given directly (not read from a CSV) follow the same lower-case rule as discovered ones.
    assert apply_labels(disc, {"2.jpg": "Cat"}) == (
        replace(disc, records=(disc.records[0], replace(disc.records[1], label="cat"))),
        [],
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("id,label\n1.jpg,cat\n", "header with columns image_id,label"),
        ("", "header with columns image_id,label"),
        ("image_id,label\n", "has a header but no rows"),
        ("image_id,label\n1.jpg,\n", "line 2: empty image_id or label"),
        ("image_id,label\n1.jpg,cat\n1.jpg,dog\n", "line 3: '1.jpg' has two labels"),
    ],
)
def test_bad_labels_csv_names_file_and_problem(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as err:
        read_labels_csv(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_labels_csv(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_labels_csv(tmp_path / "nope.csv")
