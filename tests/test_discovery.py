"""Discovery's layouts on trees made here: flat folders, class folders, zips, parents of several, and the order."""

from __future__ import annotations

from analysis.data.discovery import find_images
from analysis.data.sources import read_bytes
from tests.helpers import JPEG, KAGGLE_TEST, KAGGLE_TRAIN, PNG, record_rows, write_files, write_zip


def test_kaggle_flat_labels_from_names_and_skips_non_images(tmp_path, monkeypatch):
    write_files(
        tmp_path / "train",
        {
            **KAGGLE_TRAIN,
            "extra.png": PNG,
            ".DS_Store": b"x",
            "Thumbs.db": b"x",
            "notes.txt": b"x",
            ".hidden.jpg": JPEG,
            "__MACOSX/._cat.0.jpg": b"x",
        },
    )
    monkeypatch.chdir(tmp_path)  # a relative DATA still gives absolute paths: workers may run elsewhere
    disc = find_images("train")
    assert record_rows(disc) == [
        ("cat.0.jpg", None, "cat"),
        ("cat.1.jpg", None, "cat"),
        ("dog.0.jpg", None, "dog"),
        ("dog.10.JPG", None, "dog"),
        ("extra.png", None, None),
    ]
    assert disc.layout == "kaggle-flat"
    assert disc.root == str(tmp_path / "train")
    assert disc.records[0].path == str(tmp_path / "train" / "cat.0.jpg") and disc.records[0].member is None
    assert disc.skipped == {
        "system file": 2,
        "not an image extension": 1,
        "hidden file": 1,
        "hidden or system folder (not searched)": 1,
    }
    assert ("notes.txt", "not an image extension") in disc.skipped_examples
    assert disc.n_images == 5


def test_class_folders_label_from_folder_including_nested_images(tmp_path):
    write_files(
        tmp_path / "PetImages",
        {"Cat/1.jpg": JPEG, "Cat/deeper/2.jpg": JPEG, "Cat/Thumbs.db": b"x", "Dog/1.jpg": JPEG, "Dog/10.png": PNG},
    )
    disc = find_images(tmp_path / "PetImages")
    assert record_rows(disc) == [
        ("Cat/1.jpg", None, "cat"),
        ("Cat/deeper/2.jpg", None, "cat"),
        ("Dog/1.jpg", None, "dog"),
        ("Dog/10.png", None, "dog"),
    ]
    assert disc.layout == "class-folders (cat, dog)"
    assert disc.skipped == {"system file": 1}


def test_unlabeled_flat_folder(tmp_path):
    write_files(tmp_path / "test1", {**KAGGLE_TEST, "10.png": PNG})
    disc = find_images(tmp_path / "test1")
    assert record_rows(disc) == [("1.jpg", None, None), ("10.png", None, None), ("2.jpg", None, None)]
    assert disc.layout == "unlabeled"


def test_zip_read_in_place_and_read_bytes_gets_the_member(tmp_path):
    members = {"cat.0.jpg": JPEG, "dog.0.png": PNG}
    write_zip(tmp_path / "flat.zip", members)
    disc = find_images(tmp_path / "flat.zip")
    assert record_rows(disc) == [("cat.0.jpg", None, "cat"), ("dog.0.png", None, "dog")]
    assert disc.layout == "zip of kaggle-flat"
    for rec in disc.records:
        assert rec.path == str(tmp_path / "flat.zip") and rec.member == rec.image_id
        assert read_bytes(rec, max_bytes=1 << 20) == members[rec.member]
    assert not any(p.name != "flat.zip" for p in tmp_path.iterdir())  # nothing extracted


