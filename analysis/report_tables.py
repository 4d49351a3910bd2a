"""The Parquet contract of the report stage: OUT/report/channel_stats.parquet and OUT/report/top_examples.parquet.

Column names are defined here once (the extract tables' names live in analysis/storage.py and are reused).
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa

from analysis import storage

REPORT_DIR = "report"
CHANNEL_STATS = "channel_stats.parquet"
TOP_EXAMPLES = "top_examples.parquet"
INDEX_HTML = "index.html"

# channel_stats: one row per (layer, stat, channel, class)
LAYER = "layer"
STAT = "stat"                      # "mean" (channel mean, the article's feature value) or "max" (channel maximum)
CHANNEL = "channel"
CLASS = "class"
GROUP_BY = "group_by"              # "label", or "pred" on an unlabeled run
N = "n"                            # images of the class
MEAN = "mean"
STD = "std"                        # sample standard deviation (ddof=1)
REST_MEAN = "rest_mean"            # the same over the images of every other class
REST_STD = "rest_std"
COHENS_D = "cohens_d"              # (mean - rest_mean) / pooled sd
AUC = "auc"                        # P(class image > other image), ties count one half: Mann-Whitney U / (n1 n0)
RANK_SELECTIVITY = "rank_selectivity"  # 1 = most selective for the class (by auc, then cohens_d)
RANK_MEAN = "rank_mean"            # 1 = highest mean on the class (the article's ranking)
STAT_MEAN = "mean"
STAT_MAX = "max"
GROUP_LABEL = "label"
GROUP_PRED = "pred"

# top_examples: one row per shown (layer, class, scope, channel, image)
SCOPE = "scope"                    # "all" images, within the "class", or a confident "mistake"
SCOPE_ALL = "all"
SCOPE_CLASS = "class"
SCOPE_MISTAKE = "mistake"
CHANNEL_RANK = "channel_rank"      # the channel's rank_selectivity for the class
IMAGE_RANK = "image_rank"          # 1 = highest value (mistakes: most confident)
VALUE = "value"                    # the channel mean recorded by extract
PUSH = "push"                      # mistakes: (value - mean of the true class) / its std, for the channel picked

_S, _I32, _F64, _F32 = pa.string(), pa.int32(), pa.float64(), pa.float32()
CHANNEL_STATS_SCHEMA = pa.schema([
    (LAYER, _S), (STAT, _S), (CHANNEL, _I32), (CLASS, _S), (GROUP_BY, _S), (N, pa.int64()), (MEAN, _F64), (STD, _F64),
    (REST_MEAN, _F64), (REST_STD, _F64), (COHENS_D, _F64), (AUC, _F64), (RANK_SELECTIVITY, _I32), (RANK_MEAN, _I32)])
TOP_EXAMPLES_SCHEMA = pa.schema([
    (LAYER, _S), (CLASS, _S), (SCOPE, _S), (CHANNEL, _I32), (CHANNEL_RANK, _I32), (IMAGE_RANK, _I32),
    (storage.IMAGE_ID, _S), (VALUE, _F32), (PUSH, _F64), (storage.LABEL, _S), (storage.PRED, _S),
    (storage.CONFIDENCE, _F32)])
CHANNEL_STATS_COLUMNS = tuple(CHANNEL_STATS_SCHEMA.names)
TOP_EXAMPLES_COLUMNS = tuple(TOP_EXAMPLES_SCHEMA.names)


def report_dir(run: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    return Path(out) if out else Path(run) / REPORT_DIR


def write_table(df: pd.DataFrame, schema: pa.Schema, path: str | os.PathLike) -> None:
    """The frame's columns of `schema`, in its order and types, written atomically."""
    missing = [c for c in schema.names if c not in df.columns]
    if missing:
        raise KeyError(f"columns missing: {missing}")
    table = pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
    storage.write_parquet_atomic(table, path)


def read_predictions(run: str | os.PathLike, classes) -> pd.DataFrame:
    """The columns of OUT/predictions the report uses (a few per image: fine in memory for millions of rows)."""
    columns = [storage.IMAGE_ID, storage.LABEL, storage.STATUS, storage.ERROR, storage.PRED, storage.CONFIDENCE,
               storage.CORRECT] + [storage.prob_column(c) for c in classes]
    return pd.read_parquet(Path(run) / storage.PREDICTIONS, columns=columns)

