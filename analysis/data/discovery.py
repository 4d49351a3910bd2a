"""Finding the images under DATA: a folder, a .zip read in place, or a parent folder of several, with splits and labels.

analysis.data.filetree lists the files as a tree of folders (a zip is a folder too); this module decides what each
folder means from what it holds: Kaggle flat (label from the file name), class folders, unlabeled, a wrapper around
one folder, or a parent of splits, and makes one sorted record per image.

Meaning wins over spelling: given the model's classes, a folder whose name spells one of them (in any case, or as a
plural: Cat/, cats/, DOGS/) is a class folder whatever its files are called (Oxford-IIIT's cats/Abyssinian_14.jpg is
a cat, not an 'abyssinian'); a Kaggle-style name prefix labels an image only in a folder that names no class.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Sequence

from analysis.data.filetree import (
    IMAGE_EXTENSIONS,
    ZIP_ERRORS,
    Folder,
    Skips,
    count_images,
    read_folder_tree,
    read_zip_tree,
    skip_reason,
)
from analysis.data.names import make_id_part
from analysis.data.sources import ImageRecord

__all__ = [
    "IMAGE_EXTENSIONS",
    "PLURAL_ENDINGS",
    "SPLIT_NAMES",
    "DataError",
    "DataTree",
    "Discovery",
    "find_images",
    "read_data_tree",
]

SPLIT_NAMES = frozenset({"train", "test", "test1", "val", "valid", "validation", "dev"})
PLURAL_ENDINGS = ("s", "es")  # a folder named a class plus one of these names that class (Keras's cats/, dogs/)
# Kaggle-style names: the label is the prefix of letters before the first '.', '_' or '-', whatever follows it up to
# the extension (cat.0.jpg, dog_12.png, cat.fluffy.jpg, cat.ñandú 9027.jpg). cat.jpg alone names no label.
_LABELED_NAME = re.compile(r"^([^\W\d_]+)[._-].+\.[^.]+$", re.DOTALL)


class DataError(ValueError):
    """DATA or the labels file cannot be used; the message is one line meant for the user."""


@dataclass(frozen=True)
class Discovery:
    root: str  # absolute DATA path
    layout: str  # for the log: "parent: test1=unlabeled, train=kaggle-flat"
    records: tuple[ImageRecord, ...]  # sorted by image_id
    skipped: dict[str, int]  # reason -> files found but not analyzed
    skipped_examples: tuple[tuple[str, str], ...]  # (path relative to DATA, reason), the first few

    @property
    def n_images(self) -> int:
        return len(self.records)


@dataclass(frozen=True)
class DataTree:
    """DATA's files as read (names only), before any layout is decided: read once, early, and laid out later, when
    the model's classes are known."""

    shown: str  # DATA as the user gave it
    root: str  # absolute DATA path
    top: Folder
    skips: Skips


# ---------------------------------------------------------------------------------------------------------------
# Deciding layouts and making records.


def _kids(folder: Folder) -> list[Folder]:
    return [f for _, f in sorted(folder.folders.items()) if f.total]


def _name_labels(names: list[str]) -> list[str | None] | None:
    """Labels from Kaggle-style names (cat.0.jpg -> cat) when most names carry one, else None."""
    labels = [m.group(1).lower() if (m := _LABELED_NAME.match(n)) else None for n in names]
    return labels if 2 * (len(labels) - labels.count(None)) > len(labels) else None


def _class_names(classes: Sequence[str] | None) -> frozenset[str]:
    """The folder labels that name one of `classes`: each class, and each class plus a plural ending; lower-cased."""
    return frozenset(c.lower() + e for c in classes or () for e in ("", *PLURAL_ENDINGS))


