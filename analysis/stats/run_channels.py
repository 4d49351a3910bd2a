"""What a finished dataset run says about a few channels: which it ranked most selective for a class, and how
each channel's mean was distributed over the run's images.

The ranking is the report stage's (by ROC AUC, then Cohen's d): read from OUT/report/channel_stats.parquet when
the report exists, else computed with the report's own functions (analysis/stats/selectivity.py) for that one layer.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from analysis.stats import selectivity
from analysis.stats.groups import make_groups
from analysis.store import contract
from analysis.store.run import FinishedRun


@dataclass(frozen=True)
class SelectiveChannels:
    layer: str
    cls: str
    channels: tuple[int, ...]  # most selective first
    scores: tuple[float, ...]  # the score each was ranked by
    score_name: str  # "ROC AUC"
    group_by: str  # "label", or "pred" when the run has no labels
    source: str  # where the ranking came from, for the page


def read_selective_channels(run: FinishedRun, layer: str, cls: str, top: int) -> SelectiveChannels | str:
    """The run's `top` channels of `layer` most selective for `cls`; a one-line reason instead when it cannot say."""
    recorded = run.meta.get("layers") or {}
    if layer not in recorded:
        return f"the run recorded no {layer} (it has {', '.join(recorded) or 'no layers'})"
    stats_path = run.path / contract.REPORT_DIR / contract.CHANNEL_STATS
    if stats_path.is_file():
        df = pd.read_parquet(
            stats_path, filters=[(contract.LAYER, "==", layer), (contract.STAT, "==", contract.STAT_MEAN)]
        )
        return _rank(df, layer, cls, top, f"{contract.REPORT_DIR}/{contract.CHANNEL_STATS}" + _labels_note(stats_path))
    return _compute_ranking(run, layer, cls, top)


def _labels_note(stats_path: Path) -> str:
    """', labels from <CSV> given to the report' when the report ranked by a CSV's labels, not the run's."""
    raw = (pq.read_schema(stats_path).metadata or {}).get(contract.METADATA_KEY)
    labels = (json.loads(raw) if raw else {}).get("labels") or {}
    return f", labels from {labels['csv']} given to the report" if labels.get("source") == "report" else ""


def read_channel_values(
    run: str | os.PathLike, layer: str, channels: tuple[int, ...], stat: str = "mean"
) -> dict[int, np.ndarray]:
    """{channel: (N,) float32 channel means (or maxima) over the run's ok images}."""
    cols = [contract.channel_column(c) for c in channels]
    table = pq.read_table(contract.activation_dir(run, layer, stat), columns=cols)  # only these columns are read
    return {c: table.column(name).to_numpy().astype(np.float32, copy=False) for c, name in zip(channels, cols)}


def compute_percentile(values: np.ndarray, value: float) -> float:
    """Percentile rank of `value` among `values`: the share below it, ties counting one half, in percent."""
    if len(values) == 0:
        return float("nan")
    below = np.count_nonzero(values < value)
    equal = np.count_nonzero(values == value)
    return 100.0 * (below + 0.5 * equal) / len(values)


def _rank(df: pd.DataFrame, layer: str, cls: str, top: int, source: str) -> SelectiveChannels | str:
    df = df[(df[contract.LAYER] == layer) & (df[contract.STAT] == contract.STAT_MEAN) & (df[contract.CLASS] == cls)]
    if df.empty:
        return f"the run's channel statistics have no rows for layer {layer} and class {cls}"
    df = df.sort_values([contract.RANK_SELECTIVITY, contract.CHANNEL]).head(top)
    return SelectiveChannels(
        layer,
        cls,
        tuple(int(c) for c in df[contract.CHANNEL]),
        tuple(float(a) for a in df[contract.AUC]),
        "ROC AUC",
        str(df[contract.GROUP_BY].iloc[0]),
        source,
    )


def _compute_ranking(run: FinishedRun, layer: str, cls: str, top: int) -> SelectiveChannels | str:
    """The report stage's own statistics for this one layer (no report written yet)."""
    classes = list(run.meta.get("classes") or [])
    if cls not in classes:
        return f"class {cls} is not among the run's classes ({', '.join(classes)})"
    preds = pd.read_parquet(
        run.path / contract.PREDICTIONS, columns=[contract.IMAGE_ID, contract.STATUS, contract.LABEL, contract.PRED]
    )
    groups = make_groups(preds, classes)
    counts = groups.code.value_counts()
    n1 = int(counts.get(classes.index(cls), 0))
    if n1 < 2 or len(groups.code) - n1 < 2:
        return (
            f"the run has {n1} images of class {cls} and {len(groups.code) - n1} others by {groups.by}; "
            "at least 2 of each are needed"
        )
    df = selectivity.compute_channel_stats(run.path, {layer: int(run.meta["layers"][layer])}, groups)
    return _rank(df, layer, cls, top, f"computed here from {contract.ACTIVATIONS}/{layer} (the run has no report yet)")


@dataclass(frozen=True)
class RunChannel:
    channel: int
    score: float  # the ranking's score (SelectiveChannels.score_name)
    value: float  # this image's mean of the channel
    percentile: float  # where `value` falls among the run's images
    run_values: np.ndarray  # (N,) float32: the channel's mean on each ok image of the run
    vmax: float  # colour-scale top: the 99th percentile of the channel's maximum over the run


@dataclass(frozen=True)
class RunComparison:
    layer: str
    cls: str
    ranking: SelectiveChannels | None
    reason: str | None  # why there is no ranking
    channels: tuple[RunChannel, ...]


def compare_with_run(run: FinishedRun, layer: str, means: np.ndarray, cls: str, top: int) -> RunComparison:
    """The run's most selective channels of `layer` for `cls`, with this image's (C,) `means` placed among the run's."""
    ranking = read_selective_channels(run, layer, cls, top)
    if isinstance(ranking, str):
        return RunComparison(layer, cls, None, ranking, ())
    values = read_channel_values(run.path, layer, ranking.channels)
    maxima = read_channel_values(run.path, layer, ranking.channels, stat="max")
    rows = []
    for c, score in zip(ranking.channels, ranking.scores):
        v = float(means[c])
        top_of_scale = float(np.percentile(maxima[c], 99)) if len(maxima[c]) else 0.0
        rows.append(RunChannel(c, score, v, compute_percentile(values[c], v), values[c], max(top_of_scale, 1e-12)))
    return RunComparison(layer, cls, ranking, None, tuple(rows))


def describe_mismatch(meta: Mapping[str, Any], weights_id: str, preprocess: dict[str, Any]) -> list[str]:
    """Differences between the run and this inspection that make the comparison questionable, one line each."""
    out = []
    run_weights = (meta.get("weights") or {}).get("id")
    if run_weights != weights_id:
        out.append(f"the run used weights {run_weights}, this page {weights_id}: its channels are not these channels")
    run_pre = meta.get("preprocess") or {}
    for key in ("name", "crop"):
        if key in run_pre and run_pre[key] != preprocess.get(key):
            out.append(f"the run's preprocessing {key} is {run_pre[key]}, this page's {preprocess.get(key)}")
    return out
