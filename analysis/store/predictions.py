"""Per-image prediction columns for one batch: every file gets a row, ok or not."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from analysis.data.dataset import Batch
from analysis.data.sources import ImageRecord
from analysis.model.vgg16 import LoadedModel
from analysis.store import contract


def make_prediction_rows(
    records: Sequence[ImageRecord],
    batch: Batch,
    loaded: LoadedModel,
    class_logits: np.ndarray,
    probs: np.ndarray,
    imagenet_top1: np.ndarray | None,
) -> dict[str, list[Any]]:
    """Columns of the predictions table for one batch (its files are records[i] for i in batch.indices).
    class_logits, probs: (B_ok, K) in the order of loaded.classes; imagenet_top1: (B_ok,), None for a head that is
    not ImageNet's."""
    classes, imagenet_categories = loaded.classes, loaded.imagenet_categories
    cols: dict[str, list[Any]] = {
        name: []
        for name in (
            contract.IMAGE_ID,
            contract.SPLIT,
            contract.LABEL,
            contract.STATUS,
            contract.ERROR,
            contract.WIDTH,
            contract.HEIGHT,
            contract.FORMAT,
            contract.SHA256,
            contract.PHASH,
            contract.PRED,
            contract.CONFIDENCE,
            contract.CORRECT,
        )
    }
    for c in classes:
        cols[contract.logit_column(c)] = []
        cols[contract.prob_column(c)] = []
    if imagenet_top1 is not None:
        cols[contract.IMAGENET_TOP1] = []
        cols[contract.IMAGENET_TOP1_INDEX] = []
    pred_idx = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    j = 0  # position among the ok items
    columns = (
        batch.indices,
        batch.ok,
        batch.errors,
        batch.widths,
        batch.heights,
        batch.formats,
        batch.sha256s,
        batch.phashes,
    )
    for index, good, error, w, h, fmt, digest, phash in zip(*columns, strict=True):  # a short column drops no row
        rec = records[index]
        cols[contract.IMAGE_ID].append(rec.image_id)
        cols[contract.SPLIT].append(rec.split)
        cols[contract.LABEL].append(rec.label)
        cols[contract.STATUS].append(contract.STATUS_OK if good else contract.STATUS_ERROR)
        cols[contract.ERROR].append(None if good else error)
        cols[contract.WIDTH].append(w)
        cols[contract.HEIGHT].append(h)
        cols[contract.FORMAT].append(fmt)
        cols[contract.SHA256].append(digest)
        cols[contract.PHASH].append(phash if good else None)
        if good:
            k = int(pred_idx[j])
            pred = classes[k]
            for ci, c in enumerate(classes):
                cols[contract.logit_column(c)].append(float(class_logits[j, ci]))
                cols[contract.prob_column(c)].append(float(probs[j, ci]))
            cols[contract.PRED].append(pred)
            cols[contract.CONFIDENCE].append(float(probs[j, k]))
            cols[contract.CORRECT].append(None if rec.label is None or rec.label not in classes else rec.label == pred)
            if imagenet_top1 is not None:
                t = int(imagenet_top1[j])
                cols[contract.IMAGENET_TOP1].append(imagenet_categories[t] if imagenet_categories else str(t))
                cols[contract.IMAGENET_TOP1_INDEX].append(t)
            j += 1
        else:
            for c in classes:
                cols[contract.logit_column(c)].append(None)
                cols[contract.prob_column(c)].append(None)
            for name in (contract.PRED, contract.CONFIDENCE, contract.CORRECT):
                cols[name].append(None)
            if imagenet_top1 is not None:
                cols[contract.IMAGENET_TOP1].append(None)
                cols[contract.IMAGENET_TOP1_INDEX].append(None)
    return cols