def _kind(folder: Folder, names: frozenset[str]) -> str:
    """'flat', 'wrapper' (one folder and nothing else: look inside), 'parent' (of splits) or 'classes'.

    `names`: the folder labels that name a class (_class_names); such a folder is a class, never a split."""
    if folder.kind is None:
        kids = _kids(folder)
        if not kids:
            folder.kind = "flat"
        elif len(kids) == 1 and not folder.images and not kids[0].is_zip and _label(kids[0]) not in names:
            folder.kind = "wrapper"
        elif any(k.is_zip or k.name.lower() in SPLIT_NAMES or _holds_dataset(k, names) for k in kids):
            folder.kind = "parent"
        else:
            folder.kind = "classes"
    return folder.kind


def _holds_dataset(folder: Folder, names: frozenset[str]) -> bool:
    """Whether a child folder is a dataset of its own (a split) rather than one class."""
    if _label(folder) in names:
        return False
    while _kind(folder, names) == "wrapper":
        folder = _kids(folder)[0]
    if _kind(folder, names) == "flat":
        # Kaggle's train/ names both classes; a class folder whose files are named after it (Keras's
        # cats_and_dogs_small/train/cats/cat.0.jpg) names one, and must stay a class.
        labels = _name_labels(folder.images)
        return labels is not None and len(set(labels) - {None}) >= 2
    return not folder.images  # class folders or a parent of its own; images beside subfolders: one class


def _add(out: list[ImageRecord], folder: Folder, split: str | None, labels) -> None:
    for name, label in zip(folder.images, labels):
        image_id = folder.rel + make_id_part(name)
        if folder.member is None:
            path = folder.targets.get(name) or os.path.join(folder.path, name)
            out.append(ImageRecord(image_id, split, label, path))
        else:
            out.append(ImageRecord(image_id, split, label, folder.path, folder.member + name))


def _add_class(out: list[ImageRecord], folder: Folder, split: str | None, label: str) -> None:
    _add(out, folder, split, [label] * len(folder.images))
    for child in folder.folders.values():
        _add_class(out, child, split, label)


def _image_names(folder: Folder) -> set[str]:
    names = set(folder.images)
    for child in folder.folders.values():
        names |= _image_names(child)
    return names


def _add_named(out: list[ImageRecord], folder: Folder, split: str | None) -> None:
    """A subfolder of a Kaggle flat folder (train/extra/cat.1.jpg): labels from the file names, all the way down."""
    _add(out, folder, split, [m.group(1).lower() if (m := _LABELED_NAME.match(n)) else None for n in folder.images])
    for child in folder.folders.values():
        _add_named(out, child, split)


def _label(folder: Folder) -> str:
    """A class (or split) name from a folder name: as it stands in image ids, lower-cased."""
    return make_id_part(folder.name).lower()


def _emit(folder: Folder, split: str | None, out: list[ImageRecord], skips: Skips, names: frozenset[str]) -> str:
    """Append the folder's records to `out`; returns its layout in words."""
    kind = _kind(folder, names)
    zip_of = "zip of " if folder.is_zip else ""
    kids = _kids(folder)
    if kind == "wrapper":
        inner = kids[0]
        if split is None and inner.name.lower() in SPLIT_NAMES:
            split = _label(inner)
        return f"{zip_of}{_emit(inner, split, out, skips, names)} ({make_id_part(inner.name)}/)"
    labels = _name_labels(folder.images)
    _add(out, folder, split, labels or [None] * len(folder.images))
    if kind == "flat":
        return zip_of + ("kaggle-flat" if labels else "unlabeled")
    loose = f" + {len(folder.images)} loose images" if folder.images else ""
    if kind == "classes":
        named = [k for k in kids if labels and _label(k) not in names and _name_labels(list(_image_names(k)))]
        for k in kids:
            if k in named:
                _add_named(out, k, split)
            else:
                _add_class(out, k, split, _label(k))
        if named:
            classes = [_label(k) for k in kids if k not in named]
            return (
                f"{zip_of}kaggle-flat{loose} with subfolders labelled from file names too "
                f"({', '.join(make_id_part(k.name) for k in named)})"
                + (f" and class folders ({', '.join(classes)})" if classes else "")
            )
        return f"{zip_of}class-folders ({', '.join(_label(k) for k in kids)}){loose}"
    parts = []
    by_name = {k.name: k for k in kids}
    class_names = {c.name.lower() for k in kids if _kind(k, names) == "classes" for c in _kids(k)}
    for k in kids:
        if _kind(k, names) == "wrapper" and _kids(k)[0].name.lower() in class_names:
            k.kind = "classes"  # a split holding one class folder, beside splits holding several
    for k in kids:
        stem = k.name[:-4] if k.is_zip else k.name
        shown = make_id_part(stem)
        # Kaggle's train.zip, unzipped where it lies, leaves train/ beside it: analyzing both would count twice.
        twin = by_name.get(stem)
        if k.is_zip and twin is not None and not twin.is_zip and _image_names(twin) == _image_names(k):
            skips.add(k.rel.rstrip("/"), f"zip already unpacked beside it ({shown}/)", k.total)
            continue
        parts.append(f"{shown}={_emit(k, shown if split is None else f'{split}/{shown}', out, skips, names)}")
    return f"{zip_of}parent: {', '.join(parts)}{loose}"


