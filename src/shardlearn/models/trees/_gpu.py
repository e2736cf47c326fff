"""Tree growing on the device: node histograms and row partitions with the array module
``xp`` (CuPy on a GPU; NumPy under ``SHARDLEARN_FAKE_GPU=1``, which is how CI runs them).

:class:`DeviceHistogram` has the interface of :class:`.histogram.CompiledHistogram`, so
:class:`.grower.TreeGrower` uses it unchanged: the bin codes go to the device once per
fit (row-major for the histogram, feature-major for the partition), each tree's
gradient and hessian once per tree, and the tree's row permutation lives on the device;
every node's rows stay a contiguous range of it (partitioned in place, stably, as the
CPU path does). Only the node histograms (``C x d x S`` numbers) come back to the host,
where the ranks combine them and the split search runs (it reads histograms, not rows).
Leaf values are added to the scores on the host from one download of the leaf of each
row per tree (:meth:`DeviceHistogram.add_leaf_values`).

**The histogram kernel** (:data:`KERNEL_SOURCE`, ``node_histogram``; the pattern of
LightGBM's CUDA histogram constructor and XGBoost's ``gpu_hist``): a 2-D grid; each
block takes a group of features (``blockIdx.y``) and a grid-stride share of the node's
rows, accumulates a per-block histogram of that feature group in shared memory, and adds
it to the global histogram once. Accumulation is **fixed point, two words per value**:
each gradient and hessian is scaled by a power of two per channel (:func:`channel_scales`,
from this rank's largest magnitude and row count, so no int64 sum can overflow); the
first word is the rounded scaled value, the second the rounding remainder in units of
2^-40 (:func:`lo_scale_for`). Integer atomics commute, so the histogram has the same bits
whatever order the threads run in, and the two words hold every value to ~2^-41 of a
unit: the sums (:func:`to_float`) are at least as close to the exact sums as the CPU
path's float64 row-order sums, small hessians included. The two paths therefore differ
only by the CPU's own rounding, as the CPU path differs between rank counts; the split
search treats gains within ``TIE_RTOL`` as ties, so the trees are the same, except where
a split's gain is rounding noise: a node whose true gain is 0 can get +1.8e-15 from the
CPU's sums (split) and exactly 0 from the device's (no split), as in test_trees'
multiclass world (``tests/test_gpu_models.py`` compares whole models with the CPU path's).

Kernels and how CI covers them: :func:`node_histogram` runs the CUDA kernel on CuPy
arrays and :func:`node_histogram_reference` (plain NumPy, the same fixed-point
arithmetic, integer sums) on NumPy arrays; CI runs the device path with the reference
and compares the trees with the CPU path's; ``tests/test_gpu_kernels.py`` compares
kernel and reference bit for bit on a GPU (random inputs, an empty node, one row, every
row in one bin, the missing slot). CI also runs the CUDA C source itself: the test compiles
:data:`KERNEL_SOURCE` with the host C compiler against a small emulation of the CUDA
built-ins (atomics, shared memory, thread and block indices) and runs it one thread per
block, every block in turn, on the same cases, bit for bit against the reference; only
the interleaving of the parallel atomics is not exercised, and integer sums do not
depend on it.
"""
from __future__ import annotations

import numpy as np

#: bits of headroom: |fixed sums| stay below 2^FIXED_BITS
FIXED_BITS = 62
SHARED_LIMIT = 48 * 1024
THREADS = 256

