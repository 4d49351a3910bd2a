"""The Parquet contract of every table: names, columns and schemas of the extract's tables and of the report's.

Every column name of every table is defined here and only here (reading and writing them: analysis.store.tables).
Each extract table is a directory of part files, so `pd.read_parquet(dir)` reads it whole; part k of every table
covers the same unit of the sorted file list.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pyarrow as pa

from analysis.data.names import make_display

PREDICTIONS = "predictions"
ACTIVATIONS = "activations"  # channel means, one directory per layer
ACTIVATIONS_MAX = "activations_max"  # channel maxima, one directory per layer
ATTRIBUTIONS = "attributions"  # channel contributions to a class logit: attributions/<class>/<layer>/
# where each channel's maximum is: activations_peak/<layer>/, uint16 c0..c{C-1} (uint32 above 65,536 cells), the flat
# index y * w + x of the maximum on the layer's peak grid (run.json meta "peak_grid": {layer: [h, w]}; the pooled
# grid for the layers whose maximum comes from the max pool after them); the first position on ties
ACTIVATIONS_PEAK = "activations_peak"
# Grad-CAM of each class at the deepest attributed layer: gradcam/<class>/<layer>/, float32 g0..g{h*w-1}, row-major,
# ReLU(sum_c mean_yx(d logit / d A_c) * A_c), not normalised (run.json meta "gradcam": {"layer", "grid": [h, w]})
GRADCAM = "gradcam"
RUN_JSON = "run.json"
CONFIG_YAML = "config.yaml"
METADATA_KEY = b"cnn_blackbox"
# 2: predictions has sha256; 3: and phash (an older run is not resumed into it; the dataset checks refuse it)
FORMAT_VERSION = 3

# predictions columns
IMAGE_ID = "image_id"
SPLIT = "split"
LABEL = "label"
STATUS = "status"
ERROR = "error"
WIDTH = "width"
HEIGHT = "height"
FORMAT = "format"
SHA256 = "sha256"  # hex digest of the file's bytes (null when they could not be read)
# pHash of the whole decoded image (EXIF orientation applied, RGB; before the resize and crop): imagehash's
# phash(hash_size=8) - gray, 32 x 32 LANCZOS, 2-D DCT-II, top-left 8 x 8 coefficients, bit = coefficient > their
# median, packed row-major with the first coefficient as the most significant bit - stored as int64: the unsigned
# 64-bit value, minus 2**64 when its top bit is set (`v & (2**64 - 1)` gives it back; its hex is imagehash's
# str). Null for error rows. analysis.data.perceptual_hash computes it.
PHASH = "phash"
PRED = "pred"
CONFIDENCE = "confidence"
CORRECT = "correct"
IMAGENET_TOP1 = "imagenet_top1"
IMAGENET_TOP1_INDEX = "imagenet_top1_index"
STATUS_OK = "ok"
STATUS_ERROR = "error"


def logit_column(cls: str) -> str:
    return f"logit_{cls}"


def prob_column(cls: str) -> str:
    return f"prob_{cls}"


def channel_column(c: int) -> str:
    return f"c{c}"


def channel_columns(n: int) -> list[str]:
    return [channel_column(c) for c in range(n)]


STAT_PEAK = "peak"  # the kind of the activations_peak tables
_STAT_DIRS = {"mean": ACTIVATIONS, "max": ACTIVATIONS_MAX, STAT_PEAK: ACTIVATIONS_PEAK}


def activation_dir(out: str | os.PathLike, layer: str, stat: str = "mean") -> Path:
    """OUT/activations/<layer> (stat 'mean'), OUT/activations_max/<layer> ('max') or activations_peak/ ('peak')."""
    if stat not in _STAT_DIRS:
        raise ValueError(f"stat must be one of {', '.join(_STAT_DIRS)}, got {stat!r}")
    return Path(out) / _STAT_DIRS[stat] / layer


def gradcam_column(k: int) -> str:
    return f"g{k}"


def peak_type(cells: int) -> pa.DataType:  # the activations_peak columns' type for a peak grid of `cells` cells
    return pa.uint16() if cells <= 1 << 16 else pa.uint32()


def gradcam_dir(out: str | os.PathLike, cls: str, layer: str) -> Path:
    """OUT/gradcam/<class>/<layer>: per ok image, the class's Grad-CAM at the layer, row-major."""
    return attribution_dir(out, cls, layer).parent.parent.parent / GRADCAM / cls / layer


