"""Dataset checks from what the network saw: exact and near duplicates, likely label errors, outliers.

Each ok image is described by its channel means at one layer (conv5_3), centred (the dataset mean subtracted).
Centred, because every post-ReLU mean vector shares a large common part: with random weights the raw cosine of
distinct real photos is 0.986-0.999, so a raw threshold flags everything. Measured on the 20 real photos in
../shared and their resized, re-encoded copies (benchmarks/bench_checks.py measures it again), centred cosine:
distinct photos at most 0.953 (64 px), 0.974 (96 px), 0.983 (224 px); copies at least 0.9992.

One k-nearest-neighbour graph by Euclidean distance (analysis.stats.neighbours) serves the three checks, whose
methods are cleanlab's:
- near duplicates: pairs of neighbours whose cosine, in the full space, is at or above the threshold and whose
  distance is within 0.1 x the median distance to the k-th neighbour. Cosine alone pairs up distinct pictures of
  a cluster far from the mean (line drawings traced from different photos: 0.9952); by distance (k = 10), copies
  lie within 0.020 x that median, distinct photos beyond 0.52 x, the drawings beyond 0.61 x. Datalab's scale, the
  median distance to the first neighbour, collapses when many images have a copy (then it is a copy's distance).
  Files with the same sha256 (from extract) are exact duplicates, in groups, and never also a near pair;
- label issues (labeled runs): cleanlab.filter.find_label_issues (confident learning) and
  cleanlab.rank.get_label_quality_scores, on probabilities that average the model's with the neighbours' label
  vote (weighted by 1 / distance, out of sample), so a label must disagree with both to rank low;
- outliers: cleanlab.outlier.OutOfDistribution over the same graph, flagged as Datalab flags them: a mean distance
  to the k neighbours above Q3 + (1 / 0.37037 - 1) IQR. Euclidean, not cosine: an image whose activations are
  unusually strong is atypical, and cosine cannot see it (line drawings among the photos: mean distance 0.81-1.12,
  photos 0.21-0.35; by cosine both about 0.4-0.9).
Datalab itself is not used: it needs Hugging Face `datasets` and its hub client (README, "Dataset checks").

Memory: the (N, C) float32 features (25,000 x 512: 51 MB) plus one block of distances (`memory_bytes`).
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.stats.neighbours import Neighbours, compute_neighbours
from analysis.store import contract, tables

C = contract
OUTLIER_IQR_THRESHOLD = 0.37037   # Datalab's default for features: Q3 + (1 / t - 1) IQR
MEASURED = ("centred cosine, random weights, the 20 real photos and their resized re-encoded copies: distinct photos "
            "<= 0.953 (64 px), 0.974 (96 px), 0.983 (224 px); copies >= 0.9992; raw cosine of distinct photos "
            "0.986-0.999")


@dataclasses.dataclass(frozen=True)
class Settings:
    threshold: float          # near-duplicate cosine
    radius: float             # near duplicates also lie within radius x the median distance to the k-th neighbour
    k: int                    # neighbours per image
    exact_max_images: int     # above this, the search is approximate
    approx_dims: int          # principal components searched when approximate
    memory_bytes: int         # one block of similarities


@dataclasses.dataclass(frozen=True)
class Checks:
    issues: pd.DataFrame      # contract.DATASET_ISSUES_COLUMNS
    meta: dict                # what was done and how (the table's metadata, the page's numbers)


def library_versions() -> dict[str, str]:
    import cleanlab
    import sklearn
    return {"cleanlab": cleanlab.__version__, "scikit-learn": sklearn.__version__}


def read_layer_means(run: str | os.PathLike, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """(N,) image ids and (N, C) float32 channel means of a layer, in table order, batch by batch."""
    ids, values = [], []
    for i, x in tables.iter_channel_batches(contract.activation_dir(Path(run), layer, "mean")):
        ids.append(i)
        values.append(x.astype(np.float32))
    if not ids:
        return np.zeros(0, object), np.zeros((0, 0), np.float32)
    return np.concatenate(ids), np.concatenate(values)


def compute_checks(ids: np.ndarray, x: np.ndarray, predictions: pd.DataFrame, classes: Sequence[str],
                   settings: Settings) -> Checks:
    """All checks over the images of `ids` (N,) with features `x` (N, C); `predictions` indexed by image id
    gives label, pred, sha256 (absent on runs older than format 2) and the class probabilities."""
    pred = predictions.reindex(pd.Index(ids))
    labels = pred[C.LABEL].where(pred[C.LABEL].isin(classes))
    n = len(ids)
    centred = x - x.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32) if n else x
    approximate = n > settings.exact_max_images
    meta = {"n_images": n, "representation": "channel means minus the dataset mean; near duplicates by cosine, "
            "neighbours by Euclidean distance", "threshold": settings.threshold, "threshold_measured": MEASURED,
            "k": settings.k, "search": (f"approximate: top {settings.approx_dims} principal components, near pairs "
                                        "re-scored in the full space") if approximate else "exact",
            "notes": []}
    rows = [_exact_duplicates(ids, pred, meta)]
    if n >= 2:
        graph = compute_neighbours(centred, settings.k, settings.memory_bytes,
                                   settings.approx_dims if approximate else None)
        rows.append(_near_duplicates(ids, pred, centred, graph, settings, meta))
        label_score = _label_scores(labels, pred, classes, graph, meta)
        outlier_score, outlier = _outliers(centred, graph, meta)
        if label_score is not None:
            rows.append(_rows(ids, pred, C.ISSUE_LABEL, meta["label_issues"], 1 - label_score))
        rows.append(_rows(ids, pred, C.ISSUE_OUTLIER, outlier, 1 - outlier_score))
    else:
        label_score = outlier_score = None
        meta["notes"].append(f"{n} ok images: too few to compare")
    issues = pd.concat([r for r in rows if len(r)], ignore_index=True) if any(len(r) for r in rows) else None
    issues = _finish(issues, ids, label_score, outlier_score)
    meta["counts"] = {i: int((issues[C.ISSUE] == i).sum()) for i in C.ISSUES}
    meta.pop("label_issues", None)
    return Checks(issues, meta)


def _exact_duplicates(ids, pred, meta) -> pd.DataFrame:
    if C.SHA256 not in pred or pred[C.SHA256].isna().all():
        meta["notes"].append("no sha256 column (a run extracted before format 2): exact duplicates not checked")
        return pd.DataFrame()
    frame = pd.DataFrame({C.IMAGE_ID: ids, "h": pred[C.SHA256].to_numpy(), C.LABEL: pred[C.LABEL].to_numpy()})
    frame = frame[frame["h"].notna() & frame["h"].duplicated(keep=False)]
    if frame.empty:
        return frame
    by = frame.groupby("h", sort=False)
    differ = by[C.LABEL].transform(lambda s: s.fillna("\0").nunique() > 1)
    size = by[C.IMAGE_ID].transform("size")
    frame = frame.assign(**{C.LABELS_DIFFER: differ, "size": size, "first": by[C.IMAGE_ID].transform("min")})
    frame = frame.sort_values([C.LABELS_DIFFER, "size", "first", C.IMAGE_ID], ascending=[False, False, True, True])
    frame[C.GROUP] = pd.factorize(frame["h"])[0] + 1
    return _rows(frame[C.IMAGE_ID].to_numpy(), pred.loc[frame[C.IMAGE_ID]], C.ISSUE_EXACT_DUPLICATE, None,
                 np.ones(len(frame)), **{C.GROUP: frame[C.GROUP].to_numpy(),
                                         C.LABELS_DIFFER: frame[C.LABELS_DIFFER].to_numpy()})


def _near_duplicates(ids, pred, centred, graph: Neighbours, settings: Settings, meta: dict) -> pd.DataFrame:
    threshold = settings.threshold
    norm = np.linalg.norm(centred, axis=1).astype(np.float64)                            # (N,)
    scale = _kth_distances(centred, graph)
    radius = settings.radius * float(np.median(scale)) if len(scale) else 0.0
    meta["near_duplicate_radius"] = radius
    meta["radius_rule"] = f"{settings.radius} x the median distance to the k-th neighbour, k = {graph.index.shape[1]}"
    a, b = np.repeat(np.arange(len(ids)), graph.index.shape[1]), graph.index.reshape(-1)   # every edge
    d = graph.dist.reshape(-1).astype(np.float64)
    # cos = (|a|^2 + |b|^2 - d^2) / (2 |a| |b|): exact from an exact search; from a projection, whose distances
    # are never longer, an upper bound. Only the pairs that pass it are multiplied out in the full space.
    na, nb = norm[a], norm[np.maximum(b, 0)]
    bound = (na * na + nb * nb - d * d) / np.maximum(2 * na * nb, 1e-30)
    keep = (b >= 0) & (bound >= threshold - 1e-4) & (d <= radius * (1 + 1e-4))   # a projection: never longer
    a, b = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    pairs = np.unique(np.stack([a, b], axis=1), axis=0) if len(a) else np.zeros((0, 2), np.int64)
    cosine = np.einsum("ij,ij->i", centred[pairs[:, 0]], centred[pairs[:, 1]], dtype=np.float64) / np.maximum(
        norm[pairs[:, 0]] * norm[pairs[:, 1]], 1e-30)
    sha = pred[C.SHA256].to_numpy() if C.SHA256 in pred else np.full(len(ids), None)
    same_file = np.array([sha[p] is not None and sha[p] == sha[q] for p, q in pairs], bool)
    dot = cosine * norm[pairs[:, 0]] * norm[pairs[:, 1]]
    distance = np.sqrt(np.maximum(norm[pairs[:, 0]] ** 2 + norm[pairs[:, 1]] ** 2 - 2 * dot, 0))   # full space
    keep = (cosine >= threshold) & (distance <= radius) & ~same_file
    pairs, cosine = pairs[keep], cosine[keep]
    label = pred[C.LABEL].to_numpy()
    differ = np.array([label[p] != label[q] for p, q in pairs], bool)
    order = np.lexsort((-cosine, ~differ))
    pairs, cosine, differ = pairs[order], cosine[order], differ[order]
    both, two = pairs.reshape(-1), (lambda v: np.repeat(v, 2))   # rows side by side: a pair's two images in turn
    return _rows(ids[both], pred.iloc[both], C.ISSUE_NEAR_DUPLICATE, None, two(cosine),
                 **{C.PAIR: two(np.arange(1, len(pairs) + 1)), C.PARTNER: ids[pairs[:, ::-1].reshape(-1)],
                    C.LABELS_DIFFER: two(differ), C.COSINE: two(cosine)})


def _kth_distances(centred, graph: Neighbours, rows: int = 8192) -> np.ndarray:
    """Each image's distance to its last (k-th) neighbour in the full space (the graph's own when it is exact)."""
    have = np.flatnonzero(graph.index[:, -1] >= 0)
    if graph.dims is None:
        return graph.dist[have, -1].astype(np.float64)
    return np.concatenate([np.linalg.norm(centred[i] - centred[graph.index[i, -1]], axis=1)
                           for i in np.array_split(have, max(1, len(have) // rows))]).astype(np.float64)


def _label_scores(labels, pred, classes, graph: Neighbours, meta) -> np.ndarray | None:
    """cleanlab's label quality of each image (NaN where unlabeled), the flagged ones in meta; None: no labels."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    code = pd.Categorical(labels, categories=list(classes)).codes   # -1: no label among the classes
    have = code >= 0
    if len(np.unique(code[have])) < 2:
        meta["notes"].append("label issues need labels of at least two classes: not checked")
        return None
    model = pred[[C.prob_column(c) for c in classes]].to_numpy(np.float64)
    model = np.nan_to_num(model, nan=1 / len(classes))
    votes = np.zeros_like(model)
    weight = 1 / np.maximum(graph.dist.astype(np.float64), 1e-9)   # sklearn's weights="distance": 1 / d
    for col in range(graph.index.shape[1]):   # out of sample: each image's neighbours, never itself
        nb = graph.index[:, col]
        nb_code = np.where(nb >= 0, code[np.maximum(nb, 0)], -1)
        hit = np.flatnonzero(nb_code >= 0)
        votes[hit, nb_code[hit]] += weight[hit, col]
    total = votes.sum(axis=1, keepdims=True)
    votes = np.where(total > 0, votes / np.where(total > 0, total, 1), 1 / len(classes))
    probs = (model / model.sum(axis=1, keepdims=True) + votes) / 2                     # (N, K)
    score = np.full(len(code), np.nan)
    score[have] = get_label_quality_scores(code[have], probs[have], adjust_pred_probs=True)
    flagged = np.zeros(len(code), bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # cleanlab warns about tiny classes; the flags are still its own
        flagged[have] = find_label_issues(code[have], probs[have], n_jobs=1)
    meta["label_issues"] = flagged
    meta["label_evidence"] = "mean of the model's probabilities and the k neighbours' label vote (weights 1 / distance)"
    return score


def _outliers(centred, graph: Neighbours, meta) -> tuple[np.ndarray, np.ndarray]:
    from cleanlab.outlier import OutOfDistribution
    from sklearn.neighbors import NearestNeighbors
    distance = graph.dist.astype(np.float64)                             # (N, k)
    k = int((graph.index >= 0).all(axis=0).sum())
    if k == 0:
        return np.ones(len(centred)), np.zeros(len(centred), bool)

    class Graph(NearestNeighbors):   # cleanlab takes a fitted sklearn NearestNeighbors; this one is precomputed
        def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
            return distance[:, :k], graph.index[:, :k]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "a KNN estimator has previously already been fit": ours, on purpose
        score = OutOfDistribution(params={"knn": Graph(n_neighbors=k), "k": k}).fit_score(features=centred,
                                                                                           verbose=False)
    mean = distance[:, :k].mean(axis=1)
    q1, q3 = np.percentile(mean, [25, 75])
    limit = q3 + (1 / OUTLIER_IQR_THRESHOLD - 1) * (q3 - q1)
    meta["outlier_rule"] = f"mean distance to {k} neighbours above {limit:.4g} (Q3 + 1.7 IQR)"
    return np.asarray(score, np.float64), mean > limit


def _rows(ids, pred, issue, flagged, score, **extra) -> pd.DataFrame:
    pick = np.ones(len(ids), bool) if flagged is None else np.asarray(flagged, bool)
    frame = pd.DataFrame({C.IMAGE_ID: np.asarray(ids, object)[pick], C.ISSUE: issue,
                          C.SCORE: np.asarray(score, np.float64)[pick],
                          C.LABEL: pred[C.LABEL].to_numpy()[pick], C.PRED: pred[C.PRED].to_numpy()[pick]})
    for name, values in extra.items():
        frame[name] = np.asarray(values)[pick]
    if issue in (C.ISSUE_LABEL, C.ISSUE_OUTLIER):
        frame = frame.sort_values([C.SCORE, C.IMAGE_ID], ascending=[False, True], kind="stable")
    return frame


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
