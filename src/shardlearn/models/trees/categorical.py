"""Split search on categorical features (LightGBM's one-vs-rest and many-vs-many).

A categorical feature's bins are categories (see :mod:`shardlearn.data.binning`), so a
split sends a *set* of bins left; the missing bin (NaN, rare and unseen categories)
always goes right, as in LightGBM (its ``Tree::CategoricalDecision`` sends NaN and
unknown categories right, and its split search never puts the NaN bin in the left set).

We follow LightGBM 4's ``FeatureHistogram::FindBestThresholdCategoricalInner``
(src/treelearner/feature_histogram.cpp) and its documented defaults
(https://lightgbm.readthedocs.io/en/latest/Parameters.html):

- **one-vs-rest** when the feature has at most ``max_cat_to_onehot`` (4) bins counting
  the missing bin, i.e. at most 3 categories: each category alone against all others,
  gain with ``lambda_l2``;
- **many-vs-many** otherwise: the categories with at least ``cat_smooth`` (10) rows are
  sorted by ``sum_gradient / (sum_hessian + cat_smooth)``; prefixes of that order are
  scanned from both ends, at most ``min(max_cat_threshold, (used + 1) // 2)`` categories
  (``max_cat_threshold`` = 32), with ``lambda_l2 + cat_l2`` (``cat_l2`` = 10) in the gain
  and in the two children's values. A prefix is a candidate only when the rows added
  since the previous candidate reach ``min_data_per_group`` (100), and the scan stops
  once the right side would hold fewer than ``min_data_per_group`` (or
  ``min_child_samples``) rows or less than ``min_sum_hessian``.

Differences from LightGBM: counts are exact (LightGBM estimates them from the hessian),
and there is no ``kEpsilon`` in the hessian sums. With several gradient channels (a
classification forest: one channel per class) there is no single order: each channel's
ratio order is scanned and the best prefix of any of them is kept.

Candidates of one feature are taken in the order (one-vs-rest: bin; many-vs-many:
channel, direction forward then backward, prefix length), and the first maximum wins,
with gains within ``TIE_RTOL`` counting as ties, like :mod:`.split`; across features the
lowest feature wins a tie, numerical and categorical alike (:func:`merge_splits`).
"""
from __future__ import annotations

import numpy as np

from ...backend import compiled_kernels
from ...errors import ShardlearnError
from .split import TIE_RTOL, SplitParams, node_score

#: up to this many (node, scan order) rows, the min_data_per_group scan runs in plain Python
SCALAR_GROUP_ROWS = 16


class CatParams:
    """Categorical features and LightGBM's categorical split parameters (same names, defaults)."""

    def __init__(self, features=(), max_cat_to_onehot=4, cat_smooth=10.0, cat_l2=10.0,
                 max_cat_threshold=32, min_data_per_group=100):
        self.features = np.unique(np.asarray(features, dtype=np.int64))
        self.max_cat_to_onehot = int(max_cat_to_onehot)
        self.cat_smooth = float(cat_smooth)
        self.cat_l2 = float(cat_l2)
        self.max_cat_threshold = int(max_cat_threshold)
        self.min_data_per_group = int(min_data_per_group)


def check_categorical_params(est) -> None:
    """Range checks of an estimator's categorical split parameters (raise ShardlearnError)."""
    if not est.cat_smooth >= 0 or not est.cat_l2 >= 0:
        raise ShardlearnError(f"cat_smooth and cat_l2 must be >= 0, got {est.cat_smooth} and {est.cat_l2}")
    for name in ("max_cat_threshold", "min_data_per_group", "max_cat_to_onehot"):
        if int(getattr(est, name)) < 1:
            raise ShardlearnError(f"{name} must be >= 1, got {getattr(est, name)}")


def cat_params(est, features) -> CatParams:
    """The :class:`CatParams` of an estimator's categorical parameters for ``features``."""
    return CatParams(features, est.max_cat_to_onehot, est.cat_smooth, est.cat_l2, est.max_cat_threshold,
                     est.min_data_per_group)


