"""Per-node histograms of (gradient channels..., hessian, count) per feature and bin.

A histogram has shape ``(C, d, S)``: ``C`` channels (one or more gradient channels, then
the hessian, then the row count), ``d`` features and ``S = max_bin + 1`` slots per
feature (the last slot is the missing-value bin). Sums are float64; counts are exact
integers stored as float64 (exact below 2**53 rows), so one buffer carries all of a
node's statistics through one collective.

Built with one ``np.bincount`` per (feature, channel) over the node's rows of the
feature-major uint8 code matrix. Measured on 500k rows x 28 features (bench/trees.md):
per-feature bincounts beat one big bincount over feature-offset codes by 2x, since the
latter must materialise an int64 code array and tiled weights d times the node size.
Small nodes (deep forest trees) are the other way round: the per-call overhead of d
bincounts dominates, so nodes of at most ``SMALL_NODE_ROWS`` rows use the offset form.
"""
from __future__ import annotations

import numpy as np


#: nodes with at most this many rows use one feature-offset bincount per channel
SMALL_NODE_ROWS = 2048


def build_histogram(codes: np.ndarray, channels: np.ndarray, rows, n_slots: int,
                    features=None, hess_is_count: bool = False, out=None) -> np.ndarray:
    """Histogram of the given rows.

    Parameters
    ----------
    codes : (d, n) uint8
        Feature-major bin codes of the local rows.
    channels : (C - 1, n) float64
        Per-row values to sum: gradient channel(s) then the hessian (the count channel
        is added here).
    rows : int array or None
        Local rows of the node (None: all rows).
    n_slots : int
        Slots per feature (``max_bin + 1``).
    features : int array, optional
        Only these features are built (the others stay zero): feature sampling.
    hess_is_count : bool
        The hessian of every row is 1 (L2 loss, unweighted): copy the count instead of
        summing it.
    out : (C, d, n_slots) float64, optional

    Returns
    -------
    (C, d, n_slots) float64
    """
    n_ch = channels.shape[0] + 1
    d = codes.shape[0]
    if out is None:
        out = np.zeros((n_ch, d, n_slots), dtype=np.float64)
    else:
        out[...] = 0.0
    if rows is None:
        w = channels
        m = codes.shape[1]
    else:
        w = np.take(channels, rows, axis=1)
        m = len(rows)
    if m == 0:
        return out
    feats = range(d) if features is None else features
    n_grad = n_ch - 1 if not hess_is_count else n_ch - 2
    if m <= SMALL_NODE_ROWS:
        # small node: one bincount per channel over feature-offset codes beats d calls
        fidx = np.asarray(feats, dtype=np.intp)
        sub = codes[fidx] if rows is None else codes[fidx][:, rows]
        flat = (sub + (fidx * n_slots)[:, None]).ravel()
        size = d * n_slots
        view = out.reshape(n_ch, size)
        for ch in range(n_grad):
            view[ch] = np.bincount(flat, weights=np.tile(w[ch], len(fidx)), minlength=size)
        view[n_ch - 1] = np.bincount(flat, minlength=size)
        if hess_is_count:
            view[n_ch - 2] = view[n_ch - 1]
        return out
    for f in feats:
        # convert to intp once: bincount would convert uint8 on each of its calls
        c = (codes[f] if rows is None else codes[f].take(rows)).astype(np.intp)
        for ch in range(n_grad):
            out[ch, f] = np.bincount(c, weights=w[ch], minlength=n_slots)
        out[n_ch - 1, f] = np.bincount(c, minlength=n_slots)
        if hess_is_count:
            out[n_ch - 2, f] = out[n_ch - 1, f]
    return out
