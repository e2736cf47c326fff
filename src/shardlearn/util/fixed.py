"""Exact, order-independent sums: int64 fixed point with an agreed power-of-two unit.

A sum of float64 values depends on the order of its additions, so float sums reduced over
ranks change in their last bits with the number of ranks, the topology and the blocking.
Here every value that feeds a sum is first rounded to a power-of-two unit ``1 / scale``
that every rank agrees on (from one max-allreduce of ``|value|``, or from a bound every
rank computes alike), as an int64 integer; integer additions are exact, so the local sums,
the allreduce (any topology) and the result do not depend on how the rows are split or
added. The result is ``integer sum / scale`` (one rounding, the same on every rank).

The unit: with ``|value| <= bound`` over all rows and ``n_total`` rows, the scaled values
stay below ``2^VALUE_BITS`` (so the magic-number rounding, ``v + 1.5 * 2^52`` read as an
integer, is exact: it needs ``|v| < 2^51``) and below ``2^(SUM_BITS - 1 - log2 n)``, so no
sum of ``n_total`` of them reaches ``2^SUM_BITS``. At 10^6 rows that is a resolution of
``2^-41`` of the largest value (2^-50 for small data).

Rounding is to nearest, ties to even, by the magic-number form in the compiled kernels
(``models/kmeans/_kmeans_kernels.c``, ``models/linear/_linear_kernels.c``) and in NumPy
(:func:`quantize`), so the NumPy code paths and the compiled ones sum the same values.
Used by ``KMeans(exact_reduce=True)`` and the linear models' ``exact_reduce=True``; the
collective helpers take the caller's context (``ctx.coll``) and import nothing.
"""
from __future__ import annotations

import numpy as np

#: scaled values stay below 2^VALUE_BITS (the magic-number rounding is exact below 2^51)
VALUE_BITS = 50
#: |any sum of n_total scaled values| < 2^SUM_BITS (int64 cannot overflow)
SUM_BITS = 62
BLOCK = 65536  # rows per block of the quantisation temporaries
MAGIC = 6755399441055744.0             # 1.5 * 2^52: v + MAGIC holds rint(v) in its low bits
MAGIC_BITS = 0x4338000000000000        # the bits of MAGIC


def fixed_scales(bound, n_total: int, value_bits: int | None = VALUE_BITS) -> np.ndarray:
    """The power of two (per entry of ``bound``) that maps values with ``|v| <= bound`` to
    int64 fixed point so that no sum of ``n_total`` of them can overflow; ``value_bits``
    caps each scaled value too (None: no cap, the device kernel rounds with ``llrint``)."""
    bound = np.asarray(bound, dtype=np.float64)
    rows_bits = int(np.ceil(np.log2(max(2, int(n_total)))))
    bits = SUM_BITS - 1 - rows_bits
    if value_bits is not None:
        bits = min(bits, value_bits)
    e = np.zeros(bound.shape, dtype=np.int64)
    pos = bound > 0
    e[pos] = bits - np.ceil(np.log2(bound[pos])).astype(np.int64)
    return np.ldexp(1.0, np.clip(e, -1000, 1000))


def _magic(values, scale) -> np.ndarray:
    """float64 ``values * scale + MAGIC``: its bits minus MAGIC_BITS are the rounded value."""
    t = np.multiply(values, scale, dtype=np.float64)
    t += MAGIC
    return t


def quantize(values, scale) -> np.ndarray:
    """``values * scale`` rounded to the nearest integer (ties to even), as int64 (exact
    for ``|values * scale| < 2^51``, which :func:`fixed_scales` guarantees)."""
    q = _magic(values, scale).view(np.int64)
    q -= MAGIC_BITS
    return q


def local_max(values, axis=0):
    """max |value| along ``axis`` (0 for an empty block): the local share of a bound."""
    v = np.asarray(values)
    if v.shape[axis] == 0:
        return np.zeros(v.shape[:axis] + v.shape[axis + 1:])
    return np.abs(v).max(axis=axis).astype(np.float64)


def global_scale(ctx, local_bound, n_total: int) -> np.ndarray:
    """The agreed unit: one max-allreduce of the ranks' bounds, then :func:`fixed_scales`."""
    bound = ctx.coll.allreduce(np.atleast_1d(np.asarray(local_bound, dtype=np.float64)), op="max")
    return fixed_scales(bound, n_total)


def local_fixed_sum(values, scale) -> np.ndarray:
    """Column sums (axis 0) of ``values`` in fixed point: int64, exact (by blocks of rows)."""
    v = np.asarray(values)
    out = np.zeros(v.shape[1:], dtype=np.uint64)
    for lo in range(0, v.shape[0], BLOCK):
        blk = v[lo:lo + BLOCK]
        # the sum of the biased bits wraps modulo 2^64 (unsigned); minus rows x the bias, it
        # is the exact signed sum (which fits: fixed_scales)
        out += _magic(blk, scale).view(np.uint64).sum(axis=0, dtype=np.uint64)
        out -= np.uint64(blk.shape[0] * MAGIC_BITS % 2 ** 64)
    return out.view(np.int64)


def exact_total(ctx, values, n_total: int):
    """The sum over all ranks' rows of ``values`` (n_local,) or (n_local, m), exactly: one
    max-allreduce for the unit, one int64 allreduce. Returns float64 (scalar or (m,))."""
    v = np.asarray(values, dtype=np.float64)
    scale = global_scale(ctx, local_max(v), n_total)
    tot = ctx.coll.allreduce(np.atleast_1d(local_fixed_sum(v, scale)))
    out = tot.astype(np.float64) / scale
    return float(out[0]) if v.ndim == 1 else out
