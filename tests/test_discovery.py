"""Discovery: layouts, zips, parents, symlinks and skipped files, on trees made here."""
from __future__ import annotations

import io
import os
import zipfile
from dataclasses import replace

import pytest
from PIL import Image

from analysis.data.discovery import DataError, find_images
from analysis.data.labels import apply_labels, read_labels_csv
from analysis.data.sources import read_bytes


def _image_bytes(fmt: str, color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), color).save(buf, format=fmt)
    return buf.getvalue()


JPEG = _image_bytes("JPEG", (200, 10, 10))
PNG = _image_bytes("PNG", (10, 200, 10))


def _write(root, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _zip(path, members: dict[str, bytes], dirs: tuple[str, ...] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for d in dirs:
            zf.writestr(d, b"")   # explicit directory entries, as `zip -r` writes them
        for name, data in members.items():
            zf.writestr(name, data)


def _table(disc) -> list[tuple[str, str | None, str | None]]:
    return [(r.image_id, r.split, r.label) for r in disc.records]


KAGGLE_TRAIN = {"cat.0.jpg": JPEG, "cat.1.jpg": JPEG, "dog.0.jpg": JPEG, "dog.10.JPG": JPEG}
KAGGLE_TEST = {"1.jpg": JPEG, "2.jpg": JPEG}


def test_kaggle_flat_labels_from_names_and_skips_non_images(tmp_path, monkeypatch):
    _write(tmp_path / "train", {**KAGGLE_TRAIN, "extra.png": PNG, ".DS_Store": b"x", "Thumbs.db": b"x",
                                "notes.txt": b"x", ".hidden.jpg": JPEG, "__MACOSX/._cat.0.jpg": b"x"})
    monkeypatch.chdir(tmp_path)   # a relative DATA still gives absolute paths: workers may run elsewhere
    disc = find_images("train")
    assert _table(disc) == [("cat.0.jpg", None, "cat"), ("cat.1.jpg", None, "cat"), ("dog.0.jpg", None, "dog"),
                            ("dog.10.JPG", None, "dog"), ("extra.png", None, None)]
    assert disc.layout == "kaggle-flat"
    assert disc.root == str(tmp_path / "train")
    assert disc.records[0].path == str(tmp_path / "train" / "cat.0.jpg") and disc.records[0].member is None
    assert disc.skipped == {"system file": 2, "not an image extension": 1, "hidden file": 1,
                            "hidden or system folder (not searched)": 1}
    assert ("notes.txt", "not an image extension") in disc.skipped_examples
    assert disc.n_images == 5


def test_class_folders_label_from_folder_including_nested_images(tmp_path):
    _write(tmp_path / "PetImages", {"Cat/1.jpg": JPEG, "Cat/deeper/2.jpg": JPEG, "Cat/Thumbs.db": b"x",
                                    "Dog/1.jpg": JPEG, "Dog/10.png": PNG})
    disc = find_images(tmp_path / "PetImages")
    assert _table(disc) == [("Cat/1.jpg", None, "cat"), ("Cat/deeper/2.jpg", None, "cat"),
                            ("Dog/1.jpg", None, "dog"), ("Dog/10.png", None, "dog")]
    assert disc.layout == "class-folders (cat, dog)"
    assert disc.skipped == {"system file": 1}


def test_unlabeled_flat_folder(tmp_path):
    _write(tmp_path / "test1", {**KAGGLE_TEST, "10.png": PNG})
    disc = find_images(tmp_path / "test1")
    assert _table(disc) == [("1.jpg", None, None), ("10.png", None, None), ("2.jpg", None, None)]
    assert disc.layout == "unlabeled"


def test_zip_read_in_place_and_read_bytes_gets_the_member(tmp_path):
    members = {"cat.0.jpg": JPEG, "dog.0.png": PNG}
    _zip(tmp_path / "flat.zip", members)
    disc = find_images(tmp_path / "flat.zip")
    assert _table(disc) == [("cat.0.jpg", None, "cat"), ("dog.0.png", None, "dog")]
    assert disc.layout == "zip of kaggle-flat"
    for rec in disc.records:
        assert rec.path == str(tmp_path / "flat.zip") and rec.member == rec.image_id
        assert read_bytes(rec, max_bytes=1 << 20) == members[rec.member]
    assert not any(p.name != "flat.zip" for p in tmp_path.iterdir())   # nothing extracted


def test_zip_with_wrapper_folder_gives_split_and_skips_macosx(tmp_path):
    _zip(tmp_path / "train.zip", {f"train/{n}": b for n, b in KAGGLE_TRAIN.items()}
         | {"__MACOSX/train/._cat.0.jpg": b"x", "train/.DS_Store": b"x"}, dirs=("train/", "__MACOSX/"))
    disc = find_images(tmp_path / "train.zip")
    assert [r.image_id for r in disc.records] == [f"train/{n}" for n in sorted(KAGGLE_TRAIN)]
    assert {r.split for r in disc.records} == {"train"}
    assert [r.label for r in disc.records] == ["cat", "cat", "dog", "dog"]
    assert disc.layout == "zip of kaggle-flat (train/)"
    assert disc.skipped == {"system file": 2}
    assert read_bytes(disc.records[0], 1 << 20) == JPEG


def test_wrapper_with_other_name_keeps_split_none_and_finds_class_folders(tmp_path):
    # The layout of Microsoft's kagglecatsanddogs zip: one folder beside two documents.
    _zip(tmp_path / "pets.zip", {"PetImages/Cat/0.jpg": JPEG, "PetImages/Dog/0.jpg": JPEG, "readme[1].txt": b"x",
                                 "CDLA-Permissive-2.0.pdf": b"x"})
    disc = find_images(tmp_path / "pets.zip")
    assert _table(disc) == [("PetImages/Cat/0.jpg", None, "cat"), ("PetImages/Dog/0.jpg", None, "dog")]
    assert disc.layout == "zip of class-folders (cat, dog) (PetImages/)"
    assert disc.skipped == {"not an image extension": 2}


def test_parent_of_train_and_test1_folders(tmp_path):
    _write(tmp_path / "train", KAGGLE_TRAIN)
    _write(tmp_path / "test1", KAGGLE_TEST)
    disc = find_images(tmp_path)
    assert _table(disc) == [("test1/1.jpg", "test1", None), ("test1/2.jpg", "test1", None),
                            ("train/cat.0.jpg", "train", "cat"), ("train/cat.1.jpg", "train", "cat"),
                            ("train/dog.0.jpg", "train", "dog"), ("train/dog.10.JPG", "train", "dog")]
    assert disc.layout == "parent: test1=unlabeled, train=kaggle-flat"


def test_parent_of_train_zip_and_test1_zip(tmp_path):
    _zip(tmp_path / "train.zip", {f"train/{n}": b for n, b in KAGGLE_TRAIN.items()})
    _zip(tmp_path / "test1.zip", {f"test1/{n}": b for n, b in KAGGLE_TEST.items()})
    (tmp_path / "sampleSubmission.csv").write_text("id,label\n")
    disc = find_images(tmp_path)
    assert _table(disc)[:3] == [("test1.zip/test1/1.jpg", "test1", None), ("test1.zip/test1/2.jpg", "test1", None),
                                ("train.zip/train/cat.0.jpg", "train", "cat")]
    assert disc.n_images == 6
    assert disc.layout == "parent: test1=zip of unlabeled (test1/), train=zip of kaggle-flat (train/)"
    assert disc.skipped == {"not an image extension": 1}
    rec = disc.records[2]
    assert (rec.path, rec.member) == (str(tmp_path / "train.zip"), "train/cat.0.jpg")
    assert read_bytes(rec, 1 << 20) == JPEG


def test_zip_unpacked_beside_itself_is_not_analyzed_twice(tmp_path):
    _zip(tmp_path / "train.zip", {f"train/{n}": b for n, b in KAGGLE_TRAIN.items()})
    _write(tmp_path / "train", KAGGLE_TRAIN)
    disc = find_images(tmp_path)
    assert [r.image_id for r in disc.records] == [f"train/{n}" for n in sorted(KAGGLE_TRAIN)]
    assert disc.skipped == {"zip already unpacked beside it (train/)": 4}
    assert disc.skipped_examples == (("train.zip", "zip already unpacked beside it (train/)"),)
    # A partial unpack is not the same data: both are analyzed.
    (tmp_path / "train" / "cat.0.jpg").unlink()
    assert find_images(tmp_path).n_images == 7


def test_mixed_parent_of_zip_class_folders_and_loose_files(tmp_path):
    _zip(tmp_path / "train.zip", {f"train/{n}": b for n, b in KAGGLE_TRAIN.items()})
    _write(tmp_path, {"PetImages/Cat/1.jpg": JPEG, "PetImages/Dog/1.jpg": JPEG, "loose.png": PNG,
                      "README.txt": b"x"})
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    disc = find_images(tmp_path)
    table = _table(disc)
    assert ("loose.png", None, None) in table
    assert ("PetImages/Cat/1.jpg", "PetImages", "cat") in table and ("PetImages/Dog/1.jpg", "PetImages", "dog") in table
    assert ("train.zip/train/dog.0.jpg", "train", "dog") in table
    assert disc.n_images == 7
    assert disc.skipped == {"not an image extension": 1, "unreadable zip": 1}
    assert disc.layout == ("parent: PetImages=class-folders (cat, dog), train=zip of kaggle-flat (train/)"
                           " + 1 loose images")


def test_split_folders_of_class_folders_named_after_their_class(tmp_path):
    # Keras's cats_and_dogs_small: split/class/cat.N.jpg. The class folders must not be taken for splits.
    _write(tmp_path, {"train/cats/cat.0.jpg": JPEG, "train/dogs/dog.0.jpg": JPEG,
                      "validation/cats/cat.5.jpg": JPEG, "validation/dogs/dog.5.jpg": JPEG})
    disc = find_images(tmp_path)
    assert _table(disc) == [("train/cats/cat.0.jpg", "train", "cats"), ("train/dogs/dog.0.jpg", "train", "dogs"),
                            ("validation/cats/cat.5.jpg", "validation", "cats"),
                            ("validation/dogs/dog.5.jpg", "validation", "dogs")]
    # Without split names, a child holding class folders still makes the root a parent ...
    _write(tmp_path / "other", {"part1/cat/1.jpg": JPEG, "part1/dog/1.jpg": JPEG, "part2/cat/2.jpg": JPEG})
    assert _table(find_images(tmp_path / "other")) == [
        ("part1/cat/1.jpg", "part1", "cat"), ("part1/dog/1.jpg", "part1", "dog"), ("part2/cat/2.jpg", "part2", "cat")]
    # ... and so does a child named Kaggle-style with two labels.
    _write(tmp_path / "third", {"mine/cat.0.jpg": JPEG, "mine/dog.0.jpg": JPEG, "theirs/1.jpg": JPEG})
    assert _table(find_images(tmp_path / "third")) == [
        ("mine/cat.0.jpg", "mine", "cat"), ("mine/dog.0.jpg", "mine", "dog"), ("theirs/1.jpg", "theirs", None)]


def test_symlinks_followed_inside_data_only(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "outside"
    _write(data, {"train/cat.0.jpg": JPEG, "train/dog.0.jpg": JPEG, ".store/test1/1.jpg": JPEG})
    _write(outside, {"cat.9.jpg": JPEG, "more/dog.9.jpg": JPEG})
    os.symlink(data / "train" / "cat.0.jpg", data / "train" / "cat.1.jpg")       # file inside: followed
    os.symlink(data / ".store" / "test1", data / "test1")                          # folder inside: followed
    os.symlink(outside / "cat.9.jpg", data / "train" / "cat.9.jpg")               # file outside
    os.symlink(outside / "more", data / "more")                                    # folder outside
    os.symlink(data, data / "train" / "loop")                                      # loop back to DATA
    os.symlink(data / "train", data / "test1" / "again")                          # a folder already found
    os.symlink(data / "train" / "gone.jpg", data / "train" / "dangling.jpg")
    disc = find_images(data)
    assert _table(disc) == [("test1/1.jpg", "test1", None), ("train/cat.0.jpg", "train", "cat"),
                            ("train/cat.1.jpg", "train", "cat"), ("train/dog.0.jpg", "train", "dog")]
    # The link's checked target is what is read: a link re-pointed outside DATA after discovery leads nowhere new.
    assert disc.records[2].path == os.path.realpath(data / "train" / "cat.0.jpg")
    assert disc.skipped == {"symlink outside DATA": 2, "symlink to a folder already found": 2, "broken symlink": 1,
                            "hidden or system folder (not searched)": 1}
    assert ("more", "symlink outside DATA") in disc.skipped_examples


def test_unsafe_duplicate_and_nested_zip_members_are_skipped(tmp_path):
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as zf:
        for name in ("../evil.jpg", "/abs.jpg", "a/../../b.jpg", "./c.jpg", "C:/win.jpg", "ok/cat.0.jpg",
                     "inner.zip"):
            zf.writestr(name, JPEG)
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("ok/cat.0.jpg", PNG)
    disc = find_images(tmp_path / "d.zip")
    assert [r.member for r in disc.records] == ["ok/cat.0.jpg"]
    assert disc.skipped == {"unsafe zip member path": 5, "duplicate zip member": 1, "zip inside a zip (not read)": 1}


def test_labels_csv_overrides_and_names_unmatched(tmp_path):
    _write(tmp_path / "test1", KAGGLE_TEST)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("\ufeffimage_id,label,source\n1.jpg,Dog,vet\n\nmissing.jpg,cat,x\n", encoding="utf-8")
    labels = read_labels_csv(csv_path)
    assert labels == {"1.jpg": "dog", "missing.jpg": "cat"}
    disc, unmatched = apply_labels(find_images(tmp_path / "test1"), labels)
    assert _table(disc) == [("1.jpg", None, "dog"), ("2.jpg", None, None)]
    assert unmatched == ["missing.jpg"]
    # Labels given directly (not read from a CSV) follow the same lower-case rule as discovered ones.
    assert apply_labels(disc, {"2.jpg": "Cat"}) == (replace(disc, records=(disc.records[0], replace(
        disc.records[1], label="cat"))), [])


@pytest.mark.parametrize("text, message", [
    ("id,label\n1.jpg,cat\n", "header with columns image_id,label"),
    ("", "header with columns image_id,label"),
    ("image_id,label\n", "has a header but no rows"),
    ("image_id,label\n1.jpg,\n", "line 2: empty image_id or label"),
    ("image_id,label\n1.jpg,cat\n1.jpg,dog\n", "line 3: '1.jpg' has two labels"),
])
def test_bad_labels_csv_names_file_and_problem(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as err:
        read_labels_csv(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_labels_csv(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_labels_csv(tmp_path / "nope.csv")


def test_order_is_sorted_and_independent_of_creation_order(tmp_path):
    names = [f"{c}.{i}.jpg" for c in ("dog", "cat") for i in (3, 11, 2)]
    _write(tmp_path / "a", {n: JPEG for n in names})
    _write(tmp_path / "b", {n: JPEG for n in reversed(names)})
    ids_a = [r.image_id for r in find_images(tmp_path / "a").records]
    assert ids_a == sorted(names)
    assert ids_a == [r.image_id for r in find_images(tmp_path / "b").records]
    # A zip lists members in the order they were written, not sorted.
    _zip(tmp_path / "c.zip", {f"x/{n}": JPEG for n in reversed(names)} | {n: JPEG for n in names})
    assert [r.image_id for r in find_images(tmp_path / "c.zip").records] == sorted(names + [f"x/{n}" for n in names])


def test_skipped_examples_are_capped_but_counts_are_not(tmp_path):
    _write(tmp_path, {f"note{i:02}.txt": b"x" for i in range(25)} | {"cat.0.jpg": JPEG})
    disc = find_images(tmp_path)
    assert disc.skipped == {"not an image extension": 25}
    assert len(disc.skipped_examples) == 20 and disc.skipped_examples[0] == ("note00.txt", "not an image extension")


def test_missing_empty_and_corrupt_data(tmp_path):
    with pytest.raises(DataError, match=r"DATA '.*nope' does not exist"):
        find_images(tmp_path / "nope")
    _write(tmp_path / "empty", {".DS_Store": b"x", "notes.txt": b"x", "sub/readme.md": b"x"})
    with pytest.raises(DataError, match=r"Found 0 images in '.*empty' \(3 other files skipped\)\. "
                                        r"Supported image extensions are .*\.jpg"):
        find_images(tmp_path / "empty")
    _zip(tmp_path / "dogs-vs-cats.zip", {"train.zip": b"x", "test1.zip": b"x", "sampleSubmission.csv": b"x"})
    with pytest.raises(DataError, match=r"\(3 other files skipped\).*unzip it once and pass the folder"):
        find_images(tmp_path / "dogs-vs-cats.zip")
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="neither a folder nor a readable .zip"):
        find_images(tmp_path / "bad.zip")
