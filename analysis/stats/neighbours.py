"""The k nearest neighbours of every image by Euclidean distance, in blocks of rows sized by a memory budget.

Exact: every pair, one (block x N) matrix of squared distances (|a|^2 + |b|^2 - 2 a.b) at a time; `torch.topk`
keeps the k best of each row without a full sort (numpy's argpartition also returns a (block x N) int64 index
array, three times the block's bytes). Approximate (`dims`): the same search in the top principal components,
which cuts the products by C / dims; the caller re-scores what it keeps in the full space. Memory: the (N, C)
float32 vectors, the (N, dims) projection, one (block x N) float32 block (the budget) and the (N, k) answer.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch


@dataclasses.dataclass(frozen=True)
class Neighbours:
    index: np.ndarray  # (N, k) int64, best first; -1 where a row has fewer than k others to compare with
    dist: np.ndarray  # (N, k) float32 Euclidean distance in the space searched; inf where index is -1
    dims: int | None  # None: exact, in the full space; else the principal components searched


def compute_principal_projection(x: np.ndarray, dims: int) -> np.ndarray:
    """(N, C) centred -> (N, dims) coordinates on the top principal components (C x C eigenproblem, float64)."""
    cov = np.asarray(x.T @ x, dtype=np.float64)  # (C, C)
    values, vectors = np.linalg.eigh(cov)  # ascending
    axes = vectors[:, np.argsort(values)[::-1][:dims]].astype(np.float32)  # (C, dims)
    return x @ axes


def compute_neighbours(x: np.ndarray, k: int, memory_bytes: int, dims: int | None = None) -> Neighbours:
    """k nearest other rows of each row of `x` (N, C), centred; with `dims`, in the top `dims` principal
    components (approximate)."""
    n = len(x)
    if dims is not None and dims < x.shape[1]:
        x = compute_principal_projection(x, dims)
    else:
        dims = None
    points = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))  # (N, D)
    index = np.full((n, k), -1, np.int64)
    dist = np.full((n, k), np.inf, np.float32)
    kk = min(k, n - 1)
    if kk <= 0:
        return Neighbours(index, dist, dims)
    rows = max(1, memory_bytes // (4 * n))
    transposed = points.T.contiguous()  # (D, N): one copy, not one per block
    square = (points * points).sum(dim=1)  # (N,)
    with torch.inference_mode():
        for lo in range(0, n, rows):
            block = points[lo : lo + rows] @ transposed  # (b, N): a.b
            b = len(block)
            block.mul_(2).sub_(square[None, :])  # 2 a.b - |b|^2: larger is nearer
            block[torch.arange(b), torch.arange(lo, lo + b)] = -torch.inf  # never one's own neighbour
            values, where = torch.topk(block, kk, dim=1)  # (b, kk), nearest first
            index[lo : lo + b, :kk] = where.numpy()
            dist[lo : lo + b, :kk] = (square[lo : lo + b, None] - values).clamp_(min=0).sqrt_().numpy()
            del block  # before the next product: never two blocks alive at once
    return Neighbours(index, dist, dims)
