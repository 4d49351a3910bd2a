"""Labels beside discovery's: a CSV that overrides them, and folder names that are plurals of the model's classes.

Both run after discovery, on its records; the CSV last, so that what the user wrote wins.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import replace
from typing import Iterable, Sequence

from analysis.data.discovery import PLURAL_ENDINGS, DataError, Discovery

SHOWN = 10  # ids named in a message; the rest are counted


def read_labels_csv(path: str | os.PathLike) -> dict[str, str]:
    """{image_id: label} from a CSV with an `image_id,label` header (other columns ignored); labels lower-cased."""
    name = os.fspath(path)
    labels: dict[str, str] = {}
    try:
        with open(name, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip().lower() for h in next(reader, [])]
            if "image_id" not in header or "label" not in header:
                raise DataError(
                    f"labels file {name!r}: the first line must be a header with columns "
                    f"image_id,label; got {','.join(header)!r}"
                )
            i, j = header.index("image_id"), header.index("label")
            for row in reader:
                if not any(c.strip() for c in row):
                    continue
                image_id = row[i].strip() if i < len(row) else ""
                label = row[j].strip().lower() if j < len(row) else ""
                if not image_id or not label:
                    raise DataError(f"labels file {name!r} line {reader.line_num}: empty image_id or label")
                if labels.setdefault(image_id, label) != label:
                    raise DataError(
                        f"labels file {name!r} line {reader.line_num}: {image_id!r} has two labels, "
                        f"{labels[image_id]!r} and {label!r}"
                    )
    except FileNotFoundError:
        raise DataError(f"labels file {name!r} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"labels file {name!r} cannot be read ({type(e).__name__}: {e})") from None
    if not labels:
        raise DataError(f"labels file {name!r} has a header but no rows")
    return labels


def apply_labels(discovery: Discovery, labels: dict[str, str]) -> tuple[Discovery, list[str]]:
    """Labels from `labels` replace discovered ones (others are kept); also returns the ids that matched no image,
    in the CSV's order (describe_ids names them).

    An id is taken as the tables write it (a backslash there is an escape: analysis.data.names); one that matches no
    image but does with its backslashes read as '/' is a Windows path, and is taken that way (match_labels).
    """
    by_id, unmatched = match_labels(labels, (r.image_id for r in discovery.records))
    records = tuple(replace(r, label=by_id[r.image_id]) if r.image_id in by_id else r for r in discovery.records)
    return replace(discovery, records=records), unmatched


def describe_ids(ids: Sequence[str]) -> str:
    """The first ten ids, quoted, then how many more: for a message that names what it counts."""
    shown = ", ".join(repr(i) for i in ids[:SHOWN])
    return shown + (f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else "")


def match_class_names(discovery: Discovery, classes: Sequence[str]) -> tuple[Discovery, dict[str, str]]:
    """Labels that are plurals of the model's classes (Keras's cats/, dogs/ -> cat, dog) mapped onto them.

    A label is mapped when exactly one class plus 's' or 'es' spells it, no other label maps to that class, and
    the class itself is not a label already (cat/ beside cats/ is two folders, not one class). Returns the records
    and {folder label: class} for what was mapped; labels already among the classes, or ambiguous, stay.
    """
    found = sorted({r.label for r in discovery.records if r.label is not None})
    known = set(classes)
    candidates = {
        lab: [c for c in classes if any(lab == c + e for e in PLURAL_ENDINGS)] for lab in found if lab not in known
    }
    targets = [c[0] for c in candidates.values() if len(c) == 1]
    mapping = {
        lab: c[0] for lab, c in candidates.items() if len(c) == 1 and targets.count(c[0]) == 1 and c[0] not in found
    }
    if not mapping:
        return discovery, {}
    records = tuple(replace(r, label=mapping[r.label]) if r.label in mapping else r for r in discovery.records)
    return replace(discovery, records=records), mapping


def describe_plural_twins(discovery: Discovery, classes: Sequence[str]) -> list[str]:
    """One line for each class whose folder stands beside a plural of it (cat/ beside cats/), to log as a warning.

    match_class_names keeps the two apart, as two labels: merging them silently could hide a folder of mistakes,
    and the plural, being none of the classes, gets no `correct`. The user decides: one folder, or a labels CSV.
    """
    counts = Counter(r.label for r in discovery.records if r.label is not None)
    lines = []
    for c in classes:
        for plural in (c + e for e in PLURAL_ENDINGS):
            if c in counts and plural in counts and plural not in classes:
                n = counts[plural]
                lines.append(
                    f"{_where(discovery, c)} and {_where(discovery, plural)} both name the class {c!r}: "
                    f"kept as two labels, and {plural!r} is not a class of the model, so `correct` is null "
                    f"for its {n} image{'s' * (n != 1)}; move them into one folder (or rename one) and "
                    f"rerun, or pass --labels FILE.csv"
                )
    return lines


def _where(discovery: Discovery, label: str) -> str:
    """The folders (as in image ids) whose name gives `label`, for a message; else where the label came from."""
    folders = set()
    for r in discovery.records:
        if r.label == label:
            parts = r.image_id.split("/")[:-1]
            hit = next((i for i, part in enumerate(parts) if part.lower() == label), None)
            if hit is not None:
                folders.add("/".join(parts[: hit + 1]) + "/")
    if not folders:
        return f"the images labelled {label!r} by their file names"
    return f"folder{'s' * (len(folders) > 1)} {', '.join(sorted(folders))}"


def match_labels(labels: dict[str, str], image_ids: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """A labels CSV matched to the images' ids: ({image id: label} for the ids found, the CSV's ids that match no
    image, in the CSV's order). An id matches as written, else with its backslashes read as '/' (a Windows path).
    The extract's apply_labels and the report's --labels both match this way."""
    found = set(image_ids)
    matched: dict[str, str] = {}
    unmatched: list[str] = []
    for image_id, label in labels.items():
        if image_id not in found and image_id.replace("\\", "/") in found:
            image_id = image_id.replace("\\", "/")
        if image_id in found:
            matched[image_id] = label.lower()
        else:
            unmatched.append(image_id)
    return matched, unmatched