def attribution_dir(out: str | os.PathLike, cls: str, layer: str) -> Path:
    """OUT/attributions/<class>/<layer>: per ok image, each channel's contribution to the class's logit."""
    if not cls or cls in (".", "..") or "/" in cls or "\\" in cls or "\0" in cls:
        raise ValueError(f"class {cls!r} cannot name a folder of attributions/")
    return Path(out) / ATTRIBUTIONS / cls / layer


def part_name(unit: int) -> str:
    return f"part-{unit:05d}.parquet"


def prediction_schema(classes: Sequence[str], imagenet: bool) -> pa.Schema:
    fields = [
        pa.field(IMAGE_ID, pa.string(), nullable=False),
        pa.field(SPLIT, pa.string()),
        pa.field(LABEL, pa.string()),
        pa.field(STATUS, pa.string(), nullable=False),
        pa.field(ERROR, pa.string()),
        pa.field(WIDTH, pa.int32()),
        pa.field(HEIGHT, pa.int32()),
        pa.field(FORMAT, pa.string()),
        pa.field(SHA256, pa.string()),
        pa.field(PHASH, pa.int64()),
    ]
    fields += [pa.field(logit_column(c), pa.float32()) for c in classes]
    fields += [pa.field(prob_column(c), pa.float32()) for c in classes]
    fields += [pa.field(PRED, pa.string()), pa.field(CONFIDENCE, pa.float32()), pa.field(CORRECT, pa.bool_())]
    if imagenet:
        fields += [pa.field(IMAGENET_TOP1, pa.string()), pa.field(IMAGENET_TOP1_INDEX, pa.int16())]
    return pa.schema(fields)


def activation_schema(channels: int, kind: pa.DataType | None = None, column=channel_column) -> pa.Schema:
    """image_id, then `channels` columns of `kind` (float32) named by `column` (gradcam_column: Grad-CAM's g0..)."""
    return pa.schema(
        [pa.field(IMAGE_ID, pa.string(), nullable=False)]
        + [pa.field(column(c), kind or pa.float32(), nullable=False) for c in range(channels)]
    )


def with_metadata(schema: pa.Schema, meta: Mapping[str, Any]) -> pa.Schema:
    return schema.with_metadata({METADATA_KEY: encode_json(meta, indent=None)})


def _displayable(obj: Any) -> Any:
    if isinstance(obj, str):
        return make_display(obj)
    if isinstance(obj, Mapping):
        return {_displayable(k): _displayable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_displayable(v) for v in obj]
    return obj


def encode_json(obj: Any, indent: int | None = 2) -> bytes:
    """JSON that any reader takes: a path with bytes that are not UTF-8 is written as analysis.data.names shows it,
    never as a lone surrogate (Python reads those back, DuckDB and jq do not)."""
    text = json.dumps(_displayable(obj), indent=indent, sort_keys=True, default=str)
    return (text + "\n").encode() if indent is not None else text.encode()


# ---------------------------------------------------------------------------------------------------------------
# The report's tables: OUT/report/channel_stats.parquet, top_examples.parquet and channel_tops.parquet.

REPORT_DIR = "report"
CHANNEL_STATS = "channel_stats.parquet"
TOP_EXAMPLES = "top_examples.parquet"
CHANNEL_TOPS = "channel_tops.parquet"
INDEX_HTML = "index.html"
CARDS_DIR = "cards"  # cards/part-NNNNN.js: the image cards' Grad-CAM and contributions (reports/run/cards.py)