def read_data_tree(data: str | os.PathLike) -> DataTree:
    """The files under DATA (a folder or a .zip), names only; raises DataError when DATA holds no image to analyze."""
    shown = os.fspath(data)
    root = os.path.abspath(shown)
    if not os.path.exists(root):
        raise DataError(f"DATA {shown!r} does not exist")
    skips = Skips()
    if os.path.isdir(root):
        try:
            top = read_folder_tree(root, skips)
        except OSError as e:
            raise DataError(f"DATA {shown!r} cannot be read ({e.strerror or e})") from None
    elif skip_reason(os.path.basename(root)) is None:
        raise DataError(
            f"DATA {shown!r} is one image file; DATA must be a folder or a .zip of images "
            f"(to look at one image, use make inspect IMAGE={shown})"
        )
    else:
        try:
            top = read_zip_tree(os.path.basename(root), os.path.realpath(root), "", skips)
        except ZIP_ERRORS as e:
            raise DataError(
                f"DATA {shown!r} is neither a folder nor a readable .zip archive ({type(e).__name__}: {e})"
            ) from None
    if count_images(top) == 0:
        # Kaggle's own download is a zip of train.zip and test1.zip: say what to do rather than only what failed.
        hint = (
            "; it holds zip archives inside a zip: unzip it once and pass the folder"
            if skips.counts["zip inside a zip (not read)"]
            else ""
        )
        raise DataError(
            f"Found 0 images in {shown!r} ({sum(skips.counts.values())} other files skipped). "
            f"Supported image extensions are {', '.join(sorted(IMAGE_EXTENSIONS))}{hint}"
        )
    return DataTree(shown, root, top, skips)


def _forget_kinds(folder: Folder) -> None:
    folder.kind = None
    for child in folder.folders.values():
        _forget_kinds(child)


def find_images(data: str | os.PathLike | DataTree, classes: Sequence[str] | None = None) -> Discovery:
    """Every image under DATA (a folder or a .zip, or its tree read before), with split and label from the layout;
    raises DataError. `classes`: the model's classes, whose folders are class folders whatever their files are
    called (without them, a folder of Kaggle-style names is labelled by the names)."""
    tree = data if isinstance(data, DataTree) else read_data_tree(data)
    _forget_kinds(tree.top)  # a tree laid out before, without the classes or with others
    skips = Skips()
    skips.counts.update(tree.skips.counts)
    skips.examples.extend(tree.skips.examples)
    records: list[ImageRecord] = []
    layout = _emit(tree.top, None, records, skips, _class_names(classes))
    records.sort(key=lambda r: r.image_id)
    return Discovery(tree.root, layout, tuple(records), dict(sorted(skips.counts.items())), tuple(skips.examples))