def _first_best(scores: np.ndarray):
    """Index of the first maximum per row, gains within TIE_RTOL of the best tied; and the max."""
    k = scores.shape[0]
    if scores.shape[1] == 0:
        return np.zeros(k, dtype=np.int64), np.full(k, -np.inf)
    top = scores.max(axis=1)
    near = scores >= (top - TIE_RTOL * np.abs(top))[:, None]
    best = np.argmax(near, axis=1)
    return best, scores[np.arange(k), best]


def _split_scores(left, tot, lam, sp: SplitParams, valid):
    """``sum_c GL^2/(HL+lam) + GR^2/(HR+lam)`` for left sums ``left`` (k, C, m); -inf where invalid."""
    C = left.shape[1]
    right = tot[:, :, None] - left
    hl, hr = left[:, C - 2], right[:, C - 2]
    cl, cr = left[:, C - 1], right[:, C - 1]
    ok = (valid & (cl >= sp.min_child_samples) & (cr >= sp.min_child_samples)
          & (hl >= sp.min_sum_hessian) & (hr >= sp.min_sum_hessian) & (hl + lam > 0) & (hr + lam > 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        g = (left[:, :C - 2] ** 2).sum(axis=1) / (hl + lam) + (right[:, :C - 2] ** 2).sum(axis=1) / (hr + lam)
    return np.where(ok, g, -np.inf)


def _one_vs_rest(h, tot, sp: SplitParams):
    """Best single category per node: (score, chosen bin (k, 1), in_left (k, 1) all True)."""
    V = h.shape[2]
    scores = _split_scores(h, tot, sp.lambda_l2, sp, np.ones((h.shape[0], V), dtype=bool))
    best, score = _first_best(scores)
    return score, best[:, None], np.ones((h.shape[0], 1), dtype=bool)


def _many_vs_many(h, tot, sp: SplitParams, cp: CatParams):
    """Best ratio-sorted prefix per node: (score, order (k, L) of bins, in_left (k, L) mask over that order).

    Runs the compiled kernel (``_cat_kernels.c``, one pass per row) when it is built,
    else the NumPy code below; both give the same result (tests compare them).
    """
    k, C, V = h.shape
    kern = compiled_kernels("models.trees._cat_kernels")
    if kern is not None and k and C - 2 <= 64:
        L = int(min(V, cp.max_cat_threshold))
        score, order, length = np.empty(k), np.empty((k, L), np.int64), np.empty(k, np.int64)
        kern.many_vs_many(np.ascontiguousarray(h, dtype=np.float64), np.ascontiguousarray(tot, dtype=np.float64),
                          k, C, V, L, int(cp.max_cat_threshold), sp.lambda_l2 + cp.cat_l2, cp.cat_smooth,
                          float(sp.min_child_samples), float(sp.min_sum_hessian), float(cp.min_data_per_group),
                          TIE_RTOL, score, order, length)
        return score, order, np.arange(L)[None, :] <= length[:, None]
    cnt, hess = h[:, C - 1], h[:, C - 2]
    lam = sp.lambda_l2 + cp.cat_l2
    eligible = (cnt >= cp.cat_smooth) & (cnt > 0)
    used = eligible.sum(axis=1)                                   # (k,)
    max_num_cat = np.minimum(cp.max_cat_threshold, (used + 1) // 2)
    L = int(min(V, cp.max_cat_threshold))
    pos = np.arange(V)
    mdpg = cp.min_data_per_group
    # scan orders: per gradient channel, ratio order forward and backward -> (k, n_o, L)
    orders = []
    for c in range(C - 2):
        with np.errstate(divide="ignore", invalid="ignore"):
            ctr = h[:, c] / (hess + cp.cat_smooth)
        ctr = np.where(eligible, np.nan_to_num(ctr), np.inf)       # the ineligible sort last
        fwd = np.argsort(ctr, axis=1, kind="stable")               # stable: ties keep bin order
        rev = np.take_along_axis(fwd, np.clip(used[:, None] - 1 - pos[None, :], 0, V - 1), axis=1)
        orders += [fwd[:, :L], rev[:, :L]]
    order = np.stack(orders, axis=1)                               # (k, n_o, L)
    n_o = order.shape[1]
    s = np.take_along_axis(h[:, None], order[:, :, None, :], axis=3)   # (k, n_o, C, L) scan order
    left = np.cumsum(s, axis=3)
    lc, lh = left[:, :, C - 1], left[:, :, C - 2]                  # (k, n_o, L)
    rc, rh = tot[:, None, C - 1, None] - lc, tot[:, None, C - 2, None] - lh
    lim = np.minimum(used, max_num_cat)                            # prefixes scanned per node
    ok = ((pos[:L] < lim[:, None])[:, None, :] & (lc >= sp.min_child_samples) & (lh >= sp.min_sum_hessian)
          & (rc >= sp.min_child_samples) & (rc >= mdpg) & (rh >= sp.min_sum_hessian))
    # LightGBM evaluates a prefix only once min_data_per_group rows were added since the
    # last evaluated one: a running count, reset where evaluated. Where every category
    # scanned has that many rows, all reachable prefixes qualify; otherwise the count is
    # run over the prefix lengths (at most max_cat_threshold steps, vectorised over the
    # nodes and orders; the left/right conditions are monotone in the prefix length)
    cs = s[:, :, C - 1]
    Lmax = int(lim.max()) if k else 0
    if (cs[:, :, :Lmax] >= mdpg).all():
        evaluate = ok
    elif k * n_o <= SCALAR_GROUP_ROWS:
        # few (node, order) rows, as in leaf-wise growth: plain Python over at most
        # rows x max_cat_threshold steps beats ~4 NumPy calls per prefix length
        evaluate = np.zeros_like(ok)
        hits = []
        for b, (row_c, row_ok) in enumerate(zip(cs[:, :, :Lmax].reshape(-1, Lmax).tolist(),
                                                ok[:, :, :Lmax].reshape(-1, Lmax).tolist())):
            group = 0.0
            for i in range(Lmax):
                group += row_c[i]
                if row_ok[i] and group >= mdpg:
                    hits.append(b * L + i)
                    group = 0.0
        evaluate.reshape(-1)[hits] = True
    else:
        evaluate = np.zeros_like(ok)
        group = np.zeros((k, n_o))
        for i in range(Lmax):
            group += cs[:, :, i]
            ev = ok[:, :, i] & (group >= mdpg)
            evaluate[:, :, i] = ev
            group[ev] = 0.0
    flat_left = left.transpose(0, 2, 1, 3).reshape(k, C, n_o * L)
    scores = _split_scores(flat_left, tot, lam, sp, evaluate.reshape(k, n_o * L))
    best, score = _first_best(scores)
    which, length = np.divmod(best, L)
    in_left = pos[None, :L] <= length[:, None]
    return score, order[np.arange(k), which], in_left


def find_best_categorical_splits(hist: np.ndarray, totals: np.ndarray, n_bins: np.ndarray,
                                 features: np.ndarray, sp: SplitParams, cp: CatParams,
                                 feature_mask=None) -> dict:
    """Best categorical split of each of ``k`` nodes over the given features.

    Parameters
    ----------
    hist : (k, C, d, S) float64
        Combined histograms; slot ``S-1`` is the missing bin.
    totals : (k, C) float64
    n_bins : (d,) int
        Category bins per feature.
    features : int array
        Categorical features (indices into ``hist``'s feature axis), ascending.
    sp, cp : SplitParams, CatParams
    feature_mask : (k, d) bool, optional

    Returns
    -------
    dict over nodes: ``gain`` (k,) (score minus the parent's, ``-inf`` where none),
    ``feature`` (k,), ``left`` (k, C) sums, ``cat_left`` (k, S) bool (bins going left),
    ``l2`` (k,) the L2 penalty of the children's values.
    """
    k, C, d, S = hist.shape
    nf = len(features)
    kern = compiled_kernels("models.trees._cat_kernels")
    if kern is not None and k and nf and C - 2 <= 64:
        feat, best, cat_left, left, l2b = _categorical_compiled(kern, hist, totals, n_bins, features, sp, cp,
                                                                feature_mask)
        gain = np.where(np.isfinite(best), best - node_score(totals, sp.lambda_l2), -np.inf)
        return {"gain": gain, "feature": feat, "left": left, "cat_left": cat_left, "l2": l2b}
    score = np.full((k, nf), -np.inf)
    left_sets = np.zeros((nf, k, S), dtype=bool)
    l2 = np.zeros((nf, k))
    rows = np.arange(k)
    nb = np.asarray(n_bins)[np.asarray(features, dtype=np.intp)] if nf else np.zeros(0, np.int64)
    onehot = nb + 1 <= cp.max_cat_to_onehot          # LightGBM counts the NaN bin in num_bin
    # all features of one kind in one batch: rows are (node, feature) pairs, bins padded
    # to the widest feature with empty bins (never a candidate: no rows)
    for kind in (True, False):
        js = np.flatnonzero(onehot == kind)
        if not len(js):
            continue
        g, Vmax = len(js), int(nb[js].max())
        fs = np.asarray(features, dtype=np.intp)[js]
        h = hist[:, :, fs, :Vmax].transpose(0, 2, 1, 3).reshape(k * g, C, Vmax)
        tot = np.repeat(totals, g, axis=0)
        if kind:
            sc, order, in_left = _one_vs_rest(h, tot, sp)
            l2[js] = sp.lambda_l2
        else:
            sc, order, in_left = _many_vs_many(h, tot, sp, cp)
            l2[js] = sp.lambda_l2 + cp.cat_l2
        score[:, js] = sc.reshape(k, g)
        r, c = np.nonzero(in_left)
        left_sets[js[r % g], r // g, order[r, c]] = True
    if feature_mask is not None and nf:
        score = np.where(np.asarray(feature_mask)[:, np.asarray(features, dtype=np.intp)], score, -np.inf)
    jbest, best = _first_best(score)
    cat_left = left_sets[jbest, rows] if nf else np.zeros((k, S), dtype=bool)
    return _finish(hist, totals, features, jbest, best, cat_left, n_bins, sp, cp)


def _finish(hist, totals, features, jbest, best, cat_left, n_bins, sp: SplitParams, cp: CatParams) -> dict:
    """The result dict of :func:`find_best_categorical_splits` from the winning feature
    ``jbest`` (index into ``features``), its score and left set, per node."""
    k, C, d, S = hist.shape
    nf = len(features)
    feat = np.asarray(features, dtype=np.int64)[jbest] if nf else np.zeros(k, dtype=np.int64)
    # left sums from the histogram and the chosen set, summed in bin order (cumsum: the
    # order the compiled kernel uses, so both paths give the same bits)
    hf = hist[np.arange(k), :, feat] if nf else np.zeros((k, C, S))     # (k, C, S)
    left = np.cumsum(hf * cat_left[:, None, :], axis=2)[:, :, -1]
    if nf:
        onehot = np.asarray(n_bins)[feat] + 1 <= cp.max_cat_to_onehot
        l2b = np.where(onehot, sp.lambda_l2, sp.lambda_l2 + cp.cat_l2)
    else:
        l2b = np.full(k, sp.lambda_l2)
    gain = np.where(np.isfinite(best), best - node_score(totals, sp.lambda_l2), -np.inf)
    return {"gain": gain, "feature": feat, "left": left, "cat_left": cat_left, "l2": l2b}


def _categorical_compiled(kern, hist, totals, n_bins, features, sp: SplitParams, cp: CatParams, feature_mask):
    """Winning feature (column of ``hist``), score, left set, left sums and children's L2 per node through
    ``_cat_kernels.categorical_splits`` (the per-row arithmetic and tie rules of the NumPy
    code above, in one call instead of ~60 NumPy calls on tiny arrays)."""
    k, C, d, S = hist.shape
    feats = np.ascontiguousarray(features, dtype=np.int64)
    nb = np.ascontiguousarray(np.asarray(n_bins)[feats], dtype=np.int64)
    if feats.min() < 0 or feats.max() >= d or nb.min() < 0 or nb.max() > S - 1:
        raise ValueError("categorical features or their bin counts out of range of the histogram")
    mask = np.empty(0, np.uint8)
    if feature_mask is not None:
        mask = np.ascontiguousarray(np.broadcast_to(np.asarray(feature_mask, dtype=bool), (k, d))[:, feats],
                                    dtype=np.uint8)
    score, feat, l2 = np.empty(k), np.empty(k, dtype=np.int64), np.empty(k)
    cat_left = np.empty((k, S), dtype=np.uint8)
    left = np.empty((k, C))
    kern.categorical_splits(np.ascontiguousarray(hist, dtype=np.float64),
                            np.ascontiguousarray(totals, dtype=np.float64), k, C, d, S, feats, nb, mask,
                            int(cp.max_cat_to_onehot), int(cp.max_cat_threshold), float(sp.lambda_l2),
                            float(cp.cat_l2), float(cp.cat_smooth), float(sp.min_child_samples),
                            float(sp.min_sum_hessian), float(cp.min_data_per_group), TIE_RTOL, score, feat,
                            cat_left, left, l2)
    return feat, score, cat_left.view(bool), left, l2


def merge_splits(num: dict, cat: dict, lambda_l2: float) -> dict:
    """Per node, the better of the numerical and the categorical best split.

    The higher gain wins; gains within ``TIE_RTOL`` are ties, won by the lower feature
    (the rule of :func:`.split.find_best_splits` across all features). Numerical
    winners get an all-False ``cat_left`` row and ``l2 = lambda_l2``.
    """
    gn, gc = num["gain"], cat["gain"]
    top = np.maximum(gn, gc)
    tol = TIE_RTOL * np.abs(top)
    with np.errstate(invalid="ignore"):
        use_cat = np.isfinite(gc) & ((gc > gn + tol) | ((gc >= gn - tol) & (cat["feature"] < num["feature"]))
                                     | ~np.isfinite(gn))
    out = {"gain": np.where(use_cat, gc, gn),
           "feature": np.where(use_cat, cat["feature"], num["feature"]),
           "bin": np.where(use_cat, 0, num["bin"]),
           "missing_left": np.where(use_cat, False, num["missing_left"]),
           "left": np.where(use_cat[:, None], cat["left"], num["left"]),
           "is_cat": use_cat,
           "cat_left": np.where(use_cat[:, None], cat["cat_left"], False),
           "l2": np.where(use_cat, cat["l2"], lambda_l2)}
    return out


def pack_bits(cat_left: np.ndarray) -> np.ndarray:
    """Bool sets over bins (m, S) -> bitsets (m, ceil(S / 8)) uint8, bin ``b`` at bit ``b % 8`` of byte ``b // 8``."""
    return np.packbits(np.asarray(cat_left, dtype=bool), axis=-1, bitorder="little")


def in_bitset(bits: np.ndarray, index: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``codes[i]`` is in bitset ``bits[index[i]]`` (vectorised; ``index`` scalar or per row)."""
    codes = codes.astype(np.intp)
    return ((bits[index, codes >> 3] >> (codes & 7).astype(np.uint8)) & 1).astype(bool)
