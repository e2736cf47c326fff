"""Scorers by scikit-learn's names, computed over a group's test rows (collective).

Greater is better for every scorer (losses are negated, as in scikit-learn). Each one
costs one collective (two for ``roc_auc``'s exact sort) over the group's ranks.
"""
from __future__ import annotations

import numpy as np

from ... import metrics
from ...errors import ShardlearnError
from ...util.rowsel import CHUNK_ROWS, take_chunks
from ._folds import chunk_rows

CLASSIFICATION = ("accuracy", "roc_auc", "neg_log_loss")
REGRESSION = ("r2", "neg_mean_squared_error", "neg_root_mean_squared_error")
SCORERS = CLASSIFICATION + REGRESSION + ("score",)


def is_classifier(est) -> bool:
    return hasattr(type(est), "predict_proba")      # also LinearSVC's (a property that refuses)


def has_proba(est) -> bool:
    """Whether the classifier gives probabilities (LinearSVC gives decision values only)."""
    try:
        getattr(est, "predict_proba")
    except AttributeError:
        return False
    return True


def is_clusterer(est) -> bool:
    return hasattr(type(est), "cluster_centers_") or type(est).__name__ == "KMeans"


def default_scoring(est) -> str:
    """accuracy for classifiers, r2 for regressors, the estimator's own score otherwise."""
    if is_clusterer(est):
        return "score"
    return "accuracy" if is_classifier(est) else "r2"


def check_scoring(est, scoring) -> str:
    """The scorer name to use (raises ShardlearnError for a name that does not fit)."""
    scoring = scoring or default_scoring(est)
    if scoring not in SCORERS:
        raise ShardlearnError(f"scoring {scoring!r} is not known: choose one of {', '.join(SCORERS)}")
    if is_clusterer(est) and scoring != "score":
        raise ShardlearnError(f"{type(est).__name__} has no labels to score against: use scoring='score' "
                              "(minus the inertia of the test rows)")
    if scoring == "neg_log_loss" and is_classifier(est) and not has_proba(est):
        raise ShardlearnError(f"scoring 'neg_log_loss' needs probabilities; {type(est).__name__} has no "
                              "predict_proba (use accuracy or roc_auc, which reads decision_function)")
    if scoring in CLASSIFICATION and not is_classifier(est):
        raise ShardlearnError(f"scoring {scoring!r} needs a classifier; {type(est).__name__} is a regressor "
                              f"(use one of {', '.join(REGRESSION)})")
    if scoring in REGRESSION and is_classifier(est):
        raise ShardlearnError(f"scoring {scoring!r} is for regressors; {type(est).__name__} is a classifier "
                              f"(use one of {', '.join(CLASSIFICATION)})")
    return scoring


def predicts_locally(est) -> bool:
    """Whether ``est`` predicts each rank's rows without communication (trees, k-means and
    the linear models; not kNN, whose queries visit every rank)."""
    import inspect

    return "rows" in inspect.signature(est.fit).parameters or hasattr(est, "_strengths")


def _by_chunks(fn, X, rows):
    """``fn`` of the rows ``X[rows]``, computed a chunk of rows at a time and stacked."""
    # test rows gathered in the fold assignment's blocks (a small share of the rows held)
    parts = [fn(chunk) for _, _, chunk in take_chunks(X, rows, chunk_rows(X.shape[0]))]
    return np.concatenate(parts) if parts else np.asarray(fn(X.take(rows[:0], axis=0)))