# channel_stats: one row per (layer, stat, channel, class)
LAYER = "layer"
STAT = "stat"  # "mean" (channel mean, the article's feature value) or "max" (channel maximum)
CHANNEL = "channel"
CLASS = "class"
GROUP_BY = "group_by"  # "label", or "pred" on an unlabeled run
N = "n"  # images of the class
MEAN = "mean"
STD = "std"  # sample standard deviation (ddof=1)
REST_MEAN = "rest_mean"  # the same over the images of every other class
REST_STD = "rest_std"
COHENS_D = "cohens_d"  # (mean - rest_mean) / pooled sd
AUC = "auc"  # P(class image > other image), ties count one half: Mann-Whitney U / (n1 n0)
RANK_SELECTIVITY = "rank_selectivity"  # 1 = most selective for the class (by auc, then cohens_d)
RANK_MEAN = "rank_mean"  # 1 = highest mean on the class (the article's ranking)
CONTRIB_MEAN = "contrib_mean"  # mean contribution of the channel to the class logit over the class's images
CONTRIB_STD = "contrib_std"  # its sample standard deviation
RANK_CONTRIBUTION = "rank_contribution"  # 1 = the class's strongest driver (largest contrib_mean)
CONTRIB_MEAN_PRED = "contrib_mean_pred"  # the same over the images predicted as the class
RANK_CONTRIBUTION_PRED = "rank_contribution_pred"
STAT_MEAN = "mean"
STAT_MAX = "max"
GROUP_LABEL = "label"
GROUP_PRED = "pred"

# top_examples: one row per shown (layer, class, scope, channel, image)
SCOPE = "scope"  # "all" images, within the "class", or a confident "mistake"
SCOPE_ALL = "all"
SCOPE_CLASS = "class"
SCOPE_MISTAKE = "mistake"
CHANNEL_RANK = "channel_rank"  # the channel's rank_selectivity for the class
IMAGE_RANK = "image_rank"  # 1 = highest value (mistakes: most confident)
VALUE = "value"  # the channel mean recorded by extract
PUSH = "push"  # mistakes: (value - mean of the true class) / its std, for the channel picked

_S, _I32, _F64, _F32 = pa.string(), pa.int32(), pa.float64(), pa.float32()
CHANNEL_STATS_SCHEMA = pa.schema(
    [
        (LAYER, _S),
        (STAT, _S),
        (CHANNEL, _I32),
        (CLASS, _S),
        (GROUP_BY, _S),
        (N, pa.int64()),
        (MEAN, _F64),
        (STD, _F64),
        (REST_MEAN, _F64),
        (REST_STD, _F64),
        (COHENS_D, _F64),
        (AUC, _F64),
        (RANK_SELECTIVITY, _I32),
        (RANK_MEAN, _I32),
        (CONTRIB_MEAN, _F64),
        (CONTRIB_STD, _F64),
        (RANK_CONTRIBUTION, _I32),
        (CONTRIB_MEAN_PRED, _F64),
        (RANK_CONTRIBUTION_PRED, _I32),
    ]
)
TOP_EXAMPLES_SCHEMA = pa.schema(
    [
        (LAYER, _S),
        (CLASS, _S),
        (SCOPE, _S),
        (CHANNEL, _I32),
        (CHANNEL_RANK, _I32),
        (IMAGE_RANK, _I32),
        (IMAGE_ID, _S),
        (VALUE, _F32),
        (PUSH, _F64),
        (LABEL, _S),
        (PRED, _S),
        (CONFIDENCE, _F32),
    ]
)
CHANNEL_STATS_COLUMNS = tuple(CHANNEL_STATS_SCHEMA.names)
TOP_EXAMPLES_COLUMNS = tuple(TOP_EXAMPLES_SCHEMA.names)

