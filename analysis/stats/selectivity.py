"""Per-class channel statistics over a whole run, streamed from the activation Parquet.

For every channel and class (one class against all the others): mean and standard deviation, Cohen's d and the
exact rank-based ROC AUC (Mann-Whitney U / (n1 n0), ties counting one half).

Memory: the exact AUC needs every image's value of a channel at once (a rank is a global property), so a layer
is read in blocks of channels, all rows of a block at a time; Parquet is columnar, so a block costs only its own
columns' bytes and the whole layer is still read once. The block size follows a memory budget:
200,000 images x 512 channels x 4 bytes = 400 MB for a whole layer; 256 MB buys about 320 channels at a time.
Within a block, moments come from one-hot matrix products (no masked copies) and AUCs from integer sorts.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.store import contract, tables

log = logging.getLogger(__name__)
_SUB = 8  # channels sorted together: keeps the sort keys (8 x N x 8 bytes) in cache-friendly pieces


@dataclasses.dataclass(frozen=True)
class Groups:
    """Which class each ok image counts for: its label, or on an unlabeled run its predicted class."""
    classes: tuple[str, ...]
    by: str                    # contract.GROUP_LABEL or contract.GROUP_PRED
    code: pd.Series            # image_id -> class index; images in no class are absent

    def codes_of(self, image_ids: Sequence[str]) -> np.ndarray:
        """(N,) class index of each id, -1 for images in no class."""
        where = self.code.index.get_indexer(pd.Index(image_ids))
        return np.where(where >= 0, self.code.to_numpy()[where], -1).astype(np.int64)


def make_groups(predictions: pd.DataFrame, classes: Sequence[str]) -> Groups:
    """Group ok images by label when any image has a label among `classes`, otherwise by predicted class."""
    ok = predictions[predictions[contract.STATUS] == contract.STATUS_OK]
    by, column = contract.GROUP_LABEL, ok[contract.LABEL]
    if not column.isin(classes).any():
        by, column = contract.GROUP_PRED, ok[contract.PRED]
    keep = column.isin(classes).to_numpy()
    codes = pd.Categorical(column[keep], categories=list(classes)).codes.astype(np.int64)
    return Groups(tuple(classes), by, pd.Series(codes, index=pd.Index(ok[contract.IMAGE_ID][keep])))


@dataclasses.dataclass
class Moments:
    """Per-class count, mean and sum of squared deviations (K, C); mergeable (Chan, Golub and LeVeque)."""
    n: np.ndarray      # (K,) int64
    mean: np.ndarray   # (K, C) float64
    m2: np.ndarray     # (K, C) float64

    @classmethod
    def empty(cls, n_classes: int, n_channels: int) -> "Moments":
        return cls(np.zeros(n_classes, np.int64), np.zeros((n_classes, n_channels)), np.zeros((n_classes, n_channels)))

    def add(self, values: np.ndarray, codes: np.ndarray) -> None:
        """values (C, n), codes (n,) (-1: in no class): fold a batch of images in.

        Per-class sums of the shifted values are one-hot matrix products in float64; shifting by the batch mean
        first keeps sum-of-squares - sum^2 / n free of cancellation.
        """
        if not values.shape[1]:
            return
        x = values.astype(np.float64)                                            # (C, n)
        shift = x.mean(axis=1)                                                   # (C,)
        x -= shift[:, None]
        onehot = (codes[:, None] == np.arange(len(self.n))).astype(np.float64)  # (n, K)
        count = onehot.sum(axis=0).astype(np.int64)                              # (K,)
        s1, s2 = x @ onehot, (x * x) @ onehot                                    # (C, K) each
        for k in np.flatnonzero(count):
            n = int(count[k])
            self._fold(k, n, shift + s1[:, k] / n, s2[:, k] - s1[:, k] ** 2 / n)

    def merge(self, other: "Moments") -> None:
        for k in range(len(self.n)):
            if other.n[k]:
                self._fold(k, int(other.n[k]), other.mean[k], other.m2[k])

    def _fold(self, k: int, nb: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        na = int(self.n[k])
        n = na + nb
        delta = mean_b - self.mean[k]
        self.mean[k] = self.mean[k] + delta * (nb / n)
        self.m2[k] = self.m2[k] + m2_b + delta ** 2 * (na * nb / n)
        self.n[k] = n

    def std(self) -> np.ndarray:
        """(K, C) sample standard deviation (ddof=1); nan for a class with fewer than two images."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(self.m2 / (self.n[:, None] - 1.0)) * np.where(self.n[:, None] > 1, 1.0, np.nan)

    def rest(self, k: int) -> "Moments":
        """One row: every class but k pooled."""
        out = Moments.empty(1, self.mean.shape[1])
        for j in range(len(self.n)):
            if j != k and self.n[j]:
                out._fold(0, int(self.n[j]), self.mean[j], self.m2[j])
        return out


