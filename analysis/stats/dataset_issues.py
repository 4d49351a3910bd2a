"""Dataset checks, the rows of dataset_issues.parquet: exact and near duplicates from the files and their pixels;
similar scenes, likely label errors and outliers from what the network saw.

Duplicates do not depend on the network (the answer must not change with the weights):
- exact duplicates: files with the same sha256 (extract's `sha256`), in groups;
- near duplicates: pairs whose pHashes (extract's `phash`: 64 bits of the whole decoded image, imagehash's pHash)
  differ in at most `near_duplicate_bits` (10) bits, never a pair of identical files. Measured by
  benchmarks/measure_phash.py on the 20 real photos in ../shared, each copy written and decoded as the extract
  decodes it. Copies: resized 0.5-0.9x then JPEG quality 50-95 (300 copies), PNG re-saves (40) and grayscale
  copies (40) differ in at most 2 bits; crops of 1, 2, 3% per side in at most 6, 8, 10; crops of 4-5% per side
  (or 5% off one side) in up to 14-16; all at once (5% crop, 0.5x, gray, quality 50) in 6-14. Distinct pairs
  (21,060): the photos among themselves >= 22 bits, 180 tiles cut from the photos (no pixel shared, often the
  same fur) >= 14, a photo and a smooth colour field the script drew >= 12; 1st percentile 22, median 32. No
  radius separates 4-5% crops from every distinct pair (16 against 12), so the radius is 10: the copies' maximum
  without those crops, below the nearest distinct pair (12). At 10, every resize, re-encode and gray copy is
  found, and every crop of up to 3% per side, 92% of the crops up to 5% per side and 15 of 20 all-at-once
  copies; 0 of the 21,060 distinct pairs. The copies' side is given the edge, not the middle of the gap, because
  distinct pairs grow as N^2 (312 million among 25,000 images) and copies as N. Searched exactly, every pair
  (analysis.stats.hamming, analysis.stats.pairs).

Each ok image is also described by its channel means at one layer (conv5_3), centred (the dataset mean
subtracted). One k-nearest-neighbour graph by Euclidean distance (analysis.stats.neighbours) serves the three
network checks, for what a hash cannot see:
- similar scenes: mutual nearest neighbours whose distance is at most `similar_scene_ratio` (SCENE) x the nearer
  of the two images' distances to their second neighbour: a pair much closer to each other than to anything else,
  whatever the scale of the features (so the same rule holds for trained and random weights, and as the dataset
  grows). Pairs already exact or near duplicates are not repeated. MEASURED_SCENE gives the figures;
- label issues (labeled runs): cleanlab.filter.find_label_issues (confident learning) and
  cleanlab.rank.get_label_quality_scores, on probabilities that average the model's with the neighbours' label
  vote (weighted by 1 / distance, out of sample), so a label must disagree with both to rank low;
- outliers: cleanlab.outlier.OutOfDistribution over the same graph, flagged as Datalab flags them: a mean distance
  to the k neighbours above Q3 + (1 / 0.37037 - 1) IQR. Euclidean, not cosine: an image whose activations are
  unusually strong is atypical, and cosine cannot see it (line drawings among the photos: mean distance 0.81-1.12,
  photos 0.21-0.35; by cosine both about 0.4-0.9).
Datalab itself is not used: it needs Hugging Face `datasets` and its hub client (docs/dataset-checks.md).

A run extracted before format 3 has no `phash`: the checks refuse it (`refuse_without_phash`), saying how to
re-extract. Memory: the (N, C) float32 features (25,000 x 512: 51 MB) plus one block of distances or of hash
comparisons (`memory_bytes`).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.stats.neighbours import Neighbours, compute_neighbours
from analysis.stats.pairs import find_exact_duplicates, find_near_duplicates, find_similar_scenes, make_rows
from analysis.store import contract

C = contract
OUTLIER_IQR_THRESHOLD = 0.37037  # Datalab's default for features: Q3 + (1 / t - 1) IQR
MEASURED_HASH = (
    "pHash Hamming distance, 20 real photos (benchmarks/measure_phash.py): copies resized 0.5-0.9x + "
    "JPEG 50-95, PNG re-saved or gray <= 2 bits, cropped 1-3% per side <= 10 (4-5%: up to 16); "
    "distinct pairs >= 12 (photos >= 22, median 32): radius 10, the copies' edge of the gap 10-12"
)
MEASURED_SCENE = (
    "distance ratio of mutual nearest neighbours, random weights, conv5_3, the 20 real photos beside 80 "
    "drawn pictures: the same scene zoomed 15%, mirrored, turned 6 degrees or shifted 15% 0.27-0.97 "
    "(224 px, median 0.50), 0.48-0.99 (64 px, median 0.69); distinct pairs >= 0.61 (224 px), >= 0.89 "
    "(64 px): ratio 0.5, below every distinct pair"
)


@dataclasses.dataclass(frozen=True)
class Settings:
    near_duplicate_bits: int  # pHashes differing in at most this many bits are near duplicates
    scene_ratio: float  # similar scenes: pair distance <= this x the nearer second-neighbour distance
    k: int  # neighbours per image
    exact_max_images: int  # above this, the search is approximate
    approx_dims: int  # principal components searched when approximate
    memory_bytes: int  # one block of distances or of hash comparisons


@dataclasses.dataclass(frozen=True)
class DatasetIssues:
    issues: pd.DataFrame  # contract.DATASET_ISSUES_COLUMNS
    meta: dict  # what was done and how (the table's metadata, the page's numbers)
    refused: str | None = None  # why the checks did not run (one line, for the log and the page); issues empty


def refuse_without_phash(predictions: pd.DataFrame, run: str | os.PathLike, data: str | None) -> DatasetIssues | None:
    """A DatasetIssues that says, in one line, why a run without the pHash column (extracted before format 3) cannot be
    checked and how to get the hash; None when the run has it."""
    if C.PHASH in predictions:
        return None
    where = f"DATA={data} " if data else "DATA=<the images> "
    message = (
        f"dataset checks not run: {C.PREDICTIONS} of run {os.fspath(run)!r} has no {C.PHASH} column (it was "
        f"extracted before format {C.FORMAT_VERSION}, which records the perceptual hash the duplicate checks "
        f"need); re-extract it with this version: make extract {where}OUT={os.fspath(run)} ARGS=--overwrite"
    )
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in C.DATASET_ISSUES_COLUMNS})
    return DatasetIssues(empty, {"refused": message}, refused=message)


def library_versions() -> dict[str, str]:
    import cleanlab
    import sklearn

    return {"cleanlab": cleanlab.__version__, "scikit-learn": sklearn.__version__}


def compute_dataset_issues(
    ids: np.ndarray, x: np.ndarray, predictions: pd.DataFrame, classes: Sequence[str], settings: Settings
) -> DatasetIssues:
    """All checks over the images of `ids` (N,) with features `x` (N, C); `predictions` indexed by image id
    gives label, pred, sha256, phash and the class probabilities (refuse_without_phash first: a run without
    phash is refused before this)."""
    pred = predictions.reindex(pd.Index(ids))
    labels = pred[C.LABEL].where(pred[C.LABEL].isin(classes))
    n = len(ids)
    centred = x - x.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32) if n else x
    approximate = n > settings.exact_max_images
    meta = {
        "n_images": n,
        "representation": "near duplicates by pHash (the pixels); similar scenes, label issues "
        "and outliers by the channel means minus the dataset mean, neighbours by Euclidean distance",
        "near_duplicate_bits": settings.near_duplicate_bits,
        "near_duplicate_measured": MEASURED_HASH,
        "similar_scene_ratio": settings.scene_ratio,
        "similar_scene_measured": MEASURED_SCENE,
        "k": settings.k,
        "search": (
            f"approximate: top {settings.approx_dims} principal components, scene pairs re-scored in the full space"
        )
        if approximate
        else "exact",
        "notes": [],
    }
    exact = find_exact_duplicates(ids, pred, meta)
    near, near_pairs = find_near_duplicates(ids, pred, settings.near_duplicate_bits, settings.memory_bytes, meta)
    rows = [exact, near]
    if n >= 2:
        graph = compute_neighbours(
            centred, settings.k, settings.memory_bytes, settings.approx_dims if approximate else None
        )
        rows.append(find_similar_scenes(ids, pred, centred, graph, settings.scene_ratio, near_pairs))
        label_score = _label_scores(labels, pred, classes, graph, meta)
        outlier_score, outlier = _outliers(centred, graph, meta)
        if label_score is not None:
            rows.append(make_rows(ids, pred, C.ISSUE_LABEL, meta["label_issues"], 1 - label_score))
        rows.append(make_rows(ids, pred, C.ISSUE_OUTLIER, outlier, 1 - outlier_score))
    else:
        label_score = outlier_score = None
        meta["notes"].append(f"{n} ok images: too few to compare")
    issues = pd.concat([r for r in rows if len(r)], ignore_index=True) if any(len(r) for r in rows) else None
    issues = _finish(issues, ids, label_score, outlier_score)
    meta["counts"] = {i: int((issues[C.ISSUE] == i).sum()) for i in C.ISSUES}
    meta.pop("label_issues", None)
    return DatasetIssues(issues, meta)


def _label_scores(labels, pred, classes, graph: Neighbours, meta) -> np.ndarray | None:
    """cleanlab's label quality of each image (NaN where unlabeled), the flagged ones in meta; None: no labels."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    code = pd.Categorical(labels, categories=list(classes)).codes  # -1: no label among the classes
    have = code >= 0
    if len(np.unique(code[have])) < 2:
        meta["notes"].append("label issues need labels of at least two classes: not checked")
        return None
    model = pred[[C.prob_column(c) for c in classes]].to_numpy(np.float64)
    model = np.nan_to_num(model, nan=1 / len(classes))
    votes = np.zeros_like(model)
    weight = 1 / np.maximum(graph.dist.astype(np.float64), 1e-9)  # sklearn's weights="distance": 1 / d
    for col in range(graph.index.shape[1]):  # out of sample: each image's neighbours, never itself
        nb = graph.index[:, col]
        nb_code = np.where(nb >= 0, code[np.maximum(nb, 0)], -1)
        hit = np.flatnonzero(nb_code >= 0)
        votes[hit, nb_code[hit]] += weight[hit, col]
    total = votes.sum(axis=1, keepdims=True)
    votes = np.where(total > 0, votes / np.where(total > 0, total, 1), 1 / len(classes))
    probs = (model / model.sum(axis=1, keepdims=True) + votes) / 2  # (N, K)
    score = np.full(len(code), np.nan)
    score[have] = get_label_quality_scores(code[have], probs[have], adjust_pred_probs=True)
    flagged = np.zeros(len(code), bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns about tiny classes; the flags are still its own
        flagged[have] = find_label_issues(code[have], probs[have], n_jobs=1)
    meta["label_issues"] = flagged
    meta["label_evidence"] = "mean of the model's probabilities and the k neighbours' label vote (weights 1 / distance)"
    return score


def _outliers(centred, graph: Neighbours, meta) -> tuple[np.ndarray, np.ndarray]:
    from cleanlab.outlier import OutOfDistribution
    from sklearn.neighbors import NearestNeighbors

    distance = graph.dist.astype(np.float64)  # (N, k)
    k = int((graph.index >= 0).all(axis=0).sum())
    if k == 0:
        return np.ones(len(centred)), np.zeros(len(centred), bool)

    class Graph(NearestNeighbors):  # cleanlab takes a fitted sklearn NearestNeighbors; this one is precomputed
        def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
            return distance[:, :k], graph.index[:, :k]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "a KNN estimator has previously already been fit": ours, on purpose
        score = OutOfDistribution(params={"knn": Graph(n_neighbors=k), "k": k}).fit_score(
            features=centred, verbose=False
        )
    mean = distance[:, :k].mean(axis=1)
    q1, q3 = np.percentile(mean, [25, 75])
    limit = q3 + (1 / OUTLIER_IQR_THRESHOLD - 1) * (q3 - q1)
    meta["outlier_rule"] = f"mean distance to {k} neighbours above {limit:.4g} (Q3 + 1.7 IQR)"
    return np.asarray(score, np.float64), mean > limit


def _finish(issues, ids, label_score, outlier_score) -> pd.DataFrame:
    """Every column of the contract, the library's scores joined on, a rank within each issue."""
    if issues is None:
        issues = pd.DataFrame({c: pd.Series(dtype=object) for c in C.DATASET_ISSUES_COLUMNS})
    where = pd.Index(ids).get_indexer(issues[C.IMAGE_ID])
    for name, values in ((C.LABEL_SCORE, label_score), (C.OUTLIER_SCORE, outlier_score)):
        issues[name] = np.asarray(values, np.float64)[where] if values is not None and len(where) else np.nan
    for name in C.DATASET_ISSUES_COLUMNS:
        if name not in issues:
            issues[name] = None
    issues[C.ISSUE_RANK] = issues.groupby(C.ISSUE, sort=False).cumcount() + 1
    return issues[list(C.DATASET_ISSUES_COLUMNS)].reset_index(drop=True)
