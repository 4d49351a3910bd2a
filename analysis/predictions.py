"""Per-image prediction columns for one batch: every file gets a row, ok or not."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from analysis import storage
from analysis.sources import ImageRecord


def make_prediction_rows(records: Sequence[ImageRecord], indices: Sequence[int], ok: Sequence[bool],
                         errors: Sequence[str | None], widths: Sequence[int | None], heights: Sequence[int | None],
                         formats: Sequence[str | None], classes: Sequence[str], class_logits: np.ndarray,
                         probs: np.ndarray, imagenet_top1: np.ndarray | None,
                         imagenet_categories: Sequence[str] | None) -> dict[str, list[Any]]:
    """Columns of the predictions table for one batch. class_logits, probs: (B_ok, K); imagenet_top1: (B_ok,)."""
    cols: dict[str, list[Any]] = {name: [] for name in (
        storage.IMAGE_ID, storage.SPLIT, storage.LABEL, storage.STATUS, storage.ERROR, storage.WIDTH,
        storage.HEIGHT, storage.FORMAT, storage.PRED, storage.CONFIDENCE, storage.CORRECT)}
    for c in classes:
        cols[storage.logit_column(c)] = []
        cols[storage.prob_column(c)] = []
    if imagenet_top1 is not None:
        cols[storage.IMAGENET_TOP1] = []
        cols[storage.IMAGENET_TOP1_INDEX] = []
    pred_idx = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    j = 0  # position among the ok items
    for index, good, error, w, h, fmt in zip(indices, ok, errors, widths, heights, formats):
        rec = records[index]
        cols[storage.IMAGE_ID].append(rec.image_id)
        cols[storage.SPLIT].append(rec.split)
        cols[storage.LABEL].append(rec.label)
        cols[storage.STATUS].append(storage.STATUS_OK if good else storage.STATUS_ERROR)
        cols[storage.ERROR].append(None if good else error)
        cols[storage.WIDTH].append(w)
        cols[storage.HEIGHT].append(h)
        cols[storage.FORMAT].append(fmt)
        if good:
            k = int(pred_idx[j])
            pred = classes[k]
            for ci, c in enumerate(classes):
                cols[storage.logit_column(c)].append(float(class_logits[j, ci]))
                cols[storage.prob_column(c)].append(float(probs[j, ci]))
            cols[storage.PRED].append(pred)
            cols[storage.CONFIDENCE].append(float(probs[j, k]))
            cols[storage.CORRECT].append(None if rec.label is None or rec.label not in classes
                                         else rec.label == pred)
            if imagenet_top1 is not None:
                t = int(imagenet_top1[j])
                cols[storage.IMAGENET_TOP1].append(imagenet_categories[t] if imagenet_categories else str(t))
                cols[storage.IMAGENET_TOP1_INDEX].append(t)
            j += 1
        else:
            for c in classes:
                cols[storage.logit_column(c)].append(None)
                cols[storage.prob_column(c)].append(None)
            for name in (storage.PRED, storage.CONFIDENCE, storage.CORRECT):
                cols[name].append(None)
            if imagenet_top1 is not None:
                cols[storage.IMAGENET_TOP1].append(None)
                cols[storage.IMAGENET_TOP1_INDEX].append(None)
    return cols
