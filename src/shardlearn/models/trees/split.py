"""Best split per node from combined histograms, vectorised over nodes, features, bins.

Gain (LightGBM / XGBoost with L2 only)::

    gain = sum_c GL_c^2 / (HL + lambda_l2) + sum_c GR_c^2 / (HR + lambda_l2)
           - sum_c G_c^2 / (H + lambda_l2)

summed over the gradient channels ``c`` (one for boosting; one per class for a
classification forest, which makes the gain the Gini / variance reduction).

A candidate ``(feature f, bin b, missing_left)`` sends codes ``<= b`` left and the missing
bin left or right. Both directions are scanned when the node has missing values in
``f`` (the split learns where missing values go, as LightGBM and XGBoost do); ``b`` may
be the top value bin only as "all values left, missing right". When the node had no
missing values, missing values later go to the child with more rows (scikit-learn's
rule). Constraints: ``min_child_samples`` rows and ``min_sum_hessian`` on each side.

Ties are broken deterministically by taking the first maximum in the order (feature,
bin, missing-right before missing-left): the lowest feature, then the lowest bin.
Gains within a relative ``TIE_RTOL`` (1e-10) of the best count as tied, so that two
features inducing the same partition (identical gains up to summation order) give the
same choice whatever the number of ranks.
"""
from __future__ import annotations

import numpy as np

from ...backend import compiled_kernels


#: candidate gains within this relative distance of the best count as ties
TIE_RTOL = 1e-10
#: find_best_splits' default: look the compiled kernels up
_RESOLVE = object()


class SplitParams:
    """The constraints of the split search (names as in LightGBM)."""

    def __init__(self, lambda_l2=0.0, min_child_samples=20, min_sum_hessian=1e-3,
                 min_gain_to_split=0.0):
        self.lambda_l2 = float(lambda_l2)
        self.min_child_samples = max(1, int(min_child_samples))
        self.min_sum_hessian = float(min_sum_hessian)
        self.min_gain_to_split = float(min_gain_to_split)


def node_score(totals: np.ndarray, lam: float) -> np.ndarray:
    """``sum_c G_c^2 / (H + lambda)`` per node; totals is (k, C)."""
    den = totals[:, -2] + lam
    num = (totals[:, :-2] ** 2).sum(axis=1)
    # 0 where the hessian (+ lambda) is not positive; divides only elsewhere (no errstate:
    # this runs twice per split search, where a context manager costs more than the math)
    return np.divide(num, den, out=np.zeros(len(den)), where=den > 0)


