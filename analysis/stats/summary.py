"""A run's answers counted once from the predictions frame: images per class, errors by reason, the labeled images
and how many the model got right, the confusion matrix. The report's page and figures both read it."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.store import contract


def compute_accuracy(correct: int, labeled: int) -> float | None:
    """The share of the labeled images predicted right; None when none is labeled."""
    return correct / labeled if labeled else None


@dataclasses.dataclass(frozen=True, eq=False)
class PredictionSummary:
    """What the report says about the predictions. `labeled` counts the ok images with a label among the classes;
    the confusion matrix also needs the prediction among them (an ok image's always is), so its accuracy is its own."""

    classes: tuple[str, ...]
    group_by: str  # contract.GROUP_LABEL or contract.GROUP_PRED: what `counts` counts
    found: int  # every image file, good or bad
    ok: int
    counts: dict[str, int]  # class -> ok images of it, by label (or by prediction on an unlabeled run)
    errors: dict[str, int]  # error reason -> images, the most frequent first
    labeled: int
    correct: int  # labeled images predicted as labelled
    matrix: np.ndarray  # (K, K) ok images with label and prediction among the classes; rows true

    @property
    def accuracy(self) -> float | None:
        """Over the labeled images."""
        return compute_accuracy(self.correct, self.labeled)

    @property
    def matrix_accuracy(self) -> float | None:
        """Over the confusion matrix's images."""
        return compute_accuracy(int(np.trace(self.matrix)), int(self.matrix.sum()))


def compute_prediction_summary(predictions: pd.DataFrame, classes: Sequence[str], group_by: str) -> PredictionSummary:
    """The summary of a predictions frame (one row per image file), images counted per class by `group_by`."""
    classes = tuple(classes)
    ok = predictions[predictions[contract.STATUS] == contract.STATUS_OK]
    column = ok[contract.LABEL] if group_by == contract.GROUP_LABEL else ok[contract.PRED]
    labeled = ok[ok[contract.LABEL].isin(classes)]
    both = labeled[labeled[contract.PRED].isin(classes)]
    matrix = pd.crosstab(
        pd.Categorical(both[contract.LABEL], classes), pd.Categorical(both[contract.PRED], classes), dropna=False
    ).to_numpy()
    matrix.flags.writeable = False
    return PredictionSummary(
        classes=classes,
        group_by=group_by,
        found=len(predictions),
        ok=len(ok),
        counts={c: int((column == c).sum()) for c in classes},
        errors={str(k): int(v) for k, v in predictions[contract.ERROR].dropna().value_counts().items()},
        labeled=len(labeled),
        correct=int((labeled[contract.PRED] == labeled[contract.LABEL]).sum()),
        matrix=matrix,
    )
