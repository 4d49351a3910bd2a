"""Labels given at report time, and labels outside the model's classes.

Labels are data about the images, not about the network's outputs: a labels CSV given to the report replaces the
run's labels in the predictions frame once, before any statistic is computed, so every later stage (statistics,
rankings, galleries, accuracy, dataset checks) sees the same labels and nothing is extracted again.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

import pandas as pd

from analysis.data.labels import SHOWN, describe_ids
from analysis.store import contract


def relabel_predictions(
    predictions: pd.DataFrame, labels: Mapping[str, str], classes: Sequence[str]
) -> tuple[pd.DataFrame, int]:
    """`predictions` with `labels` ({image id: label}) as its labels (images not named keep theirs), and `correct`
    recomputed for every row: null unless the image is ok and its label is a class. A label that spells a class in
    another case is that class. Also returns how many images' labels changed."""
    by_case = {c.lower(): c for c in classes}
    new = predictions[contract.IMAGE_ID].map(labels)
    new = new.map(lambda v: by_case.get(v.lower(), v) if isinstance(v, str) else v)
    old = predictions[contract.LABEL]
    named = new.notna()
    changed = int((named & (old.isna() | (new != old))).sum())
    out = predictions.copy()
    out[contract.LABEL] = new.where(named, old).astype(object)
    return out.assign(**{contract.CORRECT: compute_correct(out, classes)}), changed


def compute_correct(predictions: pd.DataFrame, classes: Sequence[str]) -> pd.Series:
    """label == pred for ok images whose label is a class; null otherwise (as the extract writes it)."""
    label, pred = predictions[contract.LABEL], predictions[contract.PRED]
    known = (predictions[contract.STATUS] == contract.STATUS_OK) & label.isin(classes) & pred.notna()
    return (label == pred).astype(object).where(known, None)


def count_outside_classes(predictions: pd.DataFrame, classes: Sequence[str]) -> dict[str, int]:
    """{label: images} of the labels that are not among `classes`, most common first: kept, their `correct` null."""
    label = predictions[contract.LABEL]
    return dict(Counter(label[label.notna() & ~label.isin(classes)]).most_common())


def describe_outside_classes(counts: Mapping[str, int], classes: Sequence[str]) -> str | None:
    """'3 images carry labels outside the classes cat, dog: 'kitten' (2), 'fox' (1); ...', or None when none do."""
    if not counts:
        return None
    shown = ", ".join(f"{label!r} ({n})" for label, n in list(counts.items())[:SHOWN])
    more = f" and {len(counts) - SHOWN} more labels" if len(counts) > SHOWN else ""
    n = sum(counts.values())
    return (
        f"{n} image{'s' if n != 1 else ''} carr{'y' if n != 1 else 'ies'} labels outside the classes "
        f"{', '.join(classes)}: {shown}{more}. They are kept, in no class, with a null `correct`."
    )


def describe_unmatched(csv: str, unmatched: Sequence[str]) -> str | None:
    """The CSV's ids that match no image of the run: the first SHOWN named, and their count."""
    if not unmatched:
        return None
    n = len(unmatched)
    return (
        f"labels file {csv!r}: {n} {'ids match' if n != 1 else 'id matches'} no image of the "
        f"run: {describe_ids(unmatched)}; an id is the image's path under DATA as predictions/ writes it"
    )
