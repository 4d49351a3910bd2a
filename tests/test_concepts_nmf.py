"""The concept stage's maths against independent implementations: the NMF against scikit-learn's NMF, the
projection against scipy's NNLS, a planted non-negative factorisation recovered, and each image's concept values
against their definitions (analysis/concepts/nmf.py, values.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import nnls
from sklearn.decomposition import NMF, non_negative_factorization

from analysis.concepts.nmf import fit_nmf, project
from analysis.concepts.values import compute_concept_maps, compute_concept_values


def relu_matrix(n: int = 2000, c: int = 64, seed: int = 0) -> np.ndarray:
    """Post-ReLU-like activations: a low-rank signal plus noise, clipped at zero (about half zeros)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)) @ rng.normal(size=(16, c)) * 0.3 + rng.normal(size=(n, c))
    return np.maximum(x, 0).astype(np.float32)


@pytest.mark.parametrize("k", [3, 8])
def test_the_fit_matches_scikit_learn_nmf(k):
    x = relu_matrix()
    ours = fit_nmf(torch.from_numpy(x), k)
    ref = NMF(n_components=k, init="nndsvda", max_iter=400, tol=1e-4, random_state=0)
    w = ref.fit_transform(x)
    ref_error = np.linalg.norm(x - w @ ref.components_) / np.linalg.norm(x)
    assert ours.relative_error <= 1.05 * ref_error
    assert ours.relative_error >= 0.95 * ref_error  # the same problem: not a suspiciously better optimum either
    assert ours.bases.shape == (k, x.shape[1]) and ours.coefficients.shape == (x.shape[0], k)
    assert bool((ours.bases >= 0).all()) and bool((ours.coefficients >= 0).all())
    np.testing.assert_allclose(torch.linalg.vector_norm(ours.bases, dim=1).numpy(), 1.0, rtol=1e-5)
    direct = np.linalg.norm(x - ours.coefficients.numpy() @ ours.bases.numpy()) / np.linalg.norm(x)
    assert ours.relative_error == pytest.approx(direct, rel=1e-4)


def test_a_planted_factorisation_is_recovered():
    rng = np.random.default_rng(1)
    w0 = rng.random((300, 4))
    h0 = rng.random((4, 40)) * (rng.random((4, 40)) < 0.4)  # sparse parts: the factorisation is unique
    x = torch.from_numpy((w0 @ h0).astype(np.float32))
    found = fit_nmf(x, 4, max_iter=2000, tol=1e-9)
    assert found.relative_error < 0.01
    cosine = found.bases.numpy() @ (h0 / np.linalg.norm(h0, axis=1, keepdims=True)).T  # (found, planted)
    assert sorted(cosine.argmax(axis=1)) == [0, 1, 2, 3]  # each planted part found once
    assert cosine.max(axis=1).min() > 0.99


@pytest.mark.filterwarnings("ignore:Maximum number of iterations")  # scikit-learn's reference, run to 2,000 sweeps
def test_the_projection_is_the_non_negative_least_squares_solution():
    x = relu_matrix(n=400)
    bases = fit_nmf(torch.from_numpy(x), 6).bases
    rows = relu_matrix(n=12, seed=5)
    u = project(torch.from_numpy(rows), bases).numpy()
    b = bases.numpy().astype(np.float64)
    for row, got in zip(rows, u):
        want, _ = nnls(b.T, row.astype(np.float64))
        np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, want.max()))
    # scikit-learn's NMF.transform: its coordinate descent with the bases fixed
    w, _, _ = non_negative_factorization(
        rows, H=bases.numpy().copy(), n_components=6, init="custom", update_H=False, max_iter=2000, tol=1e-8
    )
    np.testing.assert_allclose(u, w, atol=1e-3)


def test_an_all_zero_matrix_gives_zero_bases_and_no_nan():
    found = fit_nmf(torch.zeros(50, 8), 3)
    assert found.relative_error == 0.0 and found.iterations == 0
    assert not bool(found.bases.isnan().any()) and not bool(found.bases.any())
    assert not bool(project(torch.rand(5, 8), found.bases).isnan().any())


@pytest.mark.parametrize("k", [0, 9])
def test_k_outside_the_matrix_is_refused(k):
    with pytest.raises(ValueError, match="k="):
        fit_nmf(torch.rand(20, 8), k)


def test_concept_values_follow_their_definitions():
    """On random maps, gradients and bases: presence, peak, the peak's cell, contributions and the residual, each
    recomputed from the projection; contributions plus residual are the layer's total gradient x activation."""
    g = torch.Generator().manual_seed(0)
    maps = torch.relu(torch.randn(3, 16, 4, 5, generator=g))  # (B, C, h, w)
    grads = torch.randn(3, 16, 4, 5, generator=g)
    bases = fit_nmf(maps.permute(0, 2, 3, 1).reshape(-1, 16), 4).bases
    v = compute_concept_values(maps, grads, bases, crop=80)
    u = compute_concept_maps(maps, bases)  # (B, k, h, w)
    assert bool((v.presence >= 0).all())
    torch.testing.assert_close(v.presence, u.mean(dim=(2, 3)))
    torch.testing.assert_close(v.peak, u.amax(dim=(2, 3)))
    for b in range(3):
        for j in range(4):
            i, x = divmod(int(u[b, j].argmax()), 5)
            assert (v.peak_y[b, j], v.peak_x[b, j]) == ((i + 0.5) * 20, (x + 0.5) * 16)  # 80 px over 4 x 5 cells
    gb = torch.einsum("bchw,kc->bkhw", grads, bases)
    torch.testing.assert_close(v.contribution, (u * gb).sum(dim=(2, 3)), rtol=1e-5, atol=1e-5)
    total = (maps * grads).sum(dim=(1, 2, 3))
    torch.testing.assert_close(v.total, total, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v.contribution.sum(dim=1) + v.residual, total, rtol=1e-5, atol=1e-5)