def compute_cohens_d(n1, mean1, std1, n0, mean0, std0) -> np.ndarray:
    """(mean1 - mean0) / pooled sd, pooled sd = sqrt(((n1-1) s1^2 + (n0-1) s0^2) / (n1 + n0 - 2)); 0 when both are flat."""
    pooled = np.sqrt(((n1 - 1) * std1 ** 2 + (n0 - 1) * std0 ** 2) / np.maximum(n1 + n0 - 2, 1))
    diff = np.asarray(mean1 - mean0, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pooled > 0, diff / np.where(pooled > 0, pooled, 1.0), np.where(diff == 0, 0.0,
                                                                                       np.sign(diff) * np.inf))


def sortable_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> uint32 whose unsigned order is the float order (NaN aside), so numpy's SIMD integer sorts apply."""
    bits = (np.asarray(values, dtype=np.float32) + np.float32(0.0)).view(np.uint32)  # + 0.0: -0.0 becomes 0.0
    flip = (np.uint32(0) - (bits >> np.uint32(31))) | np.uint32(0x80000000)  # negative: all bits; else the sign
    return bits ^ flip


def compute_rank_auc(values: np.ndarray, member: np.ndarray) -> np.ndarray:
    """values (B, N) float32, member (N,) bool -> (B,) AUC of members against the rest, ties counting one half.

    A tag bit below each value puts members after the others they tie with, so one integer sort (numpy's SIMD
    sort on uint64 keys) gives U with ties counted as wins: the sum of the members' 0-based sorted positions minus
    n1 (n1 - 1) / 2. Half of the tied (member, other) pairs are then taken back. Post-ReLU activations tie
    mostly at exactly 0, where the pairs are counted directly; a row with ties elsewhere is sorted a second time
    with members first (ties as losses) and the two Us are averaged.
    """
    values = np.asarray(values, dtype=np.float32)
    n1 = int(member.sum())
    n0 = values.shape[1] - n1
    if n1 == 0 or n0 == 0:
        return np.full(values.shape[0], np.nan)
    pos = np.arange(values.shape[1], dtype=np.uint64)                         # exact integer sums below
    bits = sortable_bits(values).astype(np.uint64) << np.uint64(1)            # (B, N), the low bit free for a tag
    tag = member.astype(np.uint64)
    key = bits | tag
    key.sort(axis=1)
    wins = ((key & np.uint64(1)) @ pos).astype(np.float64)                    # ties counted as wins
    key >>= np.uint64(1)                                                      # the sorted values' bits
    zero = np.uint64(0x80000000)                                              # sortable_bits(0.0)
    other_ties = ((key[:, 1:] == key[:, :-1]) & (key[:, 1:] != zero)).any(axis=1)
    zeros = values == 0
    z1 = np.count_nonzero(zeros & member, axis=1).astype(np.float64)
    u = wins - 0.5 * z1 * (np.count_nonzero(zeros, axis=1) - z1)
    for row in np.flatnonzero(other_ties):
        again = bits[row] | (np.uint64(1) - tag)                              # members before their ties
        again.sort()
        u[row] = (wins[row] + float((np.uint64(1) - (again & np.uint64(1))) @ pos)) / 2.0
    auc = (u - n1 * (n1 - 1) / 2.0) / (float(n1) * float(n0))
    auc[np.isnan(values).any(axis=1)] = np.nan
    return auc


def read_image_ids(table_dir: str | os.PathLike) -> np.ndarray:
    ids = [b.column(0).to_numpy(zero_copy_only=False) for b in tables.iter_parquet_batches(table_dir,
                                                                                           [contract.IMAGE_ID])]
    return np.concatenate(ids) if ids else np.zeros(0, object)


def read_channel_block(table_dir: str | os.PathLike, channels: Sequence[int], n_rows: int,
                       batch_rows: int = 65536) -> np.ndarray:
    """(len(channels), n_rows) float32: the channels' values in table order, each column copied once.

    Part files are opened per block and closed after it: keeping them open would hold their footers (about 1 MB
    each for 513 columns) and Arrow's read buffers, for little saved time.
    """
    block = np.empty((len(channels), n_rows), np.float32)
    offset = 0
    for batch in tables.iter_parquet_batches(table_dir, [contract.channel_column(c) for c in channels], batch_rows):
        n = batch.num_rows
        if offset + n > n_rows:
            raise ValueError(f"{table_dir}: more rows in the channel columns than the {n_rows} image ids")
        for i, column in enumerate(batch.columns):
            block[i, offset:offset + n] = column.to_numpy(zero_copy_only=False)
        offset += n
    if offset != n_rows:
        raise ValueError(f"{table_dir}: {offset} rows in the channel columns but {n_rows} image ids")
    return block