def find_best_splits(hist: np.ndarray, totals: np.ndarray, n_bins: np.ndarray,
                     params: SplitParams, feature_mask=None, kernels=_RESOLVE):
    """Best split of each of ``k`` nodes.

    Parameters
    ----------
    hist : (k, C, d, S) float64, or a list of k (C, d, S) arrays
        Combined histograms (gradient channels, hessian, count); slot ``S-1`` is missing.
        A list (each node's histogram its own array, as the grower keeps them) goes to the
        compiled search as it is when it has one or two nodes, else it is stacked.
    totals : (k, C) float64
        Node totals of every channel.
    n_bins : (d,) or (k, d) int
        Value bins of each feature (per node when the features differ per node).
    params : SplitParams
    feature_mask : (k, d) or (d,) bool, optional
        Features allowed at each node (feature sampling).
    kernels : module or None, optional
        ``_hist_kernels`` as :func:`~shardlearn.backend.compiled_kernels` gives it (None: the
        NumPy code); by default looked up here. A caller that searches many times (the
        grower, once per split step) looks it up once.

    Returns
    -------
    dict of arrays over nodes: ``gain`` (k,) (``-inf`` where no valid split),
    ``feature`` (k,), ``bin`` (k,), ``missing_left`` (k,) bool, ``left`` (k, C) sums.
    """
    if kernels is _RESOLVE:
        kernels = compiled_kernels("models.trees._hist_kernels")
    if type(hist) is list:
        C, d, S = hist[0].shape
        if kernels is not None and C >= 3 and S >= 2 and len(hist) <= 2:
            return _find_best_splits_compiled(kernels, hist, totals, n_bins, params, feature_mask)
        hist = np.stack(hist)
    k, C, d, S = hist.shape
    if kernels is not None and C >= 3 and S >= 2:
        return _find_best_splits_compiled(kernels, hist, totals, n_bins, params, feature_mask)
    if feature_mask is not None:
        fm = np.broadcast_to(np.asarray(feature_mask, dtype=bool), (k, d))
        counts = fm.sum(axis=1)
        if k and (counts == counts[0]).all() and 0 < counts[0] < d:
            # search only the sampled features of each node (same count per node)
            sel = np.nonzero(fm)[1].reshape(k, counts[0])          # (k, m) sorted per node
            sub = hist[np.arange(k)[:, None], :, sel].transpose(0, 2, 1, 3)   # (k, C, m, S)
            nb = np.asarray(n_bins)                                # (d,) or per node (k, d)
            nb = np.take_along_axis(nb, sel, axis=1) if nb.ndim == 2 else nb[sel]
            res = find_best_splits(np.ascontiguousarray(sub), totals, nb, params, None, kernels=None)
            res["feature"] = sel[np.arange(k), res["feature"]]
            return res
        feature_mask = fm
    V = S - 1
    lam = params.lambda_l2
    cum = np.cumsum(hist[..., :V], axis=-1)             # (k, C, d, V): codes <= b
    miss = hist[..., V]                                  # (k, C, d)
    tot = totals[:, :, None, None]
    b = np.arange(V)
    nb = np.asarray(n_bins)
    nb = nb[..., None] if nb.ndim == 2 else nb[None, :, None]          # (k or 1, d, 1)
    inner = b < nb - 1                                   # (k or 1, d, V)
    top = b == nb - 1
    has_miss = miss[:, C - 1] > 0                        # (k, d)

    def gains(left, valid):
        right = tot - left
        hl, hr = left[:, C - 2], right[:, C - 2]
        cl, cr = left[:, C - 1], right[:, C - 1]
        ok = (valid & (cl >= params.min_child_samples) & (cr >= params.min_child_samples)
              & (hl >= params.min_sum_hessian) & (hr >= params.min_sum_hessian)
              & (hl + lam > 0) & (hr + lam > 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            g = ((left[:, :C - 2] ** 2).sum(axis=1) / (hl + lam)
                 + (right[:, :C - 2] ** 2).sum(axis=1) / (hr + lam))
        return np.where(ok, g, -np.inf)                  # (k, d, V)

    valid_r = inner | (top & has_miss[:, :, None])
    g_right = gains(cum, valid_r)
    if has_miss.any():
        g_left = gains(cum + miss[..., None], inner & has_miss[:, :, None])
        g = np.stack([g_right, g_left], axis=-1)         # (k, d, V, 2)
        n_dir = 2
    else:
        # no missing values in any of these nodes: only "missing right" candidates exist,
        # so search g_right alone (same order and ties as with an all -inf g_left)
        g, n_dir = g_right, 1
    if feature_mask is not None:
        g = np.where(feature_mask[:, :, None, None] if n_dir == 2 else feature_mask[:, :, None], g, -np.inf)
    flat = g.reshape(k, -1)
    if flat.shape[1]:
        top = flat.max(axis=1)
        # gains equal within float noise (e.g. two features inducing the same partition)
        # are ties: take the first, so the choice does not depend on summation order
        near = flat >= (top - TIE_RTOL * np.abs(top))[:, None]
        best = np.argmax(near, axis=1)
        best_gain = flat[np.arange(k), best]
    else:
        best, best_gain = np.zeros(k, dtype=np.int64), np.full(k, -np.inf)
    f, rest = np.divmod(best, V * n_dir)
    bin_, direction = np.divmod(rest, n_dir)
    ml = direction == 1
    nodes = np.arange(k)
    left = cum[nodes, :, f, bin_] + np.where(ml[:, None], miss[nodes, :, f], 0.0)
    right = totals - left
    # no missing values seen at this node: send future ones to the bigger child
    no_miss = ~has_miss[nodes, f]
    ml = np.where(no_miss, left[:, C - 1] >= right[:, C - 1], ml)
    gain = best_gain - node_score(totals, lam)
    gain = np.where(np.isfinite(best_gain), gain, -np.inf)
    return {"gain": gain, "feature": f.astype(np.int64), "bin": bin_.astype(np.int64),
            "missing_left": ml, "left": left}


def _find_best_splits_compiled(kernels, hist, totals, n_bins, params: SplitParams, feature_mask):
    """:func:`find_best_splits` through ``_hist_kernels.best_splits``.

    The C code runs the NumPy code's arithmetic in the same order (cumulative sums per
    channel, the same gain expression) and its choice (the first candidate in (feature,
    bin, direction) order within ``TIE_RTOL`` of the best), one node at a time, without
    the (k, C, d, S) temporaries. Features outside ``feature_mask`` have no candidates:
    the first best among the allowed features is the one the NumPy sampled-feature
    search finds. The kernel also decides whether missing-left candidates exist (some node
    has missing values), decodes the winner (feature, bin, missing side: with no missing
    value at the node, the bigger child, as in the NumPy code) and subtracts the node's
    score (:func:`node_score`'s arithmetic; NumPy sums the squares of 8 or more channels
    pairwise, so there the score is computed here). This runs once per split step, so
    it does no more in Python than it must.
    """
    if type(hist) is list:          # one or two nodes, each its own (C, d, S) array
        k = len(hist)
        C, d, S = hist[0].shape
        nodes = [np.ascontiguousarray(h, dtype=np.float64) for h in hist]   # no copy when they are
        if any(h.shape != (C, d, S) for h in nodes):
            raise ValueError(f"node histograms of different shapes: {[h.shape for h in nodes]}")
        hist, hist2, k1 = nodes[0], (nodes[1] if k == 2 else _NO_HIST), 1
    else:
        k, C, d, S = hist.shape
        if hist.dtype != np.float64 or not hist.flags.c_contiguous:
            hist = np.ascontiguousarray(hist, dtype=np.float64)
        hist2, k1 = _NO_HIST, k
    if totals.dtype != np.float64 or not totals.flags.c_contiguous:
        totals = np.ascontiguousarray(totals, dtype=np.float64)
    nb, per_node, mask = _kernel_bins_mask(n_bins, feature_mask, k, d)
    best, f, bin_ = np.empty(k, dtype=np.int64), np.empty(k, dtype=np.int64), np.empty(k, dtype=np.int64)
    best_gain, gain = np.empty(k), np.empty(k)
    left = np.empty((k, C))
    ml = np.empty(k, dtype=np.uint8)
    lam = params.lambda_l2
    kernels.best_splits(hist, totals, nb, int(per_node), mask, k, C, d, S, 0, lam,
                        params.min_sum_hessian, TIE_RTOL, params.min_child_samples,
                        best, best_gain, left, f, bin_, ml, gain, hist2, k1)
    if C - 2 >= 8:
        gain = np.where(np.isfinite(best_gain), best_gain - node_score(totals, lam), -np.inf)
    return {"gain": gain, "feature": f, "bin": bin_, "missing_left": ml.view(bool), "left": left}


#: the empty mask buffer (no feature mask) and second histogram buffer (all nodes in the
#: first): read only, shared by every call
_NO_MASK = np.empty(0, np.uint8)
_NO_HIST = np.empty(0, np.float64)
_NO_MASK.flags.writeable = _NO_HIST.flags.writeable = False


def _kernel_bins_mask(n_bins, feature_mask, k: int, d: int):
    """The split kernels' ``n_bins`` (int64, (d,) or (k, d)), whether it is per node, and
    their feature mask (uint8 (k, d), or the empty buffer: no mask). A C-contiguous (d,)
    int64 ``n_bins`` (the grower's) is used as it is."""
    nb = n_bins
    if type(nb) is not np.ndarray or nb.dtype != np.int64 or nb.ndim != 1 or not nb.flags.c_contiguous:
        nb = np.asarray(n_bins)
        if nb.ndim == 2:
            nb = np.broadcast_to(nb, (k, d))
        nb = np.ascontiguousarray(nb, dtype=np.int64)
    mask = _NO_MASK
    if feature_mask is not None:
        mask = np.ascontiguousarray(np.broadcast_to(np.asarray(feature_mask, dtype=bool), (k, d)), dtype=np.uint8)
    return nb, nb.ndim == 2, mask


def find_best_splits_packed(kernels, hist: np.ndarray, qtot: np.ndarray, totals: np.ndarray, n_bins: np.ndarray,
                            params: SplitParams, packing, scale: np.ndarray, feature_mask=None):
    """:func:`find_best_splits` on packed integer histograms (quantized gradients), through
    ``_quant_kernels.best_splits_packed``.

    ``hist`` (k, d, S) int64 packed sums (:class:`.quantize.Packing` ``packing``), ``qtot``
    (k, 3) int64 the nodes' integer totals (gradient, hessian, count), ``totals`` (k, 3)
    their real sums (the integer totals times ``scale``; the kernel forms them itself, so
    they are not read), ``scale`` (3,) the multipliers of the gradient and hessian fields. The candidates, constraints, gain and tie rule are :func:`find_best_splits`'s;
    the cumulative sums are exact integers and only the gain is computed in float (from
    the integer sums times the scales), so the choice is a function of the integer
    histograms alone. ``left`` holds the winner's left sums as integers (gradient,
    hessian, count; float64, exact), not scaled.
    """
    k, d, S = hist.shape
    lam = params.lambda_l2
    nb, per_node, mask = _kernel_bins_mask(n_bins, feature_mask, k, d)
    best_gain = np.empty(k)
    left = np.empty((k, 3))
    f, bin_ = np.empty(k, dtype=np.int64), np.empty(k, dtype=np.int64)
    ml = np.empty(k, dtype=np.uint8)
    kernels.best_splits_packed(np.ascontiguousarray(hist, dtype=np.int64), np.ascontiguousarray(qtot, dtype=np.int64),
                               nb, int(per_node), mask, k, d, S, packing.bits, packing.L, int(packing.const_hess),
                               float(scale[0]), float(scale[1]), float(lam), float(params.min_sum_hessian), TIE_RTOL,
                               int(params.min_child_samples), best_gain, left, f, bin_, ml)
    # best_gain is already the gain over the node's own score (node_score's arithmetic)
    return {"gain": best_gain, "feature": f, "bin": bin_, "missing_left": ml.view(bool), "left": left}


def find_best_splits_quant(hist: np.ndarray, qtot: np.ndarray, totals: np.ndarray, n_bins: np.ndarray,
                           params: SplitParams, scale: np.ndarray, feature_mask=None):
    """The NumPy form of :func:`find_best_splits_packed`: the same candidates, the same float
    operations in the same order, the same choice, on integer histograms held as float64
    ``hist`` (k, 3, d, S) (gradient, hessian, count; integers below 2**53, so every sum
    is exact) with the integer totals ``qtot`` (k, 3)."""
    k, C, d, S = hist.shape
    V = S - 1
    lam = params.lambda_l2
    sg, sh = float(scale[0]), float(scale[1])
    cum = np.cumsum(hist[..., :V], axis=-1)             # (k, 3, d, V): exact integers
    miss = hist[..., V]                                  # (k, 3, d)
    tot = np.asarray(qtot, dtype=np.float64)[:, :, None, None]
    TG = tot[:, 0] * sg                                  # (k, 1, 1)
    b = np.arange(V)
    nb = np.asarray(n_bins)
    nb = nb[..., None] if nb.ndim == 2 else nb[None, :, None]          # (k or 1, d, 1)
    inner = b < nb - 1
    top_bin = b == nb - 1
    has_miss = miss[:, 2] > 0                            # (k, d)
    mcs = params.min_child_samples

    def gains(left, valid):
        gl, hl, cl = left[:, 0], left[:, 1], left[:, 2]
        hlr, hrr = hl * sh, (tot[:, 1] - hl) * sh
        cr = tot[:, 2] - cl
        ok = (valid & (cl >= mcs) & (cr >= mcs) & (hlr >= params.min_sum_hessian)
              & (hrr >= params.min_sum_hessian) & (hlr + lam > 0) & (hrr + lam > 0))
        lr = gl * sg
        r = TG - lr
        with np.errstate(divide="ignore", invalid="ignore"):
            g = (lr * lr) / (hlr + lam) + (r * r) / (hrr + lam)
        return np.where(ok, g, -np.inf)                  # (k, d, V)

    g_right = gains(cum, inner | (top_bin & has_miss[:, :, None]))
    g_left = gains(cum + miss[..., None], inner & has_miss[:, :, None])
    g = np.stack([g_right, g_left], axis=-1)             # (k, d, V, 2)
    if feature_mask is not None:
        fm = np.broadcast_to(np.asarray(feature_mask, dtype=bool), (k, d))
        g = np.where(fm[:, :, None, None], g, -np.inf)
    g = np.where((nb > 0)[..., None], g, -np.inf)
    flat = g.reshape(k, -1)
    nodes = np.arange(k)
    if flat.shape[1]:
        top = flat.max(axis=1)
        near = flat >= (top - TIE_RTOL * np.abs(top))[:, None]
        best = np.argmax(near, axis=1)
        best_gain = flat[nodes, best]
    else:
        best, best_gain = np.zeros(k, dtype=np.int64), np.full(k, -np.inf)
    f, rest = np.divmod(best, V * 2)
    bin_, direction = np.divmod(rest, 2)
    ml = direction == 1
    fin = np.isfinite(best_gain)
    left = cum[nodes, :, f, bin_] + np.where(ml[:, None], miss[nodes, :, f], 0.0)
    left = np.where(fin[:, None], left, 0.0)
    no_miss = ~has_miss[nodes, f]
    ml = np.where(no_miss, left[:, 2] >= tot[:, 2, 0, 0] - left[:, 2], ml)
    gain = np.where(fin, best_gain - node_score(totals, lam), -np.inf)
    return {"gain": gain, "feature": f.astype(np.int64), "bin": bin_.astype(np.int64),
            "missing_left": ml, "left": left}