def score(est, scoring: str, ctx, X, y, rows=None) -> float:
    """The fitted ``est``'s score on the local rows ``X``, ``y`` of every rank of ``ctx``.

    ``rows`` (increasing indices): score the rows ``X[rows]``, ``y[rows]`` (a fold's test
    rows); an estimator that predicts locally reads them a chunk at a time (no copy of the
    rows; the predictions, one or a few numbers per row, are kept), others get the copy.
    """
    if rows is not None and not predicts_locally(est):
        X, y, rows = X.take(rows, axis=0), (None if y is None else y[rows]), None
    if rows is not None:
        return _score_chunked(est, scoring, ctx, X, y, rows)
    if scoring in ("accuracy", "r2", "score"):
        return float(est.score(X, y)) if y is not None else float(est.score(X))
    if scoring in ("neg_mean_squared_error", "neg_root_mean_squared_error"):
        rmse = metrics.rmse(ctx, np.asarray(y, dtype=np.float64), est.predict(X))
        return -float(rmse if scoring.endswith("root_mean_squared_error") else rmse * rmse)
    classes = np.asarray(est.classes_, dtype=np.float64)
    idx = np.minimum(np.searchsorted(classes, np.asarray(y, dtype=np.float64)), len(classes) - 1)
    if scoring == "neg_log_loss":
        return -float(metrics.log_loss(ctx, idx, np.asarray(est.predict_proba(X), dtype=np.float64)))
    if len(classes) != 2:
        from ...errors import agreed

        raise agreed(f"scoring 'roc_auc' is for two classes; y has {len(classes)}")
    # as scikit-learn's scorer: the positive class's probability, else the decision values
    if has_proba(est):
        s = np.asarray(est.predict_proba(X), dtype=np.float64)
        s = s[:, 1] if len(s) else np.zeros(0)
    else:
        s = np.asarray(est.decision_function(X), dtype=np.float64).reshape(-1)
    return float(metrics.roc_auc(ctx, (idx == 1).astype(np.float64), s))


def _score_chunked(est, scoring, ctx, X, y, rows) -> float:
    """:func:`score` on ``X[rows]`` read by chunks: the same metric on the same predictions
    as the estimators' own ``score`` (accuracy, R^2, minus the k-means inertia)."""
    with ctx.collective_errors():     # a failing prediction on one rank ends every rank's score
        if scoring == "score" and y is None:          # k-means: minus the inertia of the rows
            d2 = float(sum(est._nearest(chunk)[1].sum() for _, _, chunk in take_chunks(X, rows, CHUNK_ROWS)))
        elif scoring in ("neg_log_loss", "roc_auc") and (scoring == "neg_log_loss" or has_proba(est)):
            out = _by_chunks(lambda c: np.asarray(est.predict_proba(c), dtype=np.float64), X, rows)
        elif scoring == "roc_auc":
            out = _by_chunks(lambda c: np.asarray(est.decision_function(c), dtype=np.float64).reshape(-1), X, rows)
        else:
            out = _by_chunks(est.predict, X, rows)
        yy = None if y is None else np.asarray(y)[rows]
    if scoring == "score" and y is None:
        return -float(ctx.coll.allreduce(np.array([d2]))[0])
    if scoring == "accuracy" or (scoring == "score" and is_classifier(est)):
        return float(metrics.accuracy(ctx, yy, out))
    if scoring in ("r2", "score"):
        return float(metrics.r2(ctx, yy, out))
    if scoring in ("neg_mean_squared_error", "neg_root_mean_squared_error"):
        rmse = metrics.rmse(ctx, np.asarray(yy, dtype=np.float64), out)
        return -float(rmse if scoring.endswith("root_mean_squared_error") else rmse * rmse)
    classes = np.asarray(est.classes_, dtype=np.float64)
    idx = np.minimum(np.searchsorted(classes, np.asarray(yy, dtype=np.float64)), len(classes) - 1)
    if scoring == "neg_log_loss":
        return -float(metrics.log_loss(ctx, idx, out))
    if len(classes) != 2:
        from ...errors import agreed

        raise agreed(f"scoring 'roc_auc' is for two classes; y has {len(classes)}")
    return float(metrics.roc_auc(ctx, (idx == 1).astype(np.float64), out[:, 1] if out.ndim == 2 else out))
