"""Scorers by scikit-learn's names, computed over a group's test rows (collective).

Greater is better for every scorer (losses are negated, as in scikit-learn). Each one
costs one collective (two for ``roc_auc``'s exact sort) over the group's ranks.
"""
from __future__ import annotations

import numpy as np

from ... import metrics
from ...errors import ShardlearnError

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


def score(est, scoring: str, ctx, X, y) -> float:
    """The fitted ``est``'s score on the local rows ``X``, ``y`` of every rank of ``ctx``."""
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
