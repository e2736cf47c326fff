"""The custom CUDA kernels and their NumPy references.

On every machine (CI): each reference against the CPU path it replaces (labels and
counts exactly, fixed-point sums within their resolution) and on the edge cases
(empty chunk, one row, every row in one cluster/bin, NaN distances, the missing slot).
On a GPU (``-m gpu``; skipped without CuPy or a device): each CUDA kernel against its
reference, bit for bit, on random inputs and the same edge cases.
"""
from __future__ import annotations

import numpy as np
import pytest

from shardlearn.models.kmeans import _gpu as km
from shardlearn.models.trees import _gpu as tr
from shardlearn.models.trees.histogram import build_histogram


def cupy_or_skip():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no device")
    except Exception as exc:  # noqa: BLE001 - ImportError, CUDA driver errors
        pytest.skip(f"needs CuPy and a CUDA GPU ({type(exc).__name__}: {exc})")
    return cupy


# ------------------------------------------------------------------------ k-means
def kmeans_case(rng, r, k, d, dtype, one_cluster=False, nan=False):
    X = rng.normal(size=(r, d)).astype(dtype) * 3
    mean = X.mean(axis=0).astype(dtype) if r else np.zeros(d, dtype)
    C = rng.normal(size=(k, d)).astype(dtype)
    if one_cluster:
        C[1:] += 1000.0
    dist = (X - mean) @ (-2.0 * C).T.astype(dtype)
    dist = dist.astype(dtype)
    cc = (C.astype(np.float64) ** 2).sum(axis=1).astype(dtype)
    if nan and r:
        dist[0, :] = np.nan           # a row whose distances are all NaN: label 0
        dist[min(1, r - 1), 0] = np.nan  # NaN never wins
    bound = np.abs(X - mean).max(axis=0) * 1.01 + 1e-300 if r else np.ones(d)
    scale = km.fixed_scales(bound, max(r, 1))
    labels = rng.integers(-1, k, size=r).astype(np.int32)
    return X, mean, np.ascontiguousarray(dist), cc, scale, labels


CASES = [dict(r=1000, k=7, d=5), dict(r=0, k=3, d=4), dict(r=1, k=4, d=3),
         dict(r=500, k=6, d=4, one_cluster=True), dict(r=300, k=5, d=3, nan=True),
         dict(r=2000, k=64, d=200)]   # k*d beyond the shared-memory accumulators


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kmeans_reference_matches_the_cpu_lloyd_pass(dtype):
    """The reference's labels, counts and changed count equal the CPU path's NumPy pass,
    its fixed-point sums the float64 sums within the fixed-point resolution."""
    from shardlearn.models.kmeans._data import _Local
    from shardlearn.models.kmeans._lloyd import _lloyd_block

    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 6)).astype(dtype)
    k, d = 5, 6
    mean = X.mean(axis=0, dtype=np.float64)
    data = _Local(X, mean, 0, len(X), 512)
    data.kernels = None
    C = rng.normal(size=(k, d))
    c = C.astype(dtype)
    c_neg2_t = np.ascontiguousarray((-2.0 * c).T)
    cc = np.einsum("ij,ij->i", c.astype(np.float64), c.astype(np.float64)).astype(dtype)
    labels_cpu = np.full(len(X), -1, dtype=np.int32)
    cpu = _lloyd_block(data, c_neg2_t, cc, labels_cpu, 0, len(X))
    labels_ref = np.full(len(X), -1, dtype=np.int32)
    out = np.zeros(k * d + k + 1, dtype=np.int64)
    bound = np.abs(X - data.mean_t).max(axis=0) * 1.01
    scale = km.fixed_scales(bound, len(X))
    for lo in range(0, len(X), 512):
        xs = X[lo:lo + 512]
        dist = np.ascontiguousarray((xs - data.mean_t) @ c_neg2_t)
        km.lloyd_accumulate_reference(xs, data.mean_t, dist, cc, scale, labels_ref[lo:lo + 512], out)
    assert np.array_equal(labels_cpu, labels_ref)
    assert np.array_equal(cpu[k * d:], out[k * d:].astype(np.float64))  # counts, changed
    sums = out[:k * d].reshape(k, d) / scale
    # the CPU path sums float32 rows in float32 per chunk: its rounding, plus the
    # fixed point's (half a unit per value)
    atol = np.finfo(dtype).eps * float(np.abs(X).sum()) + len(X) / scale.min()
    assert np.allclose(sums, cpu[:k * d].reshape(k, d), rtol=0, atol=atol)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_kmeans_reference_edge_cases(case):
    rng = np.random.default_rng(2)
    X, mean, dist, cc, scale, labels = kmeans_case(rng, dtype=np.float64, **case)
    r, k, d = case["r"], case["k"], case["d"]
    old = labels.copy()
    out = np.zeros(k * d + k + 1, dtype=np.int64)
    km.lloyd_accumulate_reference(X, mean, dist, cc, scale, labels, out)
    tot = np.where(np.isnan(dist + cc), np.inf, dist + cc)
    want = tot.argmin(axis=1) if r else np.zeros(0, int)
    assert np.array_equal(labels, want)
    assert out[-1] == int((old != want).sum())
    assert np.array_equal(out[k * d:k * d + k], np.bincount(want, minlength=k))
    if case.get("one_cluster") and r:
        assert (labels == 0).all()
    if case.get("nan") and r:
        assert labels[0] == 0 and labels[min(1, r - 1)] != 0 or r == 1
    sums = np.zeros((k, d))
    np.add.at(sums, want, X - mean)
    assert np.allclose(out[:k * d].reshape(k, d) / scale, sums, atol=1e-9)


