"""Quantized gradients for boosting: integer histograms, exact for any rank count.

The idea of LightGBM 4's quantized training (``use_quantized_grad``): per tree, the
gradients are scaled so that the largest ``|g|`` maps to ``2**(B-1)`` and the hessians so
that the largest ``h`` maps to ``2**B`` (``B = grad_bits``; ``B = 2`` is LightGBM's default
``num_grad_quant_bins = 4``), then rounded *stochastically* to integers::

    g_int = floor(g * 2**(B-1) / max|g| + u1)        in [-2**(B-1), 2**(B-1)]
    h_int = floor(h * 2**B / max h + u2)              in [0, 2**B]

with ``u1, u2`` uniform in [0, 1), so ``E[g_int] * scale = g``. The two uniforms are the
halves of one 64-bit draw keyed by (seed, iteration, class, *global row*)
(:func:`shardlearn.rng.row_bits`), so the rounding does not depend on how the rows are
split. The scales come from one max-allreduce per iteration (max is exact, so every rank
gets the same scales).

**Why the trees are bit-identical for any P, topology and order of accumulation.** Every
histogram entry is then a sum of small integers. Integer sums are exact and associative,
so the local histograms, their reduction across ranks (any algorithm, any order, either
``hist_reduce``), the subtraction trick and the node totals are the same integers for any
number of ranks; everything after them (the splits, the children's totals) is a function
of those integers only. The grower keeps the histograms and node totals as integers (the
subtraction trick and the children's totals are exact integer differences), and the split
search runs on them (:func:`.split.find_best_splits_packed`, compiled, on packed sums;
:func:`.split.find_best_splits_quant`, NumPy, the same arithmetic on integer-valued floats):
exact cumulative integer sums, scaled to real sums only inside each candidate's gain. The
leaf values are
renewed from the exact gradients (LightGBM's ``quant_train_renew_leaf``) through
fixed-point sums: each ``g`` becomes ``rint(g / 2**e)`` in int64 with one power-of-two unit
``2**e`` per tree chosen so that no sum of ``N`` rows can overflow (``|g| / 2**e < 2**(62 - L)``,
``N < 2**L``), i.e. a relative resolution of ``2**-(62 - L)`` of ``max|g|`` per row (1e-13 for
a million rows), summed exactly (compiled: every leaf of a tree in one pass over the tree's
row permutation, ``_quant_kernels.leaf_fixed_sums``). The regression's initial score (the label mean) is summed
the same way. So the model file is the same bytes for any P (tests/test_quantized.py).

**Two ways to accumulate, the same integers.** Where the compiled kernels are built and the
fields fit (``2B + 3L <= 64``, ``L`` the bit length of the training rows; with a constant
hessian ``B + 2L <= 64``), each row's ``(g_int, h_int, 1)`` is packed into ONE int64::

    packed = g_int << (L + B + L)  |  h_int << L  |  1          (count in the low L bits)

and a histogram bin is one int64 sum (one add per row and feature instead of three float
adds; the fields cannot carry into each other because no sum of ``N`` rows overflows its
field, and the signed gradient sits in the top field, where a floor shift decodes it). The
histograms travel in that packed form: 8 bytes per bin instead of 24 (3 float64 channels),
and 4 (int32) when every node of the collective has so few rows that the packed fields fit
32 bits. Otherwise (no compiler, or more rows than the packing allows) the integers go
through the float64 histogram code unchanged: sums of integers below ``2**53`` are exact in
float64 too, whatever the order. Both give the same integer sums, hence the same trees.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ... import rng
from ...backend import to_host

#: allowed ``grad_bits``: ``2**B`` quantization levels per side (LightGBM's
#: ``num_grad_quant_bins`` = ``2**B``; its default 4 is ``B = 2``)
GRAD_BITS = (2, 16)


@dataclass(frozen=True)
class Packing:
    """Field layout of a packed int64 row value: count ``[0, L)``, hessian ``[L, L + B + L)``
    (absent with a constant hessian), signed gradient above."""

    bits: int            # B
    L: int               # bit length of the largest row count a sum can cover
    const_hess: bool     # hessian == 1 for every row (L2): no hessian field

    @property
    def shift_h(self) -> int:
        return self.L

    @property
    def shift_g(self) -> int:
        return self.L if self.const_hess else 2 * self.L + self.bits

    def fits(self, width: int) -> bool:
        """Whether sums of up to ``2**L - 1`` rows fit a signed ``width``-bit integer."""
        # |sum g| < 2**(B - 1 + L): the gradient field needs B - 1 + L bits plus the sign
        return self.shift_g + self.bits - 1 + self.L + 1 <= width

    @classmethod
    def for_rows(cls, bits: int, n_rows: int, const_hess: bool) -> "Packing":
        return cls(int(bits), max(int(n_rows), 1).bit_length(), bool(const_hess))


def decode(packed: np.ndarray, p: Packing) -> np.ndarray:
    """Integer sums ``(..., 3)`` float64 — gradient, hessian, count — of packed sums.

    With a constant hessian the hessian is the count. Exact: every field is below 2**53.
    """
    x = packed.astype(np.int64, copy=False)
    out = np.empty(x.shape + (3,), dtype=np.float64)
    cmask = np.int64((1 << p.L) - 1)
    out[..., 2] = x & cmask
    if p.const_hess:
        out[..., 1] = out[..., 2]
    else:
        out[..., 1] = (x >> np.int64(p.shift_h)) & np.int64((1 << (p.bits + p.L)) - 1)
    out[..., 0] = x >> np.int64(p.shift_g)          # arithmetic shift: floor, the signed field
    return out


def fields(packed: np.ndarray, p: Packing):
    """The integer fields ``(g, h, c)`` (int64 arrays) of packed sums (``h`` is ``c`` with a
    constant hessian)."""
    x = packed.astype(np.int64, copy=False)
    c = x & np.int64((1 << p.L) - 1)
    h = c if p.const_hess else (x >> np.int64(p.shift_h)) & np.int64((1 << (p.bits + p.L)) - 1)
    return x >> np.int64(p.shift_g), h, c


def pack(g, h, c, p: Packing) -> np.ndarray:
    """Integer fields -> packed int64 sums in the layout ``p`` (the inverse of :func:`fields`)."""
    out = np.asarray(g, dtype=np.int64) << np.int64(p.shift_g)
    if not p.const_hess:
        out = out + (np.asarray(h, dtype=np.int64) << np.int64(p.shift_h))
    return out + np.asarray(c, dtype=np.int64)


def widen(small: np.ndarray, q: Packing, p: Packing) -> np.ndarray:
    """Packed sums in the narrow layout ``q`` (int32, :func:`narrow`) -> the int64 layout ``p``."""
    return pack(*fields(small, q), p)


def narrow(packed: np.ndarray, p: Packing, n_rows: int):
    """``packed`` re-laid out for sums of at most ``n_rows`` rows in int32, or None if the
    fields do not fit 32 bits (the packed int64 sums are then sent as they are)."""
    q = Packing.for_rows(p.bits, n_rows, p.const_hess)
    if not q.fits(32):
        return None, None
    f = decode(packed, p).astype(np.int64)
    out = f[..., 0] << np.int64(q.shift_g)
    if not q.const_hess:
        out += f[..., 1].astype(np.int64) << np.int64(q.shift_h)
    out += f[..., 2].astype(np.int64)
    return out.astype(np.int32), q


@dataclass
class TreeQuant:
    """One tree's quantized statistics: what the grower sums, and how to scale the sums.

    channels : (2, n) float64 integer values (g_int, h_int or 1) — the float path
    packed : (n,) int64 or None — the packed path (:class:`Packing`)
    scale : (3,) float64 — multipliers of the summed gradient, hessian, count channels
    kernels : module or None — ``_quant_kernels`` (the packed histogram)
    """

    channels: np.ndarray
    packed: np.ndarray | None
    packing: Packing | None
    scale: np.ndarray
    kernels: object = None

    def scale_hist(self, hist: np.ndarray) -> np.ndarray:
        """Integer sums ``(..., 3, d, S)`` -> the real sums the split search reads (in place)."""
        hist[..., 0, :, :] *= self.scale[0]
        hist[..., 1, :, :] *= self.scale[1]
        return hist

    def real(self, packed) -> np.ndarray:
        """Packed integer sums ``(...)`` -> their real sums ``(..., 3)`` (gradient, hessian, count)."""
        return self.scale_totals(decode(np.asarray(packed, dtype=np.int64), self.packing))

    def scale_totals(self, tot: np.ndarray) -> np.ndarray:
        tot[..., 0] *= self.scale[0]
        tot[..., 1] *= self.scale[1]
        return tot


def agree_max(ctx, G: np.ndarray, H: np.ndarray | None, local=None) -> tuple[np.ndarray, np.ndarray]:
    """(max |g| per class, max h per class) over every rank's rows: ONE max-allreduce.

    ``local``: this rank's ``(max |g|, max h)`` for K = 1, already computed (the compiled
    gradients return them), instead of a pass over ``G`` and ``H``."""
    K = G.shape[0]
    loc = np.zeros(2 * K)
    if local is not None and K == 1:
        loc[0], loc[1] = local[0], (local[1] if H is not None else 0.0)
    elif G.shape[1]:
        loc[:K] = np.abs(G).max(axis=1)
        if H is not None:
            loc[K:] = H.max(axis=1)
    glob = ctx.coll.allreduce(loc, op="max")
    return glob[:K], (glob[K:] if H is not None else np.ones(K))


def _inv(x: float, levels: int) -> float:
    return levels / x if x > 0 else 0.0


def quantize_numpy(g, h, grows, key: int, inv_g: float, inv_h: float, bits: int) -> np.ndarray:
    """(2, n) float64 ``(g_int, h_int)`` (``h_int = 1`` when ``h`` is None): the reference.

    The compiled ``_quant_kernels.quantize`` computes the same numbers (the same bits, the
    same two roundings: a product, then a sum; no fused multiply-add).
    """
    n = len(g)
    out = np.empty((2, n), dtype=np.float64)
    bits64 = rng.keyed_bits(key, grows)
    u1 = (bits64 >> np.uint64(32)).astype(np.float64) * 2.0 ** -32
    top = float(1 << (bits - 1))
    np.floor(g * inv_g + u1, out=out[0])
    np.clip(out[0], -top, top, out=out[0])
    if h is None:
        out[1] = 1.0
    else:
        u2 = (bits64 & np.uint64(0xFFFFFFFF)).astype(np.float64) * 2.0 ** -32
        np.floor(h * inv_h + u2, out=out[1])
        np.clip(out[1], 0.0, float(1 << bits), out=out[1])
    return out


class Quantizer:
    """Per-fit quantization settings and kernels (one per boosting fit).

    Parameters
    ----------
    bits : int
        ``grad_bits``.
    seed : int
        ``random_state``.
    n_rows : int
        Global training rows (the packing's ``L``).
    const_hess : bool
        The hessian is 1 for every row (L2 regression).
    kernels : module or None
        ``_quant_kernels`` (None: the NumPy path, float histograms of integers).
    """

    def __init__(self, bits, seed, n_rows, const_hess, kernels=None):
        self.bits, self.seed, self.n_rows, self.const_hess = int(bits), int(seed), int(n_rows), const_hess
        self.kernels = kernels
        #: the last ``grows`` seen and its first row if it is a contiguous block (else -1):
        #: the kernel then forms the row numbers itself instead of reading them
        self._grows, self._start = None, -1
        p = Packing.for_rows(bits, n_rows, const_hess)
        self.packing = p if kernels is not None and p.fits(64) else None

    def _block_start(self, grows: np.ndarray) -> int:
        """``grows[0]`` if ``grows`` is ``grows[0], grows[0] + 1, ...`` (checked once per fit:
        the same array comes back every tree), else -1."""
        if grows is not self._grows:
            n = len(grows)
            contiguous = n > 0 and grows[0] >= 0 and bool(np.array_equal(grows, np.arange(grows[0], grows[0] + n)))
            self._grows, self._start = grows, int(grows[0]) if contiguous else -1
        return self._start

    def tree(self, g, h, grows, it: int, k: int, gmax: float, hmax: float) -> TreeQuant:
        """Quantize one tree's gradients ``g`` (n,) and hessians ``h`` (n,) or None."""
        B = self.bits
        inv_g, inv_h = _inv(gmax, 1 << (B - 1)), _inv(hmax, 1 << B)
        key = rng.stream_key(self.seed, rng.stream_id("quantized_grad", it, k))
        # real sum = integer sum * scale; a constant hessian is the count itself
        hscale = 1.0 if h is None else (hmax / (1 << B) if hmax > 0 else 0.0)
        scale = np.array([gmax / (1 << (B - 1)) if gmax > 0 else 0.0, hscale, 1.0])
        grows = np.ascontiguousarray(grows, dtype=np.int64)
        if self.kernels is None:
            return TreeQuant(quantize_numpy(g, h, grows, key, inv_g, inv_h, B), None, None, scale)
        n = len(g)
        g = np.ascontiguousarray(g, dtype=np.float64)
        hh = np.empty(0) if h is None else np.ascontiguousarray(h, dtype=np.float64)
        p = self.packing
        if p is not None:
            packed = np.empty(n, dtype=np.int64)
            start = self._block_start(grows)
            self.kernels.quantize(g, hh, grows if start < 0 else grows[:0], key, inv_g, inv_h, B, p.shift_g,
                                  p.shift_h, packed, np.empty((2, 0)), start)
            return TreeQuant(None, packed, p, scale, self.kernels)
        ch = np.empty((2, n), dtype=np.float64)
        self.kernels.quantize(g, hh, grows, key, inv_g, inv_h, B, -1, -1, np.empty(0, np.int64), ch)
        return TreeQuant(ch, None, None, scale)


# ------------------------------------------------------------------ exact sums
def fixed_point_exponent(vmax: float, n_rows: int) -> int:
    """``e`` such that ``|v| / 2**e < 2**(62 - L)`` for ``|v| <= vmax``: sums of up to
    ``2**L - 1`` such fixed-point values fit int64."""
    if not vmax > 0:
        return 0
    L = max(int(n_rows), 1).bit_length()
    return math.frexp(vmax)[1] - (62 - L)


def to_fixed(v: np.ndarray, e: int) -> np.ndarray:
    """``rint(v / 2**e)`` as int64 (the scaling by a power of two is exact)."""
    return np.rint(np.ldexp(v, -e)).astype(np.int64)


def exact_sums(ctx, columns, groups, n_rows: int) -> np.ndarray:
    """Sums ``(len(columns), len(groups))`` of each column over each row group, over every
    rank, independent of P (ONE allreduce).

    ``columns``: ``(v, vmax)`` pairs, ``v`` (n_local,) float64 and ``vmax`` the largest
    ``|v|`` on any rank (agreed), or ``(None, None)`` for the row count; ``groups``: local
    row arrays; ``n_rows``: the most rows any group can have globally. Fixed point with one
    power-of-two unit per column, summed in int64 (exact), so the result does not depend on
    the order of the rows or on how they are split across ranks.
    """
    groups = [to_host(r) for r in groups]            # a device's leaf rows come to the host
    loc = np.zeros((len(columns), len(groups)), dtype=np.int64)
    exps = []
    for c, (v, vmax) in enumerate(columns):
        if v is None:
            loc[c] = [len(r) for r in groups]
            exps.append(0)
            continue
        e = fixed_point_exponent(vmax, n_rows)
        fx = to_fixed(v, e)
        loc[c] = [fx[r].sum() if len(r) else 0 for r in groups]
        exps.append(e)
    tot = ctx.coll.allreduce(loc)
    return np.ldexp(tot.astype(np.float64), np.array(exps, dtype=np.int64)[:, None])


def _agreed_max(ctx, *columns) -> np.ndarray:
    loc = np.array([np.abs(c).max() if len(c) else 0.0 for c in columns])
    return ctx.coll.allreduce(loc, op="max")


def exact_mean(ctx, y: np.ndarray, n_total: int, w: np.ndarray | None = None) -> float:
    """The (``w``-weighted) mean of ``y`` over every rank, the same bits for any P (two
    small collectives)."""
    rows = [np.arange(len(y))]
    if w is None:
        ymax = float(_agreed_max(ctx, y)[0])
        return float(exact_sums(ctx, [(y, ymax)], rows, n_total)[0, 0]) / n_total
    wy = w * y
    m = _agreed_max(ctx, wy, w)
    s = exact_sums(ctx, [(wy, float(m[0])), (w, float(m[1]))], rows, n_total)
    return float(s[0, 0] / s[1, 0])


def exact_class_weights(ctx, y: np.ndarray, w: np.ndarray, n_classes: int, n_total: int) -> np.ndarray:
    """Sum of the weights ``w`` of each class ``0..n_classes-1`` over every rank, the same
    bits for any P (two small collectives)."""
    wmax = float(_agreed_max(ctx, w)[0])
    groups = [np.flatnonzero(y == c) for c in range(n_classes)]
    return exact_sums(ctx, [(w, wmax)], groups, n_total)[0]


def renew_leaf_values(ctx, values, leaf_rows, g, h, l2, learning_rate, gmax, hmax, n_rows,
                      kernels=None, perm=None, spans=None):
    """Leaf values from the exact gradients (LightGBM's ``quant_train_renew_leaf``).

    ``values`` (n_nodes,) float64 is updated in place for the leaves of ``leaf_rows``
    (node, local rows); ``l2`` (n_nodes,) each node's L2 penalty. Sums in fixed point
    (:func:`exact_sums`, one allreduce): the same leaf values for any P.

    With ``kernels`` (``_quant_kernels``) and the tree's row permutation ``perm`` with each
    leaf's ``(start, length)`` in it (``spans``, in the order of ``leaf_rows``), the local
    fixed-point sums of every leaf are ONE compiled pass (``leaf_fixed_sums``: the same
    ``rint(v / 2**e)`` integers, the same int64 sums) instead of a conversion of every row
    and a gather per leaf.
    """
    nodes = [node for node, _ in leaf_rows]
    if kernels is not None and perm is not None and spans is not None and len(spans) == len(leaf_rows):
        eg = fixed_point_exponent(gmax, n_rows)
        eh = 0 if h is None else fixed_point_exponent(hmax, n_rows)
        loc = np.empty((len(spans), 2), dtype=np.int64)
        kernels.leaf_fixed_sums(np.ascontiguousarray(g, dtype=np.float64),
                                np.empty(0) if h is None else np.ascontiguousarray(h, dtype=np.float64),
                                perm, np.ascontiguousarray(spans, dtype=np.int64), eg, eh, loc)
        tot = ctx.coll.allreduce(np.ascontiguousarray(loc.T))
        G, H = np.ldexp(tot.astype(np.float64), np.array([[eg], [eh]], dtype=np.int64))
    else:
        groups = [r for _, r in leaf_rows]
        G, H = exact_sums(ctx, [(g, gmax), (h, hmax) if h is not None else (None, None)], groups, n_rows)
    den = H + np.asarray(l2, dtype=np.float64)[nodes]
    ok = den > 0
    values[nodes] = np.where(ok, -G / np.where(ok, den, 1.0) * learning_rate, 0.0)
    return values
