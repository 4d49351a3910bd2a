"""Running per-class moments (count, mean, sum of squared deviations), folded in batch by batch, and Cohen's d
from two groups' moments.

Batches are folded with Chan, Golub and LeVeque's pairwise update, so the result does not depend on how the rows
were split into batches, and memory is one (K, C) state whatever the number of images.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Moments:
    """Per-class count, mean and sum of squared deviations (K, C), folded in batch by batch."""

    n: np.ndarray  # (K,) int64
    mean: np.ndarray  # (K, C) float64
    m2: np.ndarray  # (K, C) float64

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
        x = values.astype(np.float64)  # (C, n)
        shift = x.mean(axis=1)  # (C,)
        x -= shift[:, None]
        onehot = (codes[:, None] == np.arange(len(self.n))).astype(np.float64)  # (n, K)
        count = onehot.sum(axis=0).astype(np.int64)  # (K,)
        s1, s2 = x @ onehot, (x * x) @ onehot  # (C, K) each
        for k in np.flatnonzero(count):
            n = int(count[k])
            self._fold(k, n, shift + s1[:, k] / n, s2[:, k] - s1[:, k] ** 2 / n)

    def _fold(self, k: int, nb: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        na = int(self.n[k])
        n = na + nb
        delta = mean_b - self.mean[k]
        self.mean[k] = self.mean[k] + delta * (nb / n)
        self.m2[k] = self.m2[k] + m2_b + delta**2 * (na * nb / n)
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
    """(mean1 - mean0) / pooled sd, pooled sd = sqrt(((n1-1) s1^2 + (n0-1) s0^2) / (n1 + n0 - 2)); 0 when both are
    flat, +-inf when only the means differ."""
    pooled = np.sqrt(((n1 - 1) * std1**2 + (n0 - 1) * std0**2) / np.maximum(n1 + n0 - 2, 1))
    diff = np.asarray(mean1 - mean0, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(
            pooled > 0, diff / np.where(pooled > 0, pooled, 1.0), np.where(diff == 0, 0.0, np.sign(diff) * np.inf)
        )