def test_fixed_scales_never_overflow():
    bound = np.array([1e-300, 1e-3, 1.0, 3e7, 1e300, 0.0])
    for n in (1, 2, 10 ** 7, 10 ** 12):
        s = km.fixed_scales(bound, n)
        assert (np.log2(s) == np.round(np.log2(s))).all()  # powers of two: exact scaling
        big = bound * s * n
        assert (big[bound > 0] < 2.0 ** 62).all()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_kmeans_kernel_equals_reference(case, dtype):
    cp = cupy_or_skip()
    rng = np.random.default_rng(3)
    X, mean, dist, cc, scale, labels = kmeans_case(rng, dtype=dtype, **case)
    k, d = case["k"], case["d"]
    out_ref = np.zeros(k * d + k + 1, dtype=np.int64)
    lab_ref = labels.copy()
    km.lloyd_accumulate_reference(X, mean, dist, cc, scale, lab_ref, out_ref)
    out_dev = cp.zeros(k * d + k + 1, dtype=np.int64)
    lab_dev = cp.asarray(labels)
    km.lloyd_accumulate(cp.asarray(X), cp.asarray(mean), cp.asarray(dist), cp.asarray(cc), cp.asarray(scale),
                        lab_dev, out_dev)
    assert np.array_equal(lab_dev.get(), lab_ref)
    assert np.array_equal(out_dev.get(), out_ref)  # integer sums: the same bits in any order


# -------------------------------------------------------------------------- trees
def tree_case(rng, n, d, S, cin=2, one_bin=False, m=None):
    codes = rng.integers(0, S, size=(d, n)).astype(np.uint8)
    codes[:, rng.random(n) < 0.1] = S - 1          # the missing slot
    if one_bin:
        codes[:] = 3
    ch = np.vstack([rng.normal(size=n) for _ in range(cin - 1)] + [rng.random(n) + 0.1])
    rows = None if m is None else np.sort(rng.choice(n, size=m, replace=False)).astype(np.int64)
    return codes, ch, rows


TREE_CASES = [dict(n=3000, d=7, S=256), dict(n=3000, d=29, S=64, m=1000), dict(n=50, d=3, S=256, m=0),
              dict(n=50, d=3, S=16, m=1), dict(n=400, d=5, S=256, one_bin=True),
              dict(n=500, d=4, S=256, cin=30)]   # too many channels for shared memory