def test_zip_with_wrapper_folder_gives_split_and_skips_macosx(tmp_path):
    write_zip(
        tmp_path / "train.zip",
        {f"train/{n}": b for n, b in KAGGLE_TRAIN.items()}
        | {"__MACOSX/train/._cat.0.jpg": b"x", "train/.DS_Store": b"x"},
        dirs=("train/", "__MACOSX/"),
    )
    disc = find_images(tmp_path / "train.zip")
    assert [r.image_id for r in disc.records] == [f"train/{n}" for n in sorted(KAGGLE_TRAIN)]
    assert {r.split for r in disc.records} == {"train"}
    assert [r.label for r in disc.records] == ["cat", "cat", "dog", "dog"]
    assert disc.layout == "zip of kaggle-flat (train/)"
    assert disc.skipped == {"system file": 2}
    assert read_bytes(disc.records[0], 1 << 20) == JPEG


def test_wrapper_with_other_name_keeps_split_none_and_finds_class_folders(tmp_path):
    # The layout of Microsoft's kagglecatsanddogs zip: one folder beside two documents.
    write_zip(
        tmp_path / "pets.zip",
        {
            "PetImages/Cat/0.jpg": JPEG,
            "PetImages/Dog/0.jpg": JPEG,
            "readme[1].txt": b"x",
            "CDLA-Permissive-2.0.pdf": b"x",
        },
    )
    disc = find_images(tmp_path / "pets.zip")
    assert record_rows(disc) == [("PetImages/Cat/0.jpg", None, "cat"), ("PetImages/Dog/0.jpg", None, "dog")]
    assert disc.layout == "zip of class-folders (cat, dog) (PetImages/)"
    assert disc.skipped == {"not an image extension": 2}


def test_parent_of_train_and_test1_folders(tmp_path):
    write_files(tmp_path / "train", KAGGLE_TRAIN)
    write_files(tmp_path / "test1", KAGGLE_TEST)
    disc = find_images(tmp_path)
    assert record_rows(disc) == [
        ("test1/1.jpg", "test1", None),
        ("test1/2.jpg", "test1", None),
        ("train/cat.0.jpg", "train", "cat"),
        ("train/cat.1.jpg", "train", "cat"),
        ("train/dog.0.jpg", "train", "dog"),
        ("train/dog.10.JPG", "train", "dog"),
    ]
    assert disc.layout == "parent: test1=unlabeled, train=kaggle-flat"


def test_parent_of_train_zip_and_test1_zip(tmp_path):
    write_zip(tmp_path / "train.zip", {f"train/{n}": b for n, b in KAGGLE_TRAIN.items()})
    write_zip(tmp_path / "test1.zip", {f"test1/{n}": b for n, b in KAGGLE_TEST.items()})
    (tmp_path / "sampleSubmission.csv").write_text("id,label\n")
    disc = find_images(tmp_path)
    assert record_rows(disc)[:3] == [
        ("test1.zip/test1/1.jpg", "test1", None),
        ("test1.zip/test1/2.jpg", "test1", None),
        ("train.zip/train/cat.0.jpg", "train", "cat"),
    ]
    assert disc.n_images == 6
    assert disc.layout == "parent: test1=zip of unlabeled (test1/), train=zip of kaggle-flat (train/)"
    assert disc.skipped == {"not an image extension": 1}
    rec = disc.records[2]
    assert (rec.path, rec.member) == (str(tmp_path / "train.zip"), "train/cat.0.jpg")
    assert read_bytes(rec, 1 << 20) == JPEG


def test_zip_unpacked_beside_itself_is_not_analyzed_twice(tmp_path):
    write_zip(tmp_path / "train.zip", {f"train/{n}": b for n, b in KAGGLE_TRAIN.items()})
    write_files(tmp_path / "train", KAGGLE_TRAIN)
    disc = find_images(tmp_path)
    assert [r.image_id for r in disc.records] == [f"train/{n}" for n in sorted(KAGGLE_TRAIN)]
    assert disc.skipped == {"zip already unpacked beside it (train/)": 4}
    assert disc.skipped_examples == (("train.zip", "zip already unpacked beside it (train/)"),)
    # A partial unpack is not the same data: both are analyzed.
    (tmp_path / "train" / "cat.0.jpg").unlink()
    assert find_images(tmp_path).n_images == 7


