"""Per-class channel statistics over a whole run, streamed from the activation Parquet, and their rankings.

For every channel and class (one class against all the others): mean and standard deviation (analysis.stats.moments),
Cohen's d and the exact rank-based ROC AUC (Mann-Whitney U / (n1 n0), ties counting one half).

Memory: the exact AUC needs every image's value of a channel at once (a rank is a global property), so a layer
is read in blocks of channels, all rows of a block at a time; Parquet is columnar, so a block costs only its own
columns' bytes and the whole layer is still read once. The block size follows a memory budget:
200,000 images x 512 channels x 4 bytes = 400 MB for a whole layer; 256 MB buys about 320 channels at a time.
Within a block, moments come from one-hot matrix products (no masked copies) and AUCs from integer sorts.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping

import numpy as np
import pandas as pd

from analysis.stats.groups import Groups
from analysis.stats.moments import Moments, compute_cohens_d
from analysis.store import contract
from analysis.store.blocks import read_channel_block, read_image_ids

log = logging.getLogger(__name__)
_SUB = 8  # channels sorted together: keeps the sort keys (8 x N x 8 bytes) in cache-friendly pieces


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
    pos = np.arange(values.shape[1], dtype=np.uint64)  # exact integer sums below
    bits = sortable_bits(values).astype(np.uint64) << np.uint64(1)  # (B, N), the low bit free for a tag
    tag = member.astype(np.uint64)
    key = bits | tag
    key.sort(axis=1)
    wins = ((key & np.uint64(1)) @ pos).astype(np.float64)  # ties counted as wins
    key >>= np.uint64(1)  # the sorted values' bits
    zero = np.uint64(0x80000000)  # sortable_bits(0.0)
    other_ties = ((key[:, 1:] == key[:, :-1]) & (key[:, 1:] != zero)).any(axis=1)
    zeros = values == 0
    z1 = np.count_nonzero(zeros & member, axis=1).astype(np.float64)
    u = wins - 0.5 * z1 * (np.count_nonzero(zeros, axis=1) - z1)
    for row in np.flatnonzero(other_ties):
        again = bits[row] | (np.uint64(1) - tag)  # members before their ties
        again.sort()
        u[row] = (wins[row] + float((np.uint64(1) - (again & np.uint64(1))) @ pos)) / 2.0
    auc = (u - n1 * (n1 - 1) / 2.0) / (float(n1) * float(n0))
    auc[np.isnan(values).any(axis=1)] = np.nan
    return auc


def compute_table_stats(
    table_dir: str | os.PathLike, n_channels: int, groups: Groups, memory_bytes: int, threads: int = 1
) -> dict[str, np.ndarray]:
    """One activation table (a layer's means or maxima) -> per-class arrays (K, C) and counts (K,).

    `threads` work on pieces of a block at once: numpy's sorts and products release the GIL.
    """
    k_classes = len(groups.classes)
    codes = groups.codes_of(read_image_ids(table_dir))  # (N,), -1: in no class
    inside = codes >= 0
    everyone = bool(inside.all())
    codes_in = codes if everyone else codes[inside]
    members = [codes_in == k for k in range(k_classes)]
    moments = Moments.empty(k_classes, n_channels)
    auc = np.full((k_classes, n_channels), np.nan)

    def piece(sub: np.ndarray) -> tuple[Moments, np.ndarray]:  # (b, N_in) -> moments, (K, b) AUC
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
            block = read_channel_block(
                table_dir, chans.tolist(), len(codes), max(1024, memory_bytes // (8 * 4 * len(chans)))
            )  # (B, N)
            if not everyone:
                block = block[:, inside]
            starts = range(0, len(chans), _SUB)
            for s, (part, aucs) in zip(starts, pool.map(piece, (block[s : s + _SUB] for s in starts))):
                cols = chans[s : s + _SUB]
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
    return {
        contract.N: moments.n,
        contract.MEAN: mean,
        contract.STD: std,
        contract.REST_MEAN: rest_mean,
        contract.REST_STD: rest_std,
        contract.COHENS_D: d,
        contract.AUC: auc,
    }


def rank_channels(df: pd.DataFrame) -> pd.DataFrame:
    """Add rank_selectivity (auc, then cohens_d, descending) and rank_mean within each (layer, stat, class)."""
    df = df.sort_values(
        [contract.LAYER, contract.STAT, contract.CLASS, contract.AUC, contract.COHENS_D, contract.CHANNEL],
        ascending=[True, True, True, False, False, True],
        na_position="last",
        kind="stable",
    )
    df[contract.RANK_SELECTIVITY] = (
        df.groupby([contract.LAYER, contract.STAT, contract.CLASS], sort=False).cumcount().astype(np.int32) + 1
    )
    df = df.sort_values(
        [contract.LAYER, contract.STAT, contract.CLASS, contract.MEAN, contract.CHANNEL],
        ascending=[True, True, True, False, True],
        na_position="last",
        kind="stable",
    )
    df[contract.RANK_MEAN] = (
        df.groupby([contract.LAYER, contract.STAT, contract.CLASS], sort=False).cumcount().astype(np.int32) + 1
    )
    return df.sort_values([contract.LAYER, contract.STAT, contract.CLASS, contract.CHANNEL], kind="stable").reset_index(
        drop=True
    )


def compute_channel_stats(
    run: str | os.PathLike, layers: Mapping[str, int], groups: Groups, memory_bytes: int = 256 << 20, threads: int = 1
) -> pd.DataFrame:
    """Every channel of every layer in `layers` ({name: channels}), means and maxima -> the channel_stats table."""
    frames = []
    for layer, n_channels in layers.items():
        for stat in (contract.STAT_MEAN, contract.STAT_MAX):
            table = contract.activation_dir(run, layer, stat)
            s = compute_table_stats(table, n_channels, groups, memory_bytes, threads)
            k, c = s[contract.MEAN].shape
            frames.append(
                pd.DataFrame(
                    {
                        contract.LAYER: layer,
                        contract.STAT: stat,
                        contract.CHANNEL: np.tile(np.arange(c, dtype=np.int32), k),
                        contract.CLASS: np.repeat(np.array(groups.classes, dtype=object), c),
                        contract.GROUP_BY: groups.by,
                        contract.N: np.repeat(s[contract.N], c),
                        **{
                            name: s[name].ravel()
                            for name in (
                                contract.MEAN,
                                contract.STD,
                                contract.REST_MEAN,
                                contract.REST_STD,
                                contract.COHENS_D,
                                contract.AUC,
                            )
                        },
                    }
                )
            )
            log.debug("statistics: %s %s done", layer, stat)
    return rank_channels(pd.concat(frames, ignore_index=True))
