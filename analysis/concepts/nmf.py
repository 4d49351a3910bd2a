"""Non-negative matrix factorisation in torch: X (N, C) >= 0 is approximated by W (N, k) @ H (k, C), W, H >= 0
(Lee & Seung, Nature 1999), the rows of H being the concepts' bases; and the projection of new rows on fixed bases.

Why torch and not scikit-learn's NMF or MiniBatchNMF: X is a layer's post-ReLU maps, made by the model on its
device, and the same projection then runs on every image of the dataset, batch by batch beside the forward, on
every class's concepts. In torch the fit and the projection run where the maps are (a GPU when there is one), with
no copy to the host, and one code path serves both. The method is scikit-learn's default, so that it can be
checked against it (tests/test_concepts_nmf.py: the fit against sklearn.decomposition.NMF, the projection against
scipy.optimize.nnls):
- loss: Frobenius, ||X - W H||_F^2;
- init: NNDSVDa (Boutsidis & Gallopoulos 2008), deterministic, from the top eigenvectors of the (C, C) Gram matrix
  X^T X (the SVD of X without an (N, C) copy); or `init="random"`: seeded, scaled by sqrt(mean(X) / k);
- updates: HALS, the coordinate descent of Cichocki & Phan (2009) that scikit-learn's "cd" solver runs, until the
  error's decrease over 10 iterations falls below `tol` of the initial error, or `max_iter`.
Memory: X is held once and never copied; beside it W (N, k), X H^T (N, k), W^T X (k, C) and the Gram (C, C). The
final error is computed in row blocks. The bases come out with unit L2 norm (their scale moved into W), so that a
coefficient reads in the layer's activation units.
"""

from __future__ import annotations

import dataclasses

import torch

MAX_ITER, TOL = 200, 1e-4  # scikit-learn's NMF defaults
_EPS = 1e-12
_CHECK_EVERY = 10  # iterations between two error checks (each is a host sync)
_BLOCK_ROWS = 16384  # rows of X per block of the final error: a (16384, C) float32 difference at most


@dataclasses.dataclass(frozen=True)
class Factorisation:
    bases: torch.Tensor  # (k, C) float32 >= 0, unit L2 norm rows (a zero row where a concept died)
    coefficients: torch.Tensor  # (N, k) float32 >= 0: X ~ coefficients @ bases
    relative_error: float  # ||X - W H||_F / ||X||_F (0 for an all-zero X)
    iterations: int
    method: str


def fit_nmf(
    matrix: torch.Tensor, k: int, seed: int = 0, *, max_iter: int = MAX_ITER, tol: float = TOL, init: str = "nndsvda"
) -> Factorisation:
    """matrix (N, C) float32 >= 0 -> its k-concept factorisation; ValueError for a bad k or a negative entry."""
    x = matrix.float()
    n, c = x.shape
    if not 1 <= k <= min(n, c):
        raise ValueError(f"k={k} is not allowed for a ({n}, {c}) matrix; 1 <= k <= {min(n, c)}")
    if bool((x < 0).any()):
        raise ValueError("NMF needs a non-negative matrix; it has negative entries")
    norm2 = float(torch.linalg.vector_norm(x, dtype=torch.float64) ** 2)
    if norm2 == 0.0:
        w, h = x.new_zeros(n, k), x.new_zeros(k, c)
        return Factorisation(h, w, 0.0, 0, describe_method(init, max_iter, tol))
    if init == "nndsvda":
        w, h = _init_nndsvda(x, k)
    elif init == "random":
        w, h = _init_random(x, k, seed)
    else:
        raise ValueError(f"init {init!r} is not known; nndsvda or random")
    first = previous = None
    it = 0
    for it in range(1, max_iter + 1):
        wtx, wtw = w.T @ x, w.T @ w  # (k, C), (k, k)
        _hals_sweep(h, wtx, wtw)
        if it % _CHECK_EVERY == 0 or it == 1:
            hht = h @ h.T
            err2 = norm2 - 2.0 * float((h * wtx).sum()) + float((wtw * hht).sum())
            err = max(err2, 0.0) ** 0.5
            if first is None:
                first = err
            elif previous is not None and (previous - err) / max(first, _EPS) < tol:
                break
            previous = err
        xht, hht = x @ h.T, h @ h.T  # (N, k), (k, k)
        _hals_sweep(w.T, xht.T, hht)  # W's columns are W^T's rows
    scale = torch.linalg.vector_norm(h, dim=1)  # (k,)
    alive = scale > 0
    h = torch.where(alive[:, None], h / scale.clamp_min(_EPS)[:, None], torch.zeros_like(h))
    w = w * torch.where(alive, scale, torch.zeros_like(scale))[None, :]
    error = compute_relative_error(x, w, h, norm2)
    return Factorisation(h.contiguous(), w.contiguous(), error, it, describe_method(init, max_iter, tol))


