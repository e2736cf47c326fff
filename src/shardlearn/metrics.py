"""Distributed metrics: each rank passes its local rows, every rank gets the global value.

Each metric packs what it needs (sums and counts) into one float64 buffer and does one
allreduce, so it costs one collective whatever the data size. Ranks with zero rows take
part like the others.
"""
from __future__ import annotations

import numpy as np

from .backend import to_host
from .errors import agreed

#: above this many rows (all ranks), ROC AUC uses a 2**20-bin score histogram instead of
#: an exact global sort (the error is bounded by the pairs that share a bin)
AUC_EXACT_MAX_ROWS = 4_000_000
AUC_BINS = 1 << 20


def _sums(ctx, *values) -> np.ndarray:
    return ctx.coll.allreduce(np.array(values, dtype=np.float64))


def _weights(y, sample_weight):
    return np.ones(len(y)) if sample_weight is None else to_host(sample_weight).astype(np.float64)


def mean(ctx, x) -> float:
    """Global mean of ``x`` (NaN if no rank has rows)."""
    x = to_host(x)
    s, n = _sums(ctx, float(np.sum(x, dtype=np.float64)), float(x.size))
    return s / n if n else float("nan")


def accuracy(ctx, y, pred, sample_weight=None) -> float:
    """Fraction of rows where ``pred == y``."""
    y, pred = to_host(y), to_host(pred)
    w = _weights(y, sample_weight)
    hit, tot = _sums(ctx, float(np.sum(w * (y == pred))), float(np.sum(w)))
    return hit / tot if tot else float("nan")


def log_loss(ctx, y, proba, sample_weight=None, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood.

    Parameters
    ----------
    y : (n,) integer class indices 0..K-1 (for binary: 0/1)
    proba : (n,) P(class 1) for binary, or (n, K) class probabilities
    """
    y = to_host(y).astype(np.int64)
    p = to_host(proba).astype(np.float64)
    w = _weights(y, sample_weight)
    if p.ndim == 1:
        py = np.where(y == 1, p, 1.0 - p)
    else:
        py = p[np.arange(len(y)), y] if len(y) else np.empty(0)
    nll = -np.log(np.clip(py, eps, 1.0))
    s, tot = _sums(ctx, float(np.sum(w * nll)), float(np.sum(w)))
    return s / tot if tot else float("nan")


def rmse(ctx, y, pred, sample_weight=None) -> float:
    """Root mean squared error."""
    y, pred = to_host(y).astype(np.float64), to_host(pred).astype(np.float64)
    w = _weights(y, sample_weight)
    s, tot = _sums(ctx, float(np.sum(w * (y - pred) ** 2)), float(np.sum(w)))
    return float(np.sqrt(s / tot)) if tot else float("nan")


def r2(ctx, y, pred, sample_weight=None) -> float:
    """Coefficient of determination, 1 - SS_res / SS_tot (global mean of ``y``)."""
    y, pred = to_host(y).astype(np.float64), to_host(pred).astype(np.float64)
    w = _weights(y, sample_weight)
    sw, swy, swy2, ssr = _sums(ctx, float(w.sum()), float(np.sum(w * y)),
                               float(np.sum(w * y * y)), float(np.sum(w * (y - pred) ** 2)))
    if not sw:
        return float("nan")
    sst = swy2 - swy * swy / sw
    if sst <= 0:
        return 1.0 if ssr == 0 else 0.0
    return 1.0 - ssr / sst


def _auc_from_counts(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUC from positive/negative counts per ascending score level (ties count one half)."""
    n_pos, n_neg = pos.sum(), neg.sum()
    below = np.cumsum(neg) - neg  # negatives strictly below each level
    return float((np.sum(pos * below) + 0.5 * np.sum(pos * neg)) / (n_pos * n_neg))


def roc_auc(ctx, y, score) -> float:
    """Area under the ROC curve for binary ``y`` (0/1) and real-valued ``score``.

    Exact (a global sort with ties counted one half) up to ``AUC_EXACT_MAX_ROWS`` rows
    in all; above that, from a histogram of scores with ``AUC_BINS`` bins.
    """
    y = to_host(y).astype(np.float64)
    s = to_host(score).astype(np.float64)
    lo = float(s.min()) if s.size else np.inf
    hi = float(s.max()) if s.size else -np.inf
    n, n_pos = _sums(ctx, float(len(y)), float(y.sum()))
    if n_pos == 0 or n_pos == n:
        raise agreed("ROC AUC needs both classes in y; only one is present")  # n, n_pos: global
    if n <= AUC_EXACT_MAX_ROWS:
        all_s = ctx.coll.allgather(s)
        all_y = ctx.coll.allgather(y)
        levels, inv = np.unique(all_s, return_inverse=True)
        pos = np.bincount(inv, weights=all_y, minlength=len(levels))
        neg = np.bincount(inv, minlength=len(levels)) - pos
        return _auc_from_counts(pos, neg)
    lo, neg_hi = ctx.coll.allreduce(np.array([lo, -hi]), op="min")
    hi = -neg_hi
    scale = (AUC_BINS - 1) / (hi - lo) if hi > lo else 0.0
    b = np.minimum(((s - lo) * scale).astype(np.int64), AUC_BINS - 1)
    hist = np.concatenate([np.bincount(b, weights=y, minlength=AUC_BINS),
                           np.bincount(b, weights=1.0 - y, minlength=AUC_BINS)])
    hist = ctx.coll.allreduce(hist)
    return _auc_from_counts(hist[:AUC_BINS], hist[AUC_BINS:])