def compute_table_stats(table_dir: str | os.PathLike, n_channels: int, groups: Groups,
                        memory_bytes: int, threads: int = 1) -> dict[str, np.ndarray]:
    """One activation table (a layer's means or maxima) -> per-class arrays (K, C) and counts (K,).

    `threads` work on pieces of a block at once: numpy's sorts and products release the GIL.
    """
    k_classes = len(groups.classes)
    codes = groups.codes_of(read_image_ids(table_dir))                             # (N,), -1: in no class
    inside = codes >= 0
    everyone = bool(inside.all())
    codes_in = codes if everyone else codes[inside]
    members = [codes_in == k for k in range(k_classes)]
    moments = Moments.empty(k_classes, n_channels)
    auc = np.full((k_classes, n_channels), np.nan)

    def piece(sub: np.ndarray) -> tuple[Moments, np.ndarray]:                   # (b, N_in) -> moments, (K, b) AUC
        part = Moments.empty(k_classes, len(sub))
        part.add(sub, codes_in)
        auc0 = compute_rank_auc(sub, members[0])
        # two classes: class 1 against the rest is the mirror image of class 0 against the rest
        rest = [1.0 - auc0] if k_classes == 2 else [compute_rank_auc(sub, members[k]) for k in range(1, k_classes)]
        return part, np.stack([auc0, *rest])

    # the block, plus a compacted copy when some images are in no class
    width = int(max(1, min(n_channels, memory_bytes // max(1, 4 * len(codes) * (1 if everyone else 2)))))
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for first in range(0, n_channels, width):
            chans = np.arange(first, min(n_channels, first + width))
            # Arrow's batches on the way in: an eighth of the budget
            block = read_channel_block(table_dir, chans.tolist(), len(codes),
                                       max(1024, memory_bytes // (8 * 4 * len(chans))))  # (B, N)
            if not everyone:
                block = block[:, inside]
            starts = range(0, len(chans), _SUB)
            for s, (part, aucs) in zip(starts, pool.map(lambda s: piece(block[s:s + _SUB]), starts)):
                cols = chans[s:s + _SUB]
                moments.n[:], moments.mean[:, cols], moments.m2[:, cols] = part.n, part.mean, part.m2
                auc[:, cols] = aucs
            del block
    std = moments.std()
    rest = [moments.rest(k) for k in range(k_classes)]
    rest_mean = np.stack([r.mean[0] for r in rest])
    rest_std = np.stack([r.std()[0] for r in rest])
    rest_n = np.array([r.n[0] for r in rest])
    d = compute_cohens_d(moments.n[:, None], moments.mean, std, rest_n[:, None], rest_mean, rest_std)
    mean = np.where(moments.n[:, None] > 0, moments.mean, np.nan)
    return {contract.N: moments.n, contract.MEAN: mean, contract.STD: std, contract.REST_MEAN: rest_mean,
            contract.REST_STD: rest_std,
            contract.COHENS_D: d, contract.AUC: auc}


def rank_channels(df: pd.DataFrame) -> pd.DataFrame:
    """Add rank_selectivity (auc, then cohens_d, descending) and rank_mean within each (layer, stat, class)."""
    df = df.sort_values([contract.LAYER, contract.STAT, contract.CLASS, contract.AUC, contract.COHENS_D,
                         contract.CHANNEL],
                        ascending=[True, True, True, False, False, True], na_position="last", kind="stable")
    df[contract.RANK_SELECTIVITY] = df.groupby([contract.LAYER, contract.STAT, contract.CLASS],
                                               sort=False).cumcount().astype(np.int32) + 1
    df = df.sort_values([contract.LAYER, contract.STAT, contract.CLASS, contract.MEAN, contract.CHANNEL],
                        ascending=[True, True, True, False, True], na_position="last", kind="stable")
    df[contract.RANK_MEAN] = df.groupby([contract.LAYER, contract.STAT, contract.CLASS],
                                        sort=False).cumcount().astype(np.int32) + 1
    return df.sort_values([contract.LAYER, contract.STAT, contract.CLASS, contract.CHANNEL],
                          kind="stable").reset_index(drop=True)


def compute_channel_stats(run: str | os.PathLike, layers: Mapping[str, int], groups: Groups,
                          memory_mb: int = 256, threads: int = 1) -> pd.DataFrame:
    """Every channel of every layer in `layers` ({name: channels}), means and maxima -> the channel_stats table."""
    frames = []
    for layer, n_channels in layers.items():
        for stat in (contract.STAT_MEAN, contract.STAT_MAX):
            table = contract.activation_dir(run, layer, stat)
            s = compute_table_stats(table, n_channels, groups, memory_mb * 2 ** 20, threads)
            k, c = s[contract.MEAN].shape
            frames.append(pd.DataFrame({
                contract.LAYER: layer, contract.STAT: stat, contract.CHANNEL: np.tile(np.arange(c, dtype=np.int32), k),
                contract.CLASS: np.repeat(np.array(groups.classes, dtype=object), c), contract.GROUP_BY: groups.by,
                contract.N: np.repeat(s[contract.N], c), **{name: s[name].ravel() for name in
                                                (contract.MEAN, contract.STD, contract.REST_MEAN, contract.REST_STD,
                                                 contract.COHENS_D, contract.AUC)}}))
            log.debug("statistics: %s %s done", layer, stat)
    return rank_channels(pd.concat(frames, ignore_index=True))