@pytest.mark.parametrize("case", TREE_CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_tree_reference_matches_the_cpu_histogram(case):
    rng = np.random.default_rng(4)
    codes, ch, rows = tree_case(rng, **case)
    S = case["S"]
    bound = np.abs(ch).max(axis=1)
    scale = tr.channel_scales(bound, codes.shape[1])
    lo = tr.lo_scale_for(codes.shape[1])
    fixed = tr.node_histogram_reference(np.ascontiguousarray(codes.T), ch, scale, lo, rows, S)
    cpu = build_histogram(codes, ch, np.arange(codes.shape[1]) if rows is None else rows, S)
    got = tr.to_float(fixed, scale, lo)
    assert np.array_equal(got[-1], cpu[-1])                        # counts: exact
    # two words per value: as close to the exact sums as float64 row-order sums are
    exact = np.zeros_like(cpu[:-1])
    r = np.arange(codes.shape[1]) if rows is None else rows
    for c in range(ch.shape[0]):
        for f in range(codes.shape[0]):
            np.add.at(exact[c, f], codes[f, r], ch[c, r].astype(np.longdouble))
    tol = 4 * np.finfo(np.float64).eps * np.abs(ch).sum() + 1e-300
    assert np.abs(got[:-1] - exact).max() <= tol and np.abs(cpu[:-1] - exact).max() <= tol
    if case.get("one_bin"):
        assert (got[-1][:, 3] == len(r)).all()


@pytest.mark.gpu
@pytest.mark.parametrize("case", TREE_CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_tree_kernel_equals_reference(case):
    cp = cupy_or_skip()
    rng = np.random.default_rng(5)
    codes, ch, rows = tree_case(rng, **case)
    S = case["S"]
    scale = tr.channel_scales(np.abs(ch).max(axis=1), codes.shape[1])
    lo = tr.lo_scale_for(codes.shape[1])
    crm, chc = np.ascontiguousarray(codes.T), np.ascontiguousarray(ch)
    ref = tr.node_histogram_reference(crm, chc, scale, lo, rows, S)
    dev = tr.node_histogram(cp.asarray(crm), cp.asarray(chc), cp.asarray(scale), lo,
                            None if rows is None else cp.asarray(rows), S)
    assert np.array_equal(dev.get(), ref)


@pytest.mark.gpu
def test_device_partition_is_stable_and_matches_the_cpu():
    cp = cupy_or_skip()
    rng = np.random.default_rng(6)
    codes = rng.integers(0, 32, size=(3, 1000)).astype(np.uint8)
    h = tr.DeviceHistogram(cp, codes, 32)
    rows = h.rows_array(np.arange(0, 1000, 3))
    host = np.arange(0, 1000, 3)
    n_left = h.partition(rows, 1, 10, True)
    c = codes[1, host]
    go = (c <= 10) | (c == 31)
    assert n_left == go.sum()
    assert np.array_equal(rows.get(), np.concatenate([host[go], host[~go]]))


# ----------------------------------------------- the CUDA C source, emulated on the CPU
EMULATION = r"""
#include <math.h>
#include <string.h>
typedef struct { unsigned x, y, z; } dim3s;
static dim3s threadIdx, blockIdx, blockDim, gridDim;
static unsigned long long shared_mem[1 << 17];
#define __global__
#define __restrict__
#define min(a, b) ((a) < (b) ? (a) : (b))
static unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) { unsigned long long o = *a; *a += v; return o; }
static void __syncthreads(void) {}
static float __int_as_float(int i) { float f; memcpy(&f, &i, sizeof f); return f; }
static double __longlong_as_double(long long i) { double f; memcpy(&f, &i, sizeof f); return f; }
"""

DRIVERS = r"""
#define LAUNCH(grid_x, grid_y, call) do { gridDim.x = (grid_x); gridDim.y = (grid_y); blockDim.x = 1;    \
    threadIdx.x = 0; for (unsigned by = 0; by < gridDim.y; ++by) for (unsigned bx = 0; bx < gridDim.x; ++bx) \
    { blockIdx.x = bx; blockIdx.y = by; call; } } while (0)
void run_lloyd_f32(const float* X, const float* mean, const float* dist, const float* cc, const double* scale,
                   int* labels, unsigned long long* out, long long r, int k, int d, int use_shared, int grid)
{ LAUNCH(grid, 1, lloyd_accumulate_f32(X, mean, dist, cc, scale, labels, out, r, k, d, use_shared)); }
void run_lloyd_f64(const double* X, const double* mean, const double* dist, const double* cc, const double* scale,
                   int* labels, unsigned long long* out, long long r, int k, int d, int use_shared, int grid)
{ LAUNCH(grid, 1, lloyd_accumulate_f64(X, mean, dist, cc, scale, labels, out, r, k, d, use_shared)); }
void run_hist(const unsigned char* codes, const double* ch, const double* scale, double lo_scale,
              const long long* rows, long long n, long long m, int all_rows, int d, int cin, int S, int fg,
              int use_shared, unsigned long long* out, int grid_x, int grid_y)
{ LAUNCH(grid_x, grid_y, node_histogram(codes, ch, scale, lo_scale, rows, n, m, all_rows, d, cin, S, fg,
                                        use_shared, out)); }
"""


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """The kernels' CUDA C, compiled by the host C compiler against a tiny emulation of the
    CUDA built-ins and run one thread per block, every block in turn: the kernels' index
    arithmetic, argmin, fixed-point rounding, shared/global accumulation and feature groups
    run in CI (only the parallel interleaving of the atomics does not, and integer sums do
    not depend on it)."""
    import ctypes
    import shutil
    import subprocess
    import sysconfig

    cc = shutil.which(sysconfig.get_config_var("CC").split()[0] if sysconfig.get_config_var("CC") else "cc") \
        or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to emulate the CUDA kernels with")
    src = EMULATION
    for kernel in (km.KERNEL_SOURCE, tr.KERNEL_SOURCE):
        src += kernel.replace('extern "C" ', "").replace(
            "extern __shared__ unsigned long long sh[];", "unsigned long long* sh = shared_mem;")
    src += DRIVERS
    d = tmp_path_factory.mktemp("emulated")
    (d / "k.c").write_text(src)
    subprocess.run([cc, "-std=c99", "-O1", "-shared", "-fPIC", "-o", str(d / "k.so"), str(d / "k.c"), "-lm"],
                   check=True, capture_output=True)
    return ctypes.CDLL(str(d / "k.so"))


def _ptr(a):
    import ctypes

    return a.ctypes.data_as(ctypes.c_void_p)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
@pytest.mark.parametrize("grid", [1, 3])
def test_kmeans_cuda_source_emulated_equals_reference(emulated, case, dtype, grid):
    import ctypes

    rng = np.random.default_rng(7)
    X, mean, dist, cc, scale, labels = kmeans_case(rng, dtype=dtype, **case)
    k, d, r = case["k"], case["d"], case["r"]
    ref_out, ref_lab = np.zeros(k * d + k + 1, dtype=np.int64), labels.copy()
    km.lloyd_accumulate_reference(X, mean, dist, cc, scale, ref_lab, ref_out)
    out, lab = np.zeros(k * d + k + 1, dtype=np.uint64), labels.copy()
    shared = int((k * d + k + 1) * 8 <= km.SHARED_LIMIT)
    fn = emulated.run_lloyd_f32 if dtype == np.float32 else emulated.run_lloyd_f64
    Xc = np.ascontiguousarray(X, dtype=dtype)
    fn(_ptr(Xc), _ptr(mean), _ptr(dist), _ptr(cc), _ptr(scale), _ptr(lab), _ptr(out), ctypes.c_longlong(r),
       ctypes.c_int(k), ctypes.c_int(d), ctypes.c_int(shared), ctypes.c_int(grid))
    assert np.array_equal(lab, ref_lab)
    assert np.array_equal(out.view(np.int64), ref_out)


@pytest.mark.parametrize("case", TREE_CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
@pytest.mark.parametrize("grid", [1, 4])
def test_tree_cuda_source_emulated_equals_reference(emulated, case, grid):
    import ctypes

    rng = np.random.default_rng(8)
    codes, ch, rows = tree_case(rng, **case)
    S = case["S"]
    scale = tr.channel_scales(np.abs(ch).max(axis=1), codes.shape[1])
    lo = tr.lo_scale_for(codes.shape[1])
    crm, chc = np.ascontiguousarray(codes.T), np.ascontiguousarray(ch)
    ref = tr.node_histogram_reference(crm, chc, scale, lo, rows, S)
    n, d = crm.shape
    cin = chc.shape[0]
    fg = tr.features_per_block(cin, S)
    shared = fg >= 1
    fg = max(1, min(fg, d)) if shared else d
    out = np.zeros((2 * cin + 1, d, S), dtype=np.uint64)
    m = n if rows is None else len(rows)
    rows_arg = rows if rows is not None else np.zeros(1, dtype=np.int64)
    emulated.run_hist(_ptr(crm), _ptr(chc), _ptr(scale), ctypes.c_double(lo), _ptr(rows_arg), ctypes.c_longlong(n),
                      ctypes.c_longlong(m),
                      ctypes.c_int(rows is None), ctypes.c_int(d), ctypes.c_int(cin), ctypes.c_int(S),
                      ctypes.c_int(fg), ctypes.c_int(int(shared)), _ptr(out), ctypes.c_int(grid),
                      ctypes.c_int(-(-d // fg)))
    assert np.array_equal(out.view(np.int64), ref)