def describe_method(init: str = "nndsvda", max_iter: int = MAX_ITER, tol: float = TOL) -> str:
    return (
        f"NMF (Frobenius), {init} init, HALS coordinate descent, max_iter={max_iter}, tol={tol}; "
        f"torch {torch.__version__}"
    )


def project(matrix: torch.Tensor, bases: torch.Tensor, *, max_iter: int = 200, tol: float = 1e-6) -> torch.Tensor:
    """matrix (P, C) >= 0, bases (k, C) -> coefficients (P, k) >= 0 minimising ||matrix - U bases||_F with the bases
    fixed (non-negative least squares per row, as scikit-learn's NMF.transform): HALS sweeps from the clamped
    least-squares solution until U changes by less than `tol` (relative) over 10 sweeps."""
    x, b = matrix.float(), bases.float()
    bbt = b @ b.T  # (k, k)
    xbt = x @ b.T  # (P, k)
    u = (xbt @ torch.linalg.pinv(bbt)).clamp_min(0)
    before = u.clone()
    for it in range(1, max_iter + 1):
        _hals_sweep(u.T, xbt.T, bbt)
        if it % _CHECK_EVERY == 0:
            change = float(torch.linalg.vector_norm(u - before)) / max(float(torch.linalg.vector_norm(u)), _EPS)
            if change < tol:
                break
            before.copy_(u)
    return u


def compute_relative_error(x: torch.Tensor, w: torch.Tensor, h: torch.Tensor, norm2: float | None = None) -> float:
    """||X - W H||_F / ||X||_F, exactly, in row blocks (0 when X is all zeros)."""
    if norm2 is None:
        norm2 = float(torch.linalg.vector_norm(x.float(), dtype=torch.float64) ** 2)
    if norm2 == 0.0:
        return 0.0
    total = 0.0
    for start in range(0, x.shape[0], _BLOCK_ROWS):
        diff = x[start : start + _BLOCK_ROWS].float() - w[start : start + _BLOCK_ROWS] @ h
        total += float(torch.linalg.vector_norm(diff, dtype=torch.float64) ** 2)
    return (total / norm2) ** 0.5


def _hals_sweep(h: torch.Tensor, numerator: torch.Tensor, gram: torch.Tensor) -> None:
    """One HALS sweep over the k rows of h (k, m) in place: h_j <- max(0, h_j + (num_j - gram_j @ h) / gram_jj),
    the exact minimiser of the loss in row j with the others fixed."""
    for j in range(h.shape[0]):
        step = (numerator[j] - gram[j] @ h) / gram[j, j].clamp_min(_EPS)
        h[j] = (h[j] + step).clamp_min(0)


def _init_nndsvda(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """NNDSVD with zeros filled by mean(X) (scikit-learn's "nndsvda"); the SVD's V and singular values from the
    eigenvectors of X^T X (float64), U = X V / s."""
    gram = (x.T @ x).double()  # (C, C)
    values, vectors = torch.linalg.eigh(gram)  # ascending
    values, vectors = values.flip(0)[:k].clamp_min(0), vectors.flip(1)[:, :k]  # (k,), (C, k)
    s = values.sqrt()
    v = vectors.T.to(x.dtype)  # (k, C): rows are right singular vectors
    u = (x @ v.T) / s.clamp_min(_EPS).to(x.dtype)[None, :]  # (N, k)
    w, h = torch.zeros_like(u), torch.zeros_like(v)
    w[:, 0] = s[0].sqrt().to(x.dtype) * u[:, 0].abs()
    h[0] = s[0].sqrt().to(x.dtype) * v[0].abs()
    for j in range(1, k):
        a, b = u[:, j], v[j]
        ap, bp, an, bn = a.clamp_min(0), b.clamp_min(0), (-a).clamp_min(0), (-b).clamp_min(0)
        nap, nbp = torch.linalg.vector_norm(ap), torch.linalg.vector_norm(bp)
        nan_, nbn = torch.linalg.vector_norm(an), torch.linalg.vector_norm(bn)
        mp, mn = nap * nbp, nan_ * nbn
        if mp > mn:
            uu, vv, sigma = ap / nap.clamp_min(_EPS), bp / nbp.clamp_min(_EPS), mp
        else:
            uu, vv, sigma = an / nan_.clamp_min(_EPS), bn / nbn.clamp_min(_EPS), mn
        lbd = (s[j].to(x.dtype) * sigma).sqrt()
        w[:, j], h[j] = lbd * uu, lbd * vv
    w[w < _EPS], h[h < _EPS] = 0, 0
    mean = x.mean()
    w[w == 0], h[h == 0] = mean, mean
    return w, h


def _init_random(x: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's "random" init: |normal| scaled by sqrt(mean(X) / k), from a seeded generator on the host."""
    g = torch.Generator().manual_seed(seed)
    avg = float(x.mean() / k) ** 0.5
    w = (torch.randn(x.shape[0], k, generator=g).abs() * avg).to(x.device)
    h = (torch.randn(k, x.shape[1], generator=g).abs() * avg).to(x.device)
    return w, h
