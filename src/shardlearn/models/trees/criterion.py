"""Split criteria other than the squared-gradient gain of :mod:`.split`: entropy.

:mod:`.split` scores a candidate by ``sum_c G_c^2 / H`` on each side, which with the
channels of a classification tree (``G_c = -w * [y == c]``, ``H = w``) is exactly the
weighted Gini impurity decrease, and with ``G = -w * y`` the variance decrease: gini and
squared_error need nothing new. Entropy does: with ``n_c = -G_c`` (weighted class counts)
and ``N = H`` a node's weighted impurity is ``N log N - sum_c n_c log n_c`` (natural
log; scikit-learn's bits differ by the constant factor ln 2, which changes no choice),
and the gain of a split is the parent's minus both children's.

The search is the NumPy form of :func:`.split.find_best_splits` with that score: the same
candidates (codes ``<= b`` left, the missing bin on either side when the node has missing
values), the same constraints (``min_child_samples`` rows and ``min_sum_hessian`` weight
per side) and the same tie rule (the first candidate in (feature, bin, direction) order
within ``TIE_RTOL`` of the best), so the tree does not depend on the number of ranks.
"""
from __future__ import annotations

import numpy as np
from scipy.special import xlogy

from .split import TIE_RTOL, SplitParams

CRITERIA = ("gini", "entropy", "squared_error")


def _neg_entropy(stats: np.ndarray, C: int) -> np.ndarray:
    """``sum_c n_c log n_c - N log N`` (minus the weighted entropy) over axis 1.

    stats : (k, C, ...) with channels ``-n_c`` (C - 2 of them), ``N``, count.
    """
    n = np.maximum(-stats[:, :C - 2], 0.0)          # parent - child can leave -1e-17
    N = np.maximum(stats[:, C - 2], 0.0)
    return xlogy(n, n).sum(axis=1) - xlogy(N, N)


def find_best_splits_entropy(hist: np.ndarray, totals: np.ndarray, n_bins: np.ndarray,
                             params: SplitParams, feature_mask=None) -> dict:
    """Best entropy split of each of ``k`` nodes; arguments and result as
    :func:`.split.find_best_splits` (``gain``: the weighted entropy decrease)."""
    k, C, d, S = hist.shape
    V = S - 1
    cum = np.cumsum(hist[..., :V], axis=-1)             # (k, C, d, V): codes <= b
    miss = hist[..., V]                                  # (k, C, d)
    tot = totals[:, :, None, None]
    b = np.arange(V)
    nb = np.asarray(n_bins)
    nb = nb[..., None] if nb.ndim == 2 else nb[None, :, None]
    inner = b < nb - 1
    top = b == nb - 1
    has_miss = miss[:, C - 1] > 0                        # (k, d)

    def gains(left, valid):
        right = tot - left
        hl, hr = left[:, C - 2], right[:, C - 2]
        cl, cr = left[:, C - 1], right[:, C - 1]
        ok = (valid & (cl >= params.min_child_samples) & (cr >= params.min_child_samples)
              & (hl >= params.min_sum_hessian) & (hr >= params.min_sum_hessian) & (hl > 0) & (hr > 0))
        g = _neg_entropy(left, C) + _neg_entropy(right, C)
        return np.where(ok, g, -np.inf)                  # (k, d, V)

    g_right = gains(cum, inner | (top & has_miss[:, :, None]))
    if has_miss.any():
        g_left = gains(cum + miss[..., None], inner & has_miss[:, :, None])
        g, n_dir = np.stack([g_right, g_left], axis=-1), 2
    else:
        g, n_dir = g_right, 1
    if feature_mask is not None:
        fm = np.broadcast_to(np.asarray(feature_mask, dtype=bool), (k, d))
        g = np.where(fm[:, :, None, None] if n_dir == 2 else fm[:, :, None], g, -np.inf)
    flat = g.reshape(k, -1)
    if flat.shape[1]:
        best_val = flat.max(axis=1)
        near = flat >= (best_val - TIE_RTOL * np.abs(best_val))[:, None]
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
    ml = np.where(~has_miss[nodes, f], left[:, C - 1] >= right[:, C - 1], ml)
    gain = np.where(np.isfinite(best_gain), best_gain - _neg_entropy(totals, C), -np.inf)
    return {"gain": gain, "feature": f.astype(np.int64), "bin": bin_.astype(np.int64),
            "missing_left": ml, "left": left}
