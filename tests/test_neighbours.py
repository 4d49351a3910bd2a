"""The blocked nearest-neighbour search against scikit-learn's brute-force NearestNeighbors."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import pdist
from sklearn.neighbors import NearestNeighbors

from analysis.stats.neighbours import compute_neighbours, compute_principal_projection


def test_exact_search_matches_sklearn_in_any_block_size():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 24)).astype(np.float32)  # continuous: no ties among the distances
    want_d, want_i = NearestNeighbors(n_neighbors=7).fit(x).kneighbors()  # excludes each point itself
    for memory in (4 * 300, 4 * 300 * 17, 1 << 30):  # one row a block, 17 rows, everything at once
        got = compute_neighbours(x, 7, memory)
        assert got.dims is None
        np.testing.assert_array_equal(got.index, want_i)
        np.testing.assert_allclose(got.dist, want_d, rtol=1e-4, atol=1e-4)


def test_fewer_images_than_neighbours_and_the_projection():
    x = np.random.default_rng(4).standard_normal((4, 6)).astype(np.float32)
    got = compute_neighbours(x, 10, 1 << 20)
    assert (got.index[:, :3] >= 0).all() and (got.index[:, 3:] == -1).all() and np.isinf(got.dist[:, 3:]).all()
    assert all(i not in row for i, row in enumerate(got.index))
    flat = np.random.default_rng(5).standard_normal((200, 3)) @ np.random.default_rng(6).standard_normal((3, 16))
    flat = (flat - flat.mean(axis=0)).astype(np.float32)  # rank 3: three components keep every distance
    projected = compute_principal_projection(flat, 3)
    assert projected.shape == (200, 3)
    np.testing.assert_allclose(pdist(projected), pdist(flat), rtol=1e-3, atol=1e-4)
    approx = compute_neighbours(flat, 5, 1 << 20, dims=3)
    assert approx.dims == 3
    np.testing.assert_array_equal(approx.index, NearestNeighbors(n_neighbors=5).fit(flat).kneighbors()[1])
