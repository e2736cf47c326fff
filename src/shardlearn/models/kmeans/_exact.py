"""Exact, order-independent sums for ``KMeans(exact_reduce=True)``: int64 fixed point.

A sum of float64 values depends on the order of its additions, so with the float path the
reduced Lloyd sums (and so the centers) change in their last bits with the number of ranks,
the topology and the thread blocks. Here every value that feeds a sum is first rounded to a
power-of-two unit ``1 / scale`` that every rank agrees on (from one max-allreduce of
``|value|``), as an int64 integer; integer additions are exact, so the local sums, the
allreduce (any topology) and the result do not depend on how the rows are split or
added. The result is ``integer sum / scale`` (one rounding, the same on every rank).

The unit: with ``|value| <= bound`` over all rows and ``n_total`` rows, the scaled values
stay below ``2^VALUE_BITS`` (so the kernel's magic-number rounding, ``v + 1.5 * 2^52`` read
as an integer, is exact: it needs ``|v| < 2^51``) and below ``2^(SUM_BITS - 1 - log2 n)``,
so no sum of ``n_total`` of them reaches ``2^SUM_BITS``. At 10^6 rows that is a resolution
of ``2^-41`` of the largest value (2^-50 for small data): far finer than float32 data and
than the float sums' own rounding for float64 data.

Rounding is to nearest, ties to even, by the magic-number form in both the kernel
(``_kmeans_kernels.c``) and NumPy (:func:`quantize`: ``v + 1.5 * 2^52`` read as int64,
minus the constant's bits; the same integers as ``np.rint`` for ``|v| < 2^51``, in two
float passes instead of three slower ones), so the NumPy code path and the compiled one
sum the same values.

The generic pieces (units, quantisation, exact totals) are :mod:`shardlearn.util.fixed`'s,
shared with the linear models and re-exported here; this module adds the k-means ones. The
bottom of the package with :mod:`._data`: it imports nothing from the other k-means modules.
"""
from __future__ import annotations

import numpy as np

from ...util.fixed import (  # noqa: F401 - the generic helpers, re-exported for the k-means modules
    BLOCK, MAGIC, MAGIC_BITS, SUM_BITS, VALUE_BITS, exact_total, fixed_scales, global_scale, local_fixed_sum,
    local_max, quantize)


def add_fixed_rows(q, lab, k: int, sums) -> None:
    """``sums[lab[i]] += q[i]`` for int64 rows ``q`` (r x d) into ``sums`` (k x d), by one
    stable sort of the labels and a segmented sum (integer: the order does not matter)."""
    if q.shape[0] == 0:
        return
    order = np.argsort(lab, kind="stable")
    starts = np.searchsorted(lab[order], np.arange(k))
    present = np.bincount(lab, minlength=k) > 0
    if present.any():
        sums[present] += np.add.reduceat(q[order], starts[present], axis=0)


def row_sqnorms(diff) -> np.ndarray:
    """``sum_t diff[i, t]^2`` per row in float64, added in ``t`` order with element-wise
    operations only: a row's value does not depend on which rows share the block nor on
    their alignment in memory (a reduction's SIMD blocking could)."""
    diff = np.asarray(diff)
    out = np.zeros(diff.shape[0])
    cols = np.ascontiguousarray(diff.T, dtype=np.float64)
    for t in range(cols.shape[0]):
        out += cols[t] * cols[t]
    return out


def sqdist_rows(kernels, xc64, cands) -> np.ndarray:
    """Squared distances (r x m) of centred float64 rows to ``cands`` (m x d), each entry
    ``sum_t (x_t - c_t)^2`` added in a fixed order for every row (four lanes ``t mod 4`` in
    ``t`` order, folded ``(l0 + l1) + (l2 + l3)``, then the last ``d mod 4`` features): the
    compiled ``sqdist_f64`` or the same arithmetic in NumPy (the same bits: no fused
    multiply-add in either)."""
    r, d = xc64.shape
    m = cands.shape[0]
    c = np.ascontiguousarray(cands, dtype=np.float64)
    out = np.empty((r, m))
    if kernels is not None:
        kernels.sqdist_f64(np.ascontiguousarray(xc64, dtype=np.float64), c, out, r, m, d)
        return out
    d4 = d - d % 4
    lanes = np.zeros((r, m, 4))
    for t in range(0, d4, 4):
        e = xc64[:, None, t:t + 4] - c[None, :, t:t + 4]
        lanes += e * e
    out[:] = (lanes[..., 0] + lanes[..., 1]) + (lanes[..., 2] + lanes[..., 3])
    for t in range(d4, d):
        e = xc64[:, t:t + 1] - c[:, t]
        out += e * e
    return out


def exact_moments(ctx, X, n_total, state) -> dict:
    """``exact_reduce``'s global moments, every sum int64 fixed point:
    ``mean`` and ``var`` (a resumed fit keeps the saved ones), and the per-feature bounds
    of the Lloyd sums' values: ``bound`` of |x| and ``bound_centred`` of |x - m| (m the mean
    in X's dtype, as rows are centred). One max-allreduce of the extremes gives every unit;
    then one int64 allreduce each for the sum and the squared deviations."""
    d, n, step = X.shape[1], X.shape[0], 65536     # by blocks: X may be a RowView (fit on rows=)
    ext = np.full(2 * d, -np.inf)
    for i in range(0, n, step):
        blk = X[i:i + step]
        np.maximum(ext[:d], blk.max(axis=0), out=ext[:d])
        np.maximum(ext[d:], -blk.min(axis=0).astype(np.float64), out=ext[d:])
    ext = ctx.coll.allreduce(ext, op="max")
    hi, lo = ext[:d], -ext[d:]
    bound = np.maximum(np.abs(hi), np.abs(lo))
    if state is None:
        scale = fixed_scales(bound, n_total)
        s = np.zeros(d, dtype=np.uint64)       # integer sums: block by block is exact, the same bits
        for i in range(0, n, step):
            s += local_fixed_sum(X[i:i + step], scale).view(np.uint64)
        mean = ctx.coll.allreduce(s.view(np.int64)).astype(np.float64) / scale / n_total
        spread = np.maximum(np.abs(hi - mean), np.abs(mean - lo)) * (1 + 1e-6)  # (a margin for the rounding)
        scale = fixed_scales(spread * spread, n_total)
        sq = np.zeros(d, dtype=np.uint64)
        buf = np.empty((min(step, n), d))
        for i in range(0, n, step):
            xc = np.subtract(X[i:i + step], mean, out=buf[:min(step, n - i)], dtype=np.float64)
            sq += local_fixed_sum(np.multiply(xc, xc, out=xc), scale).view(np.uint64)
        var = ctx.coll.allreduce(sq.view(np.int64)).astype(np.float64) / scale / n_total
    else:
        mean = np.asarray(state["mean"], dtype=np.float64)
        var = np.asarray(state["var"], dtype=np.float64)
    m = mean.astype(X.dtype).astype(np.float64)
    # |x - m| computed in X's dtype can exceed the exact difference by an ulp: a margin
    centred = np.maximum(np.abs(hi - m), np.abs(m - lo)) * (1 + 1e-6)
    return {"mean": mean, "var": var, "bound": bound, "bound_centred": centred}
