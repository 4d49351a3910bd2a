"""The concept stage's tables from every image's concept values: concepts ordered by importance (the mean contribution
over the class's images), their share of the layer's contribution, presence AUC, top channels; one row per image x
class x concept. Host memory: 5 float32 per image x class x concept, plus 2 per image x class (residual, total).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from analysis.concepts.discovery import ClassConcepts
from analysis.concepts.values import ConceptValues
from analysis.stats.groups import Groups
from analysis.stats.selectivity import compute_rank_auc
from analysis.store import concept_contract as cc
from analysis.store import contract

_FIELDS = [f.name for f in dataclasses.fields(ConceptValues)]


class ConceptRows:
    """Each processed image's ConceptValues for every class with concepts, gathered batch by batch."""

    def __init__(self, classes: Sequence[int]):
        self.ids: list[str] = []
        self._parts: dict[int, list[ConceptValues]] = {j: [] for j in classes}

    def add(self, ids: Sequence[str], values: dict[int, ConceptValues]) -> None:
        self.ids += list(ids)
        for j, part in self._parts.items():
            part.append(values[j])

    def gather(self, j: int) -> dict[str, np.ndarray]:
        """Class j's values over every image added, by field of ConceptValues: (N, k) or (N,) float32."""
        parts = self._parts[j]
        return {name: torch.cat([getattr(p, name) for p in parts]).numpy() for name in _FIELDS}


@dataclasses.dataclass(frozen=True)
class ConceptTables:
    images: pd.DataFrame  # concept_contract.CONCEPT_IMAGES_COLUMNS
    concepts: pd.DataFrame  # concept_contract.CONCEPTS_COLUMNS
    residuals: pd.DataFrame  # image_id, class, residual, total: the part of the layer's contribution no concept holds
    classes: dict[str, dict]  # per class: k, iterations, reconstruction error, counts, residual share (metadata)


def make_concept_tables(
    rows: ConceptRows, concepts: dict[int, ClassConcepts], groups: Groups, ok_ids: Sequence[str], layer: str
) -> ConceptTables:
    """The two tables: rows by class, then image in `ok_ids` order, then concept (0 = most important)."""
    rank = pd.Index(list(ok_ids)).get_indexer(pd.Index(rows.ids))
    order = np.argsort(rank, kind="stable")
    ids = np.asarray(rows.ids, dtype=object)[order]
    codes = groups.codes_of(list(ids))
    images, summaries, residuals, classes = [], [], [], {}
    for j, found in concepts.items():
        v = {name: a[order] for name, a in rows.gather(j).items()}
        mine = codes == j
        importance = v["contribution"][mine].mean(axis=0, dtype=np.float64)  # (k,) NaN without class images
        by_importance = np.argsort(-np.nan_to_num(importance, nan=0.0), kind="stable")
        v = {name: a[:, by_importance] if a.ndim == 2 else a for name, a in v.items()}
        bases = found.bases.detach().float().cpu().numpy()[by_importance]  # (k, C)
        total = float(v["total"][mine].mean(dtype=np.float64))  # a class with concepts has its sample's images
        residual = float(v["residual"][mine].mean(dtype=np.float64))
        # shares of the positive parts (the concepts' positive importances and a positive residual), as the driver
        # channels' shares: of one sign with the importance whatever the sign of the layer's total
        positive = float(np.clip(np.nan_to_num(importance[by_importance]), 0, None).sum()) + max(residual, 0.0)
        summary = _summarise(found, v, codes, j, bases, positive)
        summaries.append(summary.assign(**{contract.CLASS: found.cls, contract.LAYER: layer}))
        images.append(_image_rows(ids, found.cls, layer, v))
        residuals.append(
            pd.DataFrame(
                {contract.IMAGE_ID: ids, contract.CLASS: found.cls, "residual": v["residual"], "total": v["total"]}
            )
        )
        classes[found.cls] = {
            "k": int(found.bases.shape[0]),
            "iterations": found.iterations,
            "reconstruction_error": _finite(found.relative_error),
            "n_images": int(mine.sum()),
            "n_sample": found.n_sample,
            "residual_share": _finite(_ratio(residual, positive)),
            "total": _finite(total),
        }
    return ConceptTables(
        _frame(images, cc.CONCEPT_IMAGES_COLUMNS),
        _frame(summaries, cc.CONCEPTS_COLUMNS),
        pd.concat(residuals, ignore_index=True) if residuals else pd.DataFrame(),
        classes,
    )


def _summarise(
    found: ClassConcepts, v: dict[str, np.ndarray], codes: np.ndarray, j: int, bases: np.ndarray, positive: float
) -> pd.DataFrame:
    """Class j's concepts, v and bases (k, C) already in importance order: one row each."""
    k = bases.shape[0]
    grouped = codes >= 0  # presence AUC: the class's images against the other classes' (images in no class aside)
    auc = compute_rank_auc(v["presence"][grouped].T, codes[grouped] == j)
    importance = v["contribution"][codes == j].mean(axis=0, dtype=np.float64)  # (k,)
    sums = bases.sum(axis=1, keepdims=True)
    weights = np.divide(bases, sums, out=np.zeros_like(bases), where=sums > 0)  # a basis summing to 1
    top = np.argsort(-weights, axis=1, kind="stable")[:, : cc.TOP_CHANNELS]  # (k, 5)
    return pd.DataFrame(
        {
            cc.CONCEPT: np.arange(k, dtype=np.int32),
            cc.IMPORTANCE: importance,
            cc.SHARE: [_ratio(float(x), positive) for x in importance],
            cc.PRESENCE_AUC: auc,
            cc.CHANNELS: [t.astype(np.int32) for t in top],
            cc.WEIGHTS: [w[t].astype(np.float32) for w, t in zip(weights, top)],
            cc.BASIS: [b.astype(np.float32) for b in bases],
            cc.RECONSTRUCTION_ERROR: found.relative_error,
            cc.N_IMAGES: int((codes == j).sum()),
            cc.N_SAMPLE: found.n_sample,
        }
    )


def _image_rows(ids: np.ndarray, cls: str, layer: str, v: dict[str, np.ndarray]) -> pd.DataFrame:
    n, k = v["presence"].shape
    return pd.DataFrame(
        {
            contract.IMAGE_ID: np.repeat(ids, k),
            contract.CLASS: cls,
            contract.LAYER: layer,
            cc.CONCEPT: np.tile(np.arange(k, dtype=np.int32), n),
            cc.PRESENCE: v["presence"].ravel(),
            cc.PEAK: v["peak"].ravel(),
            contract.PEAK_Y: v["peak_y"].ravel(),
            contract.PEAK_X: v["peak_x"].ravel(),
            cc.CONTRIBUTION: v["contribution"].ravel(),
        }
    )


def _frame(parts: list[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    return pd.concat(parts, ignore_index=True)[list(columns)]  # a class at least: the caller has concepts


def _ratio(x: float, total: float) -> float:
    return x / total if total != 0 and np.isfinite(total) else float("nan")


def _finite(x: float) -> float | None:
    """JSON has no NaN: None instead."""
    return round(x, 6) if np.isfinite(x) else None
