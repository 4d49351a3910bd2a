"""The pairs and groups of images the dataset checks report (analysis.stats.dataset_issues says why each rule and
its measured figures): identical files by sha256, near duplicates by pHash, similar scenes by the network's features.

The first two read only the predictions (the files and their pixels), never the network, so their answer does not
change with the weights.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.stats.hamming import compute_hamming_pairs
from analysis.stats.neighbours import Neighbours
from analysis.store import contract as C


def find_exact_duplicates(ids, pred, meta: dict) -> pd.DataFrame:
    """Groups of files with the same sha256, groups whose labels differ first, then the largest."""
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
    return make_rows(
        frame[C.IMAGE_ID].to_numpy(),
        pred.loc[frame[C.IMAGE_ID]],
        C.ISSUE_EXACT_DUPLICATE,
        None,
        np.ones(len(frame)),
        **{C.GROUP: frame[C.GROUP].to_numpy(), C.LABELS_DIFFER: frame[C.LABELS_DIFFER].to_numpy()},
    )


def find_near_duplicates(
    ids, pred, radius: int, memory_bytes: int, meta: dict
) -> tuple[pd.DataFrame, set[tuple[int, int]]]:
    """Pairs of pHashes within the radius, less pairs of identical files; and every pair within it (a, b), a < b."""
    if C.PHASH not in pred:
        raise ValueError(f"predictions have no {C.PHASH} column: checks.refuse_without_phash says so before this")
    phash = pred[C.PHASH].astype("Int64")  # never through float64: 64 bits do not fit its 53
    have = np.flatnonzero(phash.notna().to_numpy())
    if len(have) < len(ids):
        meta["notes"].append(f"{len(ids) - len(have)} ok images without a pHash: not compared for near duplicates")
    a, b, bits = compute_hamming_pairs(phash.iloc[have].to_numpy(np.int64), radius, memory_bytes)
    a, b = have[a], have[b]
    near = set(zip(a.tolist(), b.tolist()))
    sha = pred[C.SHA256].to_numpy() if C.SHA256 in pred else np.full(len(ids), None)
    same_file = np.array([sha[p] is not None and sha[p] == sha[q] for p, q in zip(a, b)], bool)
    a, b, bits = a[~same_file], b[~same_file], bits[~same_file].astype(np.int64)
    meta["near_duplicate_rule"] = f"pHashes differing in at most {radius} of 64 bits, not identical files"
    frame = _pair_rows(
        ids, pred, C.ISSUE_NEAR_DUPLICATE, np.stack([a, b], axis=1), 1 - bits / 64, bits, {C.HAMMING: bits}
    )
    return frame, near


def compute_scene_ratios(graph: Neighbours, x: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mutual nearest neighbours (a, b), a < b, and the ratio of their distance to the nearer of the two images'
    distances to their second neighbour (P,): in the space searched, or in `x`'s full space when given."""
    first, second = graph.index[:, 0], graph.index[:, 1] if graph.index.shape[1] > 1 else None
    if second is None or not len(first):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    idx = np.arange(len(first))
    has = (first >= 0) & (second >= 0)
    mutual = has & has[np.maximum(first, 0)] & (first[np.maximum(first, 0)] == idx) & (idx < first)
    a, b = idx[mutual], first[mutual]
    if x is None:
        d, da, db = graph.dist[a, 0], graph.dist[a, 1], graph.dist[b, 1]
    else:
        gap = lambda p, q: np.linalg.norm(x[p] - x[q], axis=1)  # noqa: E731  (P,) full-space distances
        d, da, db = gap(a, b), gap(a, second[a]), gap(b, second[b])
    return a, b, d.astype(np.float64) / np.maximum(np.minimum(da, db).astype(np.float64), 1e-30)


def find_similar_scenes(ids, pred, centred, graph: Neighbours, ratio_limit: float, near: set) -> pd.DataFrame:
    """Mutual nearest neighbours within `ratio_limit`, less the near pairs `near` and identical files."""
    a, b, ratio = compute_scene_ratios(graph, centred if graph.dims is not None else None)
    sha = pred[C.SHA256].to_numpy() if C.SHA256 in pred else np.full(len(ids), None)
    keep = (ratio <= ratio_limit) & np.array(
        [(p, q) not in near and not (sha[p] is not None and sha[p] == sha[q]) for p, q in zip(a, b)], bool
    )
    a, b, ratio = a[keep], b[keep], ratio[keep]
    norm = np.linalg.norm(centred[np.concatenate([a, b])], axis=1).reshape(2, -1)
    cosine = np.einsum("ij,ij->i", centred[a], centred[b], dtype=np.float64) / np.maximum(norm[0] * norm[1], 1e-30)
    return _pair_rows(
        ids,
        pred,
        C.ISSUE_SIMILAR_SCENE,
        np.stack([a, b], axis=1),
        1 - ratio,
        ratio,
        {C.DISTANCE_RATIO: ratio, C.COSINE: cosine},
    )


def _pair_rows(
    ids, pred, issue: str, pairs: np.ndarray, score: np.ndarray, order_by: np.ndarray, columns: dict
) -> pd.DataFrame:
    """Two rows per pair (P, 2), side by side: pairs whose labels differ first, then by `order_by` ascending."""
    label = pred[C.LABEL].to_numpy()
    differ = np.array([label[p] != label[q] for p, q in pairs], bool)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], order_by, ~differ))
    pairs, differ = pairs[order], differ[order]
    both, two = pairs.reshape(-1), (lambda v: np.repeat(np.asarray(v)[order], 2))
    return make_rows(
        ids[both],
        pred.iloc[both],
        issue,
        None,
        two(score),
        **{
            C.PAIR: np.repeat(np.arange(1, len(pairs) + 1), 2),
            C.PARTNER: ids[pairs[:, ::-1].reshape(-1)],
            C.LABELS_DIFFER: np.repeat(differ, 2),
            **{k: two(v) for k, v in columns.items()},
        },
    )


def make_rows(ids, pred, issue, flagged, score, **extra) -> pd.DataFrame:
    """One row per flagged image of the contract's columns given (label issues and outliers: worst first)."""
    pick = np.ones(len(ids), bool) if flagged is None else np.asarray(flagged, bool)
    frame = pd.DataFrame(
        {
            C.IMAGE_ID: np.asarray(ids, object)[pick],
            C.ISSUE: issue,
            C.SCORE: np.asarray(score, np.float64)[pick],
            C.LABEL: pred[C.LABEL].to_numpy()[pick],
            C.PRED: pred[C.PRED].to_numpy()[pick],
        }
    )
    for name, values in extra.items():
        frame[name] = np.asarray(values)[pick]
    if issue in (C.ISSUE_LABEL, C.ISSUE_OUTLIER):
        frame = frame.sort_values([C.SCORE, C.IMAGE_ID], ascending=[False, True], kind="stable")
    return frame
