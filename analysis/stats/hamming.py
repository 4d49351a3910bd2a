"""Every pair of 64-bit hashes within a Hamming radius: blocked XOR and popcount, memory bounded by a budget.

Each block of rows is compared with the rows after its first one only (the upper triangle: N^2 / 2 comparisons),
as one (block x N) uint64 XOR and its (block x N) uint8 bit count (numpy's bitwise_count), both buffers made once.
Memory: 10 bytes a comparison in one block (`memory_bytes`), the (N,) hashes and the pairs found. Time: 25,000
hashes, 312 million pairs, in about a second (benchmarks/bench_checks.py); 200,000 would take a minute. No index
(multi-index hashing, BK-trees) because a radius of 10 of 64 bits splits into 11 chunks of 5-6 bits, whose buckets
are too full to prune much.
"""

from __future__ import annotations

import numpy as np

BITS = 64


def compute_hamming_pairs(
    hashes: np.ndarray, radius: int, memory_bytes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N,) int64 hashes -> (a, b, distance): every pair a < b whose hashes differ in at most `radius` bits, as
    (P,) int64, int64 and uint8 arrays ordered by a, then b."""
    h = np.ascontiguousarray(hashes, dtype=np.int64).view(np.uint64)  # (N,): popcount of the bits, not |v|
    n = len(h)
    rows = int(max(1, min(n, memory_bytes // (10 * max(n, 1)))))
    xor = np.empty((rows, n), np.uint64)
    count = np.empty((rows, n), np.uint8)
    near = np.empty((rows, n), bool)
    found_a, found_b, found_d = [], [], []
    for lo in range(0, n, rows):
        b, width = min(rows, n - lo), n - lo
        x, c, m = xor[:b, :width], count[:b, :width], near[:b, :width]  # (b, N - lo) views
        np.bitwise_xor(h[lo : lo + b, None], h[None, lo:], out=x)
        np.bitwise_count(x, out=c)
        np.less_equal(c, radius, out=m)
        r, col = np.nonzero(m)
        later = col > r  # each pair once, never itself
        r, col = r[later], col[later]
        found_a.append(r + lo)
        found_b.append(col + lo)
        found_d.append(c[r, col])
    if not found_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8)
    return (np.concatenate(found_a).astype(np.int64), np.concatenate(found_b).astype(np.int64), np.concatenate(found_d))