# channel_tops: one row per (layer, channel, scope "all" or "class", class (null for "all"), image): every channel's
# top images by value, 1 = highest, ties to the earlier row of the activations table; where the channel's maximum is
# in the image, as the centre of its peak-grid cell in the crop the network saw: (y + 0.5) / h, (x + 0.5) / w in
# [0, 1] (null when the run has no activations_peak table)
PEAK_Y, PEAK_X = "peak_y", "peak_x"
_TOPS = [(LAYER, _S), (CHANNEL, _I32), (SCOPE, _S), (CLASS, _S), (IMAGE_RANK, _I32), (IMAGE_ID, _S), (VALUE, _F32)]
CHANNEL_TOPS_SCHEMA = pa.schema(_TOPS + [(PEAK_Y, _F32), (PEAK_X, _F32)])
CHANNEL_TOPS_COLUMNS = tuple(CHANNEL_TOPS_SCHEMA.names)

# dataset_issues: one row per flagged image and issue (a near-duplicate image: one row per pair it is in)
DATASET_ISSUES = "dataset_issues.parquet"
ISSUE = "issue"
ISSUE_EXACT_DUPLICATE = "exact_duplicate"  # byte-identical files (the same sha256)
ISSUE_NEAR_DUPLICATE = "near_duplicate"  # pHashes within the Hamming radius (from the pixels, not the network)
ISSUE_SIMILAR_SCENE = "similar_scene"  # mutual nearest neighbours by the network, much nearer than the next
ISSUE_LABEL = "label"  # the label disagrees with the model and the image's neighbours
ISSUE_OUTLIER = "outlier"  # far from its nearest neighbours, whatever their class
ISSUES = (ISSUE_EXACT_DUPLICATE, ISSUE_NEAR_DUPLICATE, ISSUE_SIMILAR_SCENE, ISSUE_LABEL, ISSUE_OUTLIER)
ISSUE_RANK = "rank"  # 1 = shown first within the issue: a duplicate whose labels differ, then by score
SCORE = "score"  # higher = surer: 1 (exact), 1 - hamming / 64 (near), 1 - distance_ratio
# (similar_scene), 1 - label_score, 1 - outlier_score
GROUP = "group"  # exact_duplicate: the group of identical files (1 = shown first)
PAIR = "pair"  # near_duplicate, similar_scene: the pair (1 = shown first); two rows each
PARTNER = "partner"  # near_duplicate, similar_scene: the pair's other image
LABELS_DIFFER = "labels_differ"  # duplicates: the group's or pair's labels are not all the same
COSINE = "cosine"  # similar_scene: cosine similarity of the centred means, in the full space
HAMMING = "hamming"  # near_duplicate: bits in which the two pHashes differ (0-64)
DISTANCE_RATIO = "distance_ratio"  # similar_scene: the pair's distance / the nearer of the two images' distances
# to their second neighbour (small: much nearer each other than to the rest)
LABEL_SCORE = "label_score"  # cleanlab's label quality (self-confidence) in [0, 1]; low = likely wrong
OUTLIER_SCORE = "outlier_score"  # cleanlab's OutOfDistribution score in [0, 1]; low = atypical
DATASET_ISSUES_SCHEMA = pa.schema(
    [
        (IMAGE_ID, _S),
        (ISSUE, _S),
        (ISSUE_RANK, _I32),
        (SCORE, _F64),
        (GROUP, pa.int64()),
        (PAIR, pa.int64()),
        (PARTNER, _S),
        (LABELS_DIFFER, pa.bool_()),
        (LABEL, _S),
        (PRED, _S),
        (HAMMING, pa.int16()),
        (COSINE, _F64),
        (DISTANCE_RATIO, _F64),
        (LABEL_SCORE, _F64),
        (OUTLIER_SCORE, _F64),
    ]
)
DATASET_ISSUES_COLUMNS = tuple(DATASET_ISSUES_SCHEMA.names)
