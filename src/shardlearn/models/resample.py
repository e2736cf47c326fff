"""Resampling for imbalanced labels as per-row integer weights: no row moves between ranks.

``under`` keeps each row of a class with probability ``p_c`` (a Bernoulli draw: weight 0
or 1); ``over`` keeps every row once and adds Poisson(``lambda_c``) copies (weight
``1 + Poisson``), the standard way to bootstrap without moving rows (as the forests'
Poisson(1) bootstrap). The rates come from the GLOBAL class counts ``n_c`` and ``RATIO``,
the largest majority : minority ratio wanted afterwards (1: balanced):

- under: ``p_c = min(1, RATIO * n_min / n_c)`` (classes above RATIO times the smallest
  class shrink to it, in expectation);
- over: ``lambda_c = max(0, n_max / (RATIO * n_c) - 1)`` (classes below the largest over
  RATIO grow to it, in expectation).

Each row's draw is keyed by (seed, its global row index) through :mod:`shardlearn.rng`, so
the weights do not depend on the number of ranks. An estimator that takes
``sample_weight`` then trains as on the resampled rows (an integer weight ``w`` counts
like ``w`` copies in every weighted sum); the rows of weight 0 drop out.
"""
from __future__ import annotations

import math

import numpy as np

from .. import rng
from ..errors import ShardlearnError

KINDS = ("under", "over")


def parse_resample(text: str) -> tuple[str, float]:
    """``under``, ``over``, ``under:RATIO`` or ``over:RATIO`` -> (kind, ratio); ShardlearnError otherwise."""
    kind, _, ratio = str(text).partition(":")
    if kind not in KINDS:
        raise ShardlearnError(f"resample {text!r}: expected under, over, under:RATIO or over:RATIO")
    try:
        r = float(ratio) if ratio else 1.0
    except ValueError:
        raise ShardlearnError(f"resample {text!r}: RATIO must be a number >= 1 (majority : minority)") from None
    if not (r >= 1.0 and math.isfinite(r)):
        raise ShardlearnError(f"resample {text!r}: RATIO must be a number >= 1 (majority : minority), got {r:g}")
    return kind, r


def class_rates(kind: str, counts: np.ndarray, ratio: float = 1.0) -> np.ndarray:
    """Per class: the keep probability (under) or the mean number of extra copies (over)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    safe = np.where(present, counts, 1.0)
    if kind == "under":
        return np.where(present, np.minimum(1.0, ratio * counts[present].min() / safe), 1.0)
    return np.where(present, np.maximum(0.0, counts.max() / (ratio * safe) - 1.0), 0.0)


def poisson(lam: float, u: np.ndarray) -> np.ndarray:
    """Poisson(``lam``) counts from uniforms ``u`` by the inverse CDF (vectorised)."""
    if lam <= 0:
        return np.zeros(len(u))
    kmax = int(lam + 12.0 * math.sqrt(lam) + 30)
    k = np.arange(kmax + 1, dtype=np.float64)
    logpmf = k * math.log(lam) - lam - np.array([math.lgamma(v + 1.0) for v in k])
    cdf = np.cumsum(np.exp(logpmf))
    return np.minimum(np.searchsorted(cdf, u, side="right"), kmax).astype(np.float64)


def resample_weights(ctx, y, kind: str, ratio: float = 1.0, seed: int = 0, row_offset=None) -> np.ndarray:
    """Per local row, its integer weight (float64) after resampling (collective).

    ``y``: this rank's labels; ``row_offset``: the global index of its first row (default:
    rows in rank order). One allgather of the distinct labels and one allreduce of the
    class counts; the draw itself is local.
    """
    if kind not in KINDS:
        raise ShardlearnError(f"resample kind must be one of {', '.join(KINDS)}, got {kind!r}")
    y = np.asarray(y)
    local = np.unique(y) if len(y) else np.empty(0, dtype=y.dtype)
    gathered = ctx.coll.allgather_obj((local, len(y)))
    classes = np.unique(np.concatenate([np.asarray(c) for c, _ in gathered]))
    with ctx.collective_errors():
        if len(classes) < 2:
            raise ShardlearnError("resampling needs at least two classes in y")
    idx = np.searchsorted(classes, y).astype(np.int64)
    counts = ctx.coll.allreduce(np.bincount(idx, minlength=len(classes)).astype(np.float64))
    rates = class_rates(kind, counts, ratio)
    start = sum(n for _, n in gathered[:ctx.rank]) if row_offset is None else int(row_offset)
    u = rng.row_uniform(seed, rng.stream_id("resample", kind), np.arange(start, start + len(y), dtype=np.int64))
    if kind == "under":
        return (u < rates[idx]).astype(np.float64)
    w = np.ones(len(y))
    for c in np.flatnonzero(rates > 0):
        rows = np.flatnonzero(idx == c)
        w[rows] += poisson(float(rates[c]), u[rows])
    return w