KERNEL_SOURCE = r"""
/* One value's two words: q = rint(v), lo = rint((v - q) * lo_scale). v - q is exact (when
   |v| >= 2^52, v is an integer and the rest is 0), so q + lo / lo_scale holds v to 2^-41
   of a unit, far finer than a float64 sum of the rows. */
extern "C" __global__ void node_histogram(
        const unsigned char* __restrict__ codes,    /* n x d, row-major */
        const double* __restrict__ ch,              /* cin x n, one channel after another */
        const double* __restrict__ scale,           /* cin */
        double lo_scale,                            /* power of two: the second words' unit */
        const long long* __restrict__ rows,         /* m local rows; unused when all_rows */
        long long n, long long m, int all_rows, int d, int cin, int S, int fg, int use_shared,
        unsigned long long* __restrict__ out)       /* (2 cin + 1) x d x S: q words, count, lo words */
{
    extern __shared__ unsigned long long sh[];      /* (2 cin + 1) x fg x S */
    const int C = 2 * cin + 1;
    const int f0 = blockIdx.y * fg;
    const int nf = min(fg, d - f0);
    const long long cells = (long long)C * fg * S;
    if (use_shared) {
        for (long long c = threadIdx.x; c < cells; c += blockDim.x) sh[c] = 0ULL;
        __syncthreads();
    }
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < m; j += step) {
        const long long i = all_rows ? j : rows[j];
        const unsigned char* ci = codes + i * d + f0;
        for (int c = 0; c < C; ++c) {
            unsigned long long q = 1ULL;            /* c == cin: the count channel */
            if (c != cin) {
                const int k = c < cin ? c : c - cin - 1;
                const double v = ch[(long long)k * n + i] * scale[k];
                const long long hi = llrint(v);
                q = (unsigned long long)(c < cin ? hi : llrint((v - (double)hi) * lo_scale));
            }
            if (q == 0ULL) continue;
            for (int f = 0; f < nf; ++f) {
                if (use_shared) atomicAdd(&sh[((long long)c * fg + f) * S + ci[f]], q);
                else atomicAdd(&out[((long long)c * d + f0 + f) * S + ci[f]], q);
            }
        }
    }
    if (use_shared) {
        __syncthreads();
        for (long long c = threadIdx.x; c < cells; c += blockDim.x) {
            const unsigned long long v = sh[c];
            if (v == 0ULL) continue;
            const int chn = (int)(c / ((long long)fg * S));
            const long long rem = c % ((long long)fg * S);
            const int f = (int)(rem / S), b = (int)(rem % S);
            if (f < nf) atomicAdd(&out[((long long)chn * d + f0 + f) * S + b], v);
        }
    }
}
"""

_MODULE = None


def _kernel():
    global _MODULE
    import cupy

    if _MODULE is None:
        _MODULE = cupy.RawModule(code=KERNEL_SOURCE)
    return _MODULE.get_function("node_histogram")


def _host(a) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else a.get()


def _xp(a):
    from ...backend import array_module

    return array_module(a)


def channel_scales(bound, n_rows: int) -> np.ndarray:
    """Per channel, the power of two that maps values of magnitude <= ``bound`` to int64
    fixed point with no overflow when ``n_rows`` of them are summed."""
    bound = np.asarray(bound, dtype=np.float64)
    rows_bits = int(np.ceil(np.log2(max(2, int(n_rows)))))
    e = np.zeros(bound.shape, dtype=np.int64)
    pos = bound > 0
    e[pos] = FIXED_BITS - 1 - rows_bits - np.ceil(np.log2(bound[pos])).astype(np.int64)
    return np.ldexp(1.0, np.clip(e, -1000, 1000))


def lo_scale_for(n_rows: int) -> float:
    """The unit of the second words: 2^-40 of a first-word unit, fewer bits when the rows
    are so many that 2^39 per row could overflow an int64 sum."""
    rows_bits = int(np.ceil(np.log2(max(2, int(n_rows)))))
    return float(np.ldexp(1.0, int(np.clip(FIXED_BITS - 2 - rows_bits, 0, 40))))


def features_per_block(cin: int, S: int) -> int:
    """Features per block so that its ``(2 cin + 1) x fg x S`` int64 histogram fits shared
    memory (0: not even one feature fits; the kernel then adds to global memory directly)."""
    return SHARED_LIMIT // ((2 * cin + 1) * S * 8)


