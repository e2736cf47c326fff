"""The compiled k-means loops (models/kmeans/_kmeans_kernels.c) against the NumPy definition.

Both kernel forms (tiled dot products, and BLAS GEMM + one pass) must give the labels of
``argmin_j (-2 x.c_j + |c_j|^2)`` with numpy.argmin's first-minimum rule, the per-cluster
float64 sums and counts, and the number of changed labels, for any row count (tails of the
4-row tiles, zero rows), any k (padding of the center tiles, k = 1) and both dtypes.
"""
import numpy as np
import pytest

from shardlearn.backend import compiled_kernels
from shardlearn.models import kmeans as km
from shardlearn.models.kmeans import _lloyd as lloyd

K = compiled_kernels(km.KERNELS)
pytestmark = pytest.mark.skipif(K is None, reason="compiled k-means kernels not built")


def reference(x, c):
    c_neg2_t = (-2.0 * c).T
    cc = np.einsum("ij,ij->i", c, c)
    dist = x @ c_neg2_t + cc
    lab = dist.argmin(axis=1).astype(np.int32)
    k, d = c.shape
    sums = np.zeros((k, d))
    np.add.at(sums, lab, x.astype(np.float64))
    return lab, sums, np.bincount(lab, minlength=k).astype(np.float64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("tiled", [True, False])
@pytest.mark.parametrize("r,k,d", [(0, 3, 2), (1, 1, 1), (7, 5, 3), (103, 16, 32), (64, 17, 9), (33, 40, 70)])
def test_labels_sums_counts_match_numpy(monkeypatch, dtype, tiled, r, k, d):
    rng = np.random.default_rng(r * 1000 + k * 10 + d)
    # integer-valued data: dot products are exact in both dtypes, so labels must be equal
    x = rng.integers(-8, 9, size=(r, d)).astype(dtype)
    c = rng.integers(-8, 9, size=(k, d)).astype(dtype)
    monkeypatch.setattr(lloyd, "TILED_MAX_KD", 1 << 30 if tiled else 0)
    c_neg2_t = np.ascontiguousarray((-2.0 * c).T)
    cc = np.einsum("ij,ij->i", c, c)
    label = lloyd._Labeler(K, c_neg2_t, cc, chunk=max(r, 1))
    assert label.tiled == tiled
    labels = np.full(r, -1, dtype=np.int32)
    labels[: r // 2] = 0
    sums, counts = np.zeros((k, d)), np.zeros(k)
    changed = label(x, labels, sums, counts)
    want_lab, want_sums, want_counts = reference(x, c)
    np.testing.assert_array_equal(labels, want_lab)
    np.testing.assert_array_equal(counts, want_counts)
    np.testing.assert_allclose(sums, want_sums, rtol=0, atol=0)
    old = np.full(r, -1, dtype=np.int32)
    old[: r // 2] = 0
    assert changed == int((old != want_lab).sum())
    # labels only: the same labels, nothing else touched, nothing changed on a repeat
    again = labels.copy()
    assert label(x, again) == 0
    np.testing.assert_array_equal(again, labels)


@pytest.mark.parametrize("tiled", [True, False])
def test_ties_pick_the_first_center(monkeypatch, tiled):
    monkeypatch.setattr(lloyd, "TILED_MAX_KD", 1 << 30 if tiled else 0)
    c = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]] * 5)  # k=20: 3 tiles
    x = np.array([[1.0, 1.0], [2.0, 0.0], [0.0, 2.0], [0.5, 0.5], [1.0, 0.0]])
    label = lloyd._Labeler(K, np.ascontiguousarray((-2.0 * c).T), np.einsum("ij,ij->i", c, c), 8)
    labels = np.zeros(len(x), dtype=np.int32)
    label(x, labels)
    np.testing.assert_array_equal(labels, [0, 0, 1, 0, 0])


def test_simd_copy_reported():
    assert K.simd() in ("avx2+fma", "baseline")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fit_same_with_numpy_path(monkeypatch, dtype):
    """A whole fit (one process) with the kernels equals the NumPy path's."""
    from sklearn.datasets import make_blobs

    X, _ = make_blobs(n_samples=3000, n_features=5, centers=6, random_state=3)
    X = X.astype(dtype)
    init = X[:6].astype(np.float64)
    fits = {}
    for mode in ("c", "numpy"):
        monkeypatch.setenv("SHARDLEARN_KERNELS", mode)
        fits[mode] = km.KMeans(n_clusters=6, init=init, max_iter=50, tol=0).fit(X)
    a, b = fits["c"], fits["numpy"]
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert a.n_iter_ == b.n_iter_
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=tol, atol=tol)
    np.testing.assert_allclose(a.inertia_, b.inertia_, rtol=tol)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
