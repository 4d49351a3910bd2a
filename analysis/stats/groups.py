"""Which class each ok image counts for in the statistics: by its label, or by the class the model predicted."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.store import contract


@dataclasses.dataclass(frozen=True)
class Groups:
    """Which class each ok image counts for: its label, or on an unlabeled run its predicted class."""

    classes: tuple[str, ...]
    by: str  # contract.GROUP_LABEL or contract.GROUP_PRED
    code: pd.Series  # image_id -> class index; images in no class are absent

    def codes_of(self, image_ids: Sequence[str]) -> np.ndarray:
        """(N,) class index of each id, -1 for images in no class."""
        where = self.code.index.get_indexer(pd.Index(image_ids))
        return np.where(where >= 0, self.code.to_numpy()[where], -1).astype(np.int64)


def make_groups(predictions: pd.DataFrame, classes: Sequence[str], by: str | None = None) -> Groups:
    """Ok images grouped by `by`: contract.GROUP_LABEL (their label), contract.GROUP_PRED (the class the model
    predicted), or None: by label when any image has a label among `classes`, otherwise by predicted class.
    Images whose label (or prediction) is not among `classes` are in no class."""
    if by not in (None, contract.GROUP_LABEL, contract.GROUP_PRED):
        raise ValueError(f"make_groups: by={by!r}; use None, {contract.GROUP_LABEL!r} or {contract.GROUP_PRED!r}")
    ok = predictions[predictions[contract.STATUS] == contract.STATUS_OK]
    if by is None:
        by = contract.GROUP_LABEL if ok[contract.LABEL].isin(classes).any() else contract.GROUP_PRED
    column = ok[contract.LABEL if by == contract.GROUP_LABEL else contract.PRED]
    keep = column.isin(classes).to_numpy()
    codes = pd.Categorical(column[keep], categories=list(classes)).codes.astype(np.int64)
    return Groups(tuple(classes), by, pd.Series(codes, index=pd.Index(ok[contract.IMAGE_ID][keep])))