def node_histogram_reference(codes_rm, ch, scale, lo_scale, rows, S) -> np.ndarray:
    """The kernel in NumPy: int64 ``(2 cin + 1, d, S)`` two-word fixed-point sums of the
    rows ``rows`` (None: all rows) of ``codes_rm`` (n x d) and ``ch`` (cin x n): the first
    words of each channel, the row count, the second words of each channel."""
    n, d = codes_rm.shape
    cin = ch.shape[0]
    out = np.zeros((2 * cin + 1, d, S), dtype=np.int64)
    ch_rm = ch.T
    if rows is not None:
        codes_rm, ch_rm = codes_rm[rows], ch_rm[rows]
    if codes_rm.shape[0] == 0:
        return out
    v = ch_rm * scale                                       # (m, cin), as the kernel's product
    hi = np.rint(v)
    lo = np.rint((v - hi) * lo_scale).astype(np.int64)
    hi = hi.astype(np.int64)
    flat = (np.arange(d, dtype=np.int64) * S + codes_rm.astype(np.int64))  # (m, d)
    for c in range(cin):
        np.add.at(out[c].reshape(-1), flat.ravel(), np.repeat(hi[:, c], d))
        np.add.at(out[cin + 1 + c].reshape(-1), flat.ravel(), np.repeat(lo[:, c], d))
    out[cin] = np.bincount(flat.ravel(), minlength=d * S).reshape(d, S)
    return out


def to_float(fixed: np.ndarray, scale: np.ndarray, lo_scale: float) -> np.ndarray:
    """The ``(cin + 1, d, S)`` float64 histogram of the kernel's two-word sums."""
    cin = (fixed.shape[0] - 1) // 2
    out = np.empty((cin + 1,) + fixed.shape[1:])
    s = np.asarray(scale, dtype=np.float64)[:, None, None]
    out[:cin] = fixed[:cin] / s + fixed[cin + 1:] / (s * lo_scale)
    out[cin] = fixed[cin]
    return out


