"""The dataset as a map: the ok images in 2-D from a layer's channel means, by principal component analysis.

Two streamed passes over the table, so memory is one record batch plus a C x C matrix: the first sums the values
and their outer products (float64), the second projects every image onto the top two eigenvectors of the
covariance. Each axis's sign is fixed (its largest loading positive) so that the same run always draws the same map.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from analysis.store import contract, tables


@dataclasses.dataclass(frozen=True)
class Map:
    layer: str
    image_ids: np.ndarray  # (N,) object, table order
    xy: np.ndarray  # (N, 2) float32, the images on the first two principal components
    explained: tuple[float, float]  # the share of the total variance each axis explains


def compute_pca_map(run: str | os.PathLike, layer: str = "conv5_3", batch_rows: int = 8192) -> Map:
    folder = contract.activation_dir(Path(run), layer, "mean")
    n, total, outer = 0, None, None
    for _, x in tables.iter_channel_batches(folder, batch_rows):
        if total is None:
            total, outer = np.zeros(x.shape[1]), np.zeros((x.shape[1], x.shape[1]))
        n += len(x)
        total += x.sum(axis=0)
        outer += x.T @ x
    if n < 2:
        batches = [i for i, _ in tables.iter_channel_batches(folder, batch_rows)]
        ids = np.concatenate(batches) if n else np.zeros(0, object)
        return Map(layer, ids, np.zeros((n, 2), np.float32), (0.0, 0.0))
    mean = total / n
    cov = (outer - n * np.outer(mean, mean)) / (n - 1)
    values, vectors = np.linalg.eigh(cov)  # ascending
    order = np.argsort(values)[::-1][:2]
    axes = vectors[:, order]  # (C, 2)
    axes *= np.sign(axes[np.abs(axes).argmax(axis=0), [0, 1]])  # the largest loading of each axis positive
    share = np.clip(values[order], 0, None) / max(float(np.clip(values, 0, None).sum()), 1e-300)
    ids, xy = [], []
    for i, x in tables.iter_channel_batches(folder, batch_rows):
        ids.append(i)
        xy.append(((x - mean) @ axes).astype(np.float32))
    return Map(layer, np.concatenate(ids), np.concatenate(xy), (float(share[0]), float(share[1])))
