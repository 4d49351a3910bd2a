"""The drivers of each class: channels ranked by their mean contribution to the class logit (gradient x activation,
from the extract's attribution tables), over the images of the class and over the images predicted as it.

Selectivity (AUC, d) says which channels differ between classes; this says which ones the classifier leans on.
The tables are streamed in record batches into running per-class moments, so memory stays one batch wide.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from analysis.stats.groups import Groups
from analysis.stats.moments import Moments
from analysis.store import contract, tables

COLUMNS = (
    contract.CONTRIB_MEAN,
    contract.CONTRIB_STD,
    contract.RANK_CONTRIBUTION,
    contract.CONTRIB_MEAN_PRED,
    contract.RANK_CONTRIBUTION_PRED,
)


def _rank(values: np.ndarray) -> np.ndarray:
    """1 = largest, ties by channel number; NaN (no image to average over) gets no rank."""
    order = np.lexsort((np.arange(len(values)), -np.nan_to_num(values, nan=-np.inf)))
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    return np.where(np.isnan(values), np.nan, ranks)


def compute_drivers(
    run: str | os.PathLike,
    attribution: Mapping[str, Any] | None,
    groups: Groups,
    pred_groups: Groups,
    batch_rows: int = 8192,
) -> pd.DataFrame:
    """One row per (attributed layer, class, channel): contrib_mean, contrib_std (ddof 1) and rank_contribution
    over the images of the class (as `groups` has them), contrib_mean_pred and rank_contribution_pred over the
    images predicted as it. Empty when the run has no attribution tables."""
    rows = []
    for cls in (attribution or {}).get("classes", ()):
        if cls not in groups.classes:
            continue
        k = groups.classes.index(cls)
        for layer in attribution["layers"]:
            folder = contract.attribution_dir(Path(run), cls, layer)
            c = int(attribution["channels"][layer])
            own, pred = Moments.empty(len(groups.classes), c), Moments.empty(len(groups.classes), c)
            for ids, values in tables.iter_channel_batches(folder, batch_rows):  # values (n, C)
                own.add(values.T, groups.codes_of(ids))
                pred.add(values.T, pred_groups.codes_of(ids))
            mean = np.where(own.n[k] > 0, own.mean[k], np.nan)
            std = np.sqrt(np.maximum(own.m2[k], 0) / (own.n[k] - 1)) if own.n[k] > 1 else np.full(c, np.nan)
            mean_pred = np.where(pred.n[k] > 0, pred.mean[k], np.nan)
            rows.append(
                pd.DataFrame(
                    {
                        contract.LAYER: layer,
                        contract.CLASS: cls,
                        contract.CHANNEL: np.arange(c, dtype=np.int32),
                        contract.CONTRIB_MEAN: mean,
                        contract.CONTRIB_STD: std,
                        contract.RANK_CONTRIBUTION: _rank(mean),
                        contract.CONTRIB_MEAN_PRED: mean_pred,
                        contract.RANK_CONTRIBUTION_PRED: _rank(mean_pred),
                    }
                )
            )
    if not rows:
        return pd.DataFrame(columns=[contract.LAYER, contract.CLASS, contract.CHANNEL, *COLUMNS])
    return pd.concat(rows, ignore_index=True)


def add_drivers(stats: pd.DataFrame, drivers: pd.DataFrame) -> pd.DataFrame:
    """channel_stats with the contribution columns (the same on a channel's mean and max rows; null for layers
    without attribution)."""
    keys = [contract.LAYER, contract.CLASS, contract.CHANNEL]
    merged = stats.merge(drivers.astype({contract.CHANNEL: stats[contract.CHANNEL].dtype}), on=keys, how="left")
    for col in (contract.RANK_CONTRIBUTION, contract.RANK_CONTRIBUTION_PRED):
        merged[col] = merged[col].astype("Int32")
    return merged


def read_contributions(run: str | os.PathLike, cls: str, layer: str, image_ids) -> pd.DataFrame:
    """The contribution rows of a few images (mistakes, an image card): image_id index, c0..c{C-1} columns."""
    folder = contract.attribution_dir(Path(run), cls, layer)
    table = ds.dataset(folder, format="parquet").to_table(filter=ds.field(contract.IMAGE_ID).isin(list(image_ids)))
    return table.to_pandas().set_index(contract.IMAGE_ID)


def compute_mistake_drivers(
    run: str | os.PathLike, attribution: Mapping[str, Any] | None, mistakes: pd.DataFrame, n: int = 3
) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """{(image_id, layer): [(channel, contribution)] }: the `n` channels that contributed most to the wrong class
    each mistake was given, for every attributed layer the mistakes are shown at."""
    out: dict[tuple[str, str], list[tuple[int, float]]] = {}
    layers = set((attribution or {}).get("layers", ()))
    for (layer, pred), group in mistakes.groupby([contract.LAYER, contract.PRED]):
        if layer not in layers or pred not in attribution["classes"]:
            continue
        rows = read_contributions(run, pred, layer, group[contract.IMAGE_ID].unique())
        for image_id, values in zip(rows.index, rows.to_numpy()):
            top = np.argsort(-values, kind="stable")[:n]
            out[(image_id, layer)] = [(int(c), float(values[c])) for c in top]
    return out