def node_histogram(codes_rm, ch, scale, lo_scale, rows, S):
    """Fixed-point node histogram: the CUDA kernel on CuPy arrays, the reference on NumPy
    arrays (bit for bit the same int64 sums). ``codes_rm`` (n x d) uint8, ``ch`` (cin x n)
    float64, ``scale`` (cin), ``lo_scale`` (:func:`lo_scale_for`), ``rows`` int64 local
    rows or None (all)."""
    if isinstance(codes_rm, np.ndarray):
        return node_histogram_reference(codes_rm, ch, scale, lo_scale, rows, S)
    xp = _xp(codes_rm)
    n, d = codes_rm.shape
    cin = ch.shape[0]
    C = 2 * cin + 1
    out = xp.zeros((C, d, S), dtype=np.int64)
    m = n if rows is None else int(rows.shape[0])
    if m == 0 or d == 0:
        return out
    fg = features_per_block(cin, S)
    shared = fg >= 1
    fg = max(1, min(fg, d)) if shared else d
    groups = -(-d // fg)
    blocks_x = int(max(1, min(-(-m // THREADS), max(1, 1024 // groups))))
    rows_arg = rows if rows is not None else xp.zeros(1, dtype=np.int64)
    _kernel()((blocks_x, groups), (THREADS,),
              (codes_rm, ch, scale, np.float64(lo_scale), rows_arg, np.int64(n), np.int64(m),
               np.int32(rows is None), np.int32(d),
               np.int32(cin), np.int32(S), np.int32(fg), np.int32(1 if shared else 0), out.view(np.uint64)),
              shared_mem=C * fg * S * 8 if shared else 0)
    return out


class DeviceHistogram:
    """:class:`.histogram.CompiledHistogram`'s interface on the device (see the module
    docstring). ``rows`` arguments are device int64 arrays (views of the tree's row
    permutation, made by :meth:`rows_array`)."""

    k = None  # no compiled host kernels: TreeGrower.add_leaf_values defers to ours

    def __init__(self, xp, codes: np.ndarray, n_slots: int):
        from ...backend import to_device

        self.xp = xp
        self.d, self.n = codes.shape
        self.n_slots = n_slots
        self.codes = to_device(xp, np.ascontiguousarray(codes, dtype=np.uint8))   # (d, n)
        self.codes_rm = xp.ascontiguousarray(self.codes.T)                        # (n, d)
        self.ch = None
        self.scale = None
        self.cin = 0

    def rows_array(self, rows) -> object:
        """The tree's row permutation on the device (int64, a fresh array)."""
        return self.xp.asarray(np.asarray(rows, dtype=np.int64)).copy()

    def set_channels(self, channels: np.ndarray) -> None:
        """This tree's ``(C - 1, n)`` statistics: to the device as they are (one channel
        after another: the kernel's reads coalesce), with their fixed-point scales (from
        this rank's largest magnitude per channel, found on the device)."""
        cin, n = channels.shape
        if n != self.n or cin < 1:
            raise ValueError(f"channels must be (C - 1, {self.n}), got {channels.shape}")
        self.ch = self.xp.ascontiguousarray(self.xp.asarray(channels, dtype=np.float64))
        bound = _host(self.xp.abs(self.ch).max(axis=1)) if n else np.zeros(cin)
        if not np.all(np.isfinite(bound)):
            raise ValueError("gradients or hessians hold NaN or infinite values")
        self.scale_host = channel_scales(bound, n)
        self.scale = self.xp.asarray(self.scale_host)
        self.lo_scale = lo_scale_for(n)
        self.cin = cin

    def build(self, rows, features=None, hess_is_count=False, out=None, count=None) -> np.ndarray:
        """Host float64 histogram ``(C, d, n_slots)`` of ``rows`` (device int64, or None:
        all rows); features not in ``features`` are zero, as on the CPU."""
        C = self.cin + 1
        if out is None:
            out = np.zeros((C, self.d, self.n_slots))
        n_rows = self.n if rows is None else int(rows.shape[0])
        all_rows = rows is None or n_rows == self.n and bool(_is_identity(self.xp, rows))
        fixed = _host(node_histogram(self.codes_rm, self.ch, self.scale, self.lo_scale,
                                     None if all_rows else rows, self.n_slots))
        out[...] = to_float(fixed, self.scale_host, self.lo_scale)
        if features is not None:
            keep = np.zeros(self.d, dtype=bool)
            keep[np.asarray(features, dtype=np.int64)] = True
            out[:, ~keep] = 0.0
        return out

    def totals(self, rows) -> np.ndarray:
        """Per-channel sums of ``rows`` (host float64, length C - 1)."""
        if rows is None:
            return _host(self.ch.sum(axis=1))
        if int(rows.shape[0]) == 0:
            return np.zeros(self.cin)
        return _host(self.ch[:, rows].sum(axis=1))

    def _apply(self, rows, go_left) -> int:
        """Reorder ``rows`` in place: ``go_left`` rows first, both sides in order."""
        left = rows[go_left]
        right = rows[~go_left]
        n_left = int(left.shape[0])
        rows[:n_left] = left
        rows[n_left:] = right
        return n_left

    def partition(self, rows, feature: int, bin_: int, missing_left: bool) -> int:
        if int(rows.shape[0]) == 0:
            return 0
        c = self.codes[int(feature)][rows]
        go_left = c <= bin_
        if missing_left:
            go_left |= c == self.n_slots - 1
        return self._apply(rows, go_left)

    def partition_table(self, rows, feature: int, cat_left: np.ndarray) -> int:
        if int(rows.shape[0]) == 0:
            return 0
        table = np.zeros(256, dtype=bool)
        cat_left = np.asarray(cat_left, dtype=bool).ravel()
        table[:len(cat_left)] = cat_left
        go_left = self.xp.asarray(table)[self.codes[int(feature)][rows]]
        return self._apply(rows, go_left)

    def add_leaf_values(self, scores: np.ndarray, k: int, values: np.ndarray, leaf_rows) -> None:
        """``scores[rows, k] += values[node]`` for every leaf: the leaf of each row is
        scattered and its value gathered on the device, and one float64 per row comes
        back (rows in no leaf, out of the bag, add 0.0)."""
        xp = self.xp
        leaf = xp.full(self.n, -1, dtype=np.int32)
        for node, r in leaf_rows:
            if int(r.shape[0]):
                leaf[r] = node
        table = xp.asarray(np.append(np.asarray(values, dtype=np.float64), 0.0))   # index -1: the 0.0
        scores[:, k] += _host(table[leaf])


def _is_identity(xp, rows) -> bool:
    n = int(rows.shape[0])
    return n == 0 or bool((rows == xp.arange(n)).all())


def device_histogram(ctx, codes, n_slots):
    """A :class:`DeviceHistogram` when the fit computes on the device (a gpu Context),
    else None."""
    if getattr(ctx, "device", "cpu") != "gpu" or codes.dtype != np.uint8 or n_slots > 256:
        return None
    return DeviceHistogram(ctx.xp, codes, n_slots)