def test_mixed_parent_of_zip_class_folders_and_loose_files(tmp_path):
    write_zip(tmp_path / "train.zip", {f"train/{n}": b for n, b in KAGGLE_TRAIN.items()})
    write_files(
        tmp_path, {"PetImages/Cat/1.jpg": JPEG, "PetImages/Dog/1.jpg": JPEG, "loose.png": PNG, "README.txt": b"x"}
    )
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    disc = find_images(tmp_path)
    table = record_rows(disc)
    assert ("loose.png", None, None) in table
    assert ("PetImages/Cat/1.jpg", "PetImages", "cat") in table and ("PetImages/Dog/1.jpg", "PetImages", "dog") in table
    assert ("train.zip/train/dog.0.jpg", "train", "dog") in table
    assert disc.n_images == 7
    assert disc.skipped == {"not an image extension": 1, "unreadable zip": 1}
    assert disc.layout == (
        "parent: PetImages=class-folders (cat, dog), train=zip of kaggle-flat (train/) + 1 loose images"
    )


def test_split_folders_of_class_folders_named_after_their_class(tmp_path):
    # Keras's cats_and_dogs_small: split/class/cat.N.jpg. The class folders must not be taken for splits.
    write_files(
        tmp_path,
        {
            "train/cats/cat.0.jpg": JPEG,
            "train/dogs/dog.0.jpg": JPEG,
            "validation/cats/cat.5.jpg": JPEG,
            "validation/dogs/dog.5.jpg": JPEG,
        },
    )
    disc = find_images(tmp_path)
    assert record_rows(disc) == [
        ("train/cats/cat.0.jpg", "train", "cats"),
        ("train/dogs/dog.0.jpg", "train", "dogs"),
        ("validation/cats/cat.5.jpg", "validation", "cats"),
        ("validation/dogs/dog.5.jpg", "validation", "dogs"),
    ]
    # Without split names, a child holding class folders still makes the root a parent ...
    write_files(tmp_path / "other", {"part1/cat/1.jpg": JPEG, "part1/dog/1.jpg": JPEG, "part2/cat/2.jpg": JPEG})
    assert record_rows(find_images(tmp_path / "other")) == [
        ("part1/cat/1.jpg", "part1", "cat"),
        ("part1/dog/1.jpg", "part1", "dog"),
        ("part2/cat/2.jpg", "part2", "cat"),
    ]
    # ... and so does a child named Kaggle-style with two labels.
    write_files(tmp_path / "third", {"mine/cat.0.jpg": JPEG, "mine/dog.0.jpg": JPEG, "theirs/1.jpg": JPEG})
    assert record_rows(find_images(tmp_path / "third")) == [
        ("mine/cat.0.jpg", "mine", "cat"),
        ("mine/dog.0.jpg", "mine", "dog"),
        ("theirs/1.jpg", "theirs", None),
    ]


def test_order_is_sorted_and_independent_of_creation_order(tmp_path):
    names = [f"{c}.{i}.jpg" for c in ("dog", "cat") for i in (3, 11, 2)]
    write_files(tmp_path / "a", {n: JPEG for n in names})
    write_files(tmp_path / "b", {n: JPEG for n in reversed(names)})
    ids_a = [r.image_id for r in find_images(tmp_path / "a").records]
    assert ids_a == sorted(names)
    assert ids_a == [r.image_id for r in find_images(tmp_path / "b").records]
    # A zip lists members in the order they were written, not sorted.
    write_zip(tmp_path / "c.zip", {f"x/{n}": JPEG for n in reversed(names)} | {n: JPEG for n in names})
    assert [r.image_id for r in find_images(tmp_path / "c.zip").records] == sorted(names + [f"x/{n}" for n in names])
