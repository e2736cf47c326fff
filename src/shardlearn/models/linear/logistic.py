"""Logistic regression, binary or multinomial (softmax): :class:`LogisticRegression`.

Besides its penalties and solvers (the fitting itself is :class:`._base._LinearModel`'s):
the classes, agreed over every rank's labels (whole numbers, at most :data:`MAX_CLASSES`),
class weights from global counts, probabilities, labels and the classification metrics.
"""
from __future__ import annotations

import numpy as np

from ...errors import ShardlearnError
from ..base import BaseEstimator, ClassifierMixin
from ._base import _LinearModel

MAX_CLASSES = 1000


def _expit(z):
    from scipy.special import expit

    return expit(z)


class LogisticRegression(_LinearModel, ClassifierMixin, BaseEstimator):
    """Logistic regression, binary or multinomial (softmax), scikit-learn's scaling.

    Minimises ``C sum_i s_i logloss_i + 1/2 ||w||^2`` (``penalty="l2"``),
    ``C sum s logloss + ||w||_1`` (``"l1"``, proximal solvers only) or
    ``sum s logloss`` (``None``). Two classes give the binary model (``coef_`` of
    shape (1, d)); more give the multinomial one (``coef_`` (K, d), like scikit-learn
    >= 1.5). Classes are the sorted union of every rank's labels: whole numbers, or text
    (``predict`` returns the text labels; ``predict_columns`` their indices).

    Parameters
    ----------
    C : float, default 1.0
        Inverse regularisation strength.
    penalty : {"l2", "l1", None}, default "l2"
    solver : {"lbfgs", "gd", "fista", "sgd"}, default "lbfgs"
    class_weight : "balanced", dict or None
        ``balanced`` weighs class k by ``n / (K * n_k)`` with GLOBAL counts of the
        training rows; a dict maps labels to weights.
    classes : array-like, optional
        The expected labels; a label outside them is an error (default: whatever
        labels occur, at least two).
    max_iter : int, default 100 (lbfgs) / 1000 (gd, fista)
    tol : float, default 1e-4
        L-BFGS stops when ``max|grad| <= tol`` of the W-normalised objective (as sklearn).
    Other parameters as :class:`LinearRegression`.

    Attributes
    ----------
    classes_ : ndarray
    coef_ : ndarray (1, d) or (K, d)
    intercept_ : ndarray (1,) or (K,)
    n_iter_ : int
    """

    _kind = "logistic"
    _model_name = "logistic"
    _default_solver = "lbfgs"
    _solvers = ("lbfgs", "gd", "fista", "sgd")
    _target_kinds = "biufUS"  # whole numbers or text labels

    def __init__(self, C=1.0, *, penalty="l2", fit_intercept=True, solver="lbfgs", class_weight=None,
                 classes=None, standardize=False, **kwargs):
        super().__init__(fit_intercept=fit_intercept, solver=solver, standardize=standardize, **kwargs)
        self.C = C
        self.penalty = penalty
        self.class_weight = class_weight
        self.classes = classes

    def _check_params(self):
        solver = super()._check_params()
        if not float(self.C) > 0:
            raise ShardlearnError(f"C must be > 0, got {self.C}")
        if self.penalty not in ("l2", "l1", None, "none"):
            raise ShardlearnError(f"penalty {self.penalty!r}: choose l2, l1 or None")
        if self.penalty == "l1" and solver == "lbfgs":
            raise ShardlearnError("penalty='l1' needs a proximal solver: gd, fista or sgd (not lbfgs)")
        cw = self.class_weight
        if cw is not None and cw != "balanced" and not isinstance(cw, dict):
            raise ShardlearnError(f"class_weight must be 'balanced', a dict or None, got {cw!r}")
        return solver

    def _strengths(self, W):
        if self.penalty == "l2":
            return 1.0 / float(self.C), 0.0
        if self.penalty == "l1":
            return 0.0, 1.0 / (float(self.C) * W)
        return 0.0, 0.0

    def _label_summary(self, y):
        """Local distinct labels (capped) and whether they are all whole numbers."""
        if y.size == 0:
            return {"labels": [], "too_many": False, "non_integer": None, "text": None}
        text = y.dtype.kind in "US"
        u = np.unique(y.astype(str) if text else y)
        bad = None
        if y.dtype.kind == "f":
            frac = u[u != np.round(u)]
            bad = float(frac[0]) if frac.size else None
        return {"labels": u[:MAX_CLASSES + 1].tolist(), "too_many": u.size > MAX_CLASSES, "non_integer": bad,
                "text": text}

    def _setup_targets(self, summaries):
        if any(s["too_many"] for s in summaries):
            raise ShardlearnError(f"y has more than {MAX_CLASSES} distinct values: it looks like a "
                                  "regression target (use linear/ridge/lasso)")
        bad = [s["non_integer"] for s in summaries if s["non_integer"] is not None]
        if bad:
            raise ShardlearnError(f"class labels must be whole numbers; found {bad[0]!r} "
                                  "(is y a regression target? continuous values: use linear/ridge/lasso)")
        kinds = {s.get("text") for s in summaries if s["labels"]}
        if len(kinds) > 1:
            raise ShardlearnError("y holds text labels on some ranks and numbers on others: give every rank "
                                  "labels of one kind")
        dtype = str if kinds == {True} else np.float64
        seen = np.unique(np.concatenate([np.asarray(s["labels"], dtype=dtype) for s in summaries]))
        if self.classes is not None:
            allowed = np.unique(np.asarray(self.classes).astype(dtype))
            if dtype is not str and not np.all(allowed == np.round(allowed)):
                raise ShardlearnError(f"classes must be whole numbers, got {list(self.classes)}")
            extra = np.setdiff1d(seen, allowed)
            if extra.size:
                raise ShardlearnError(f"label {_fmt(extra[0])} is not one of classes "
                                      f"[{', '.join(_fmt(c) for c in allowed)}]")
            seen = allowed
        if seen.size < 2:
            raise ShardlearnError(f"y holds a single class ({_fmt(seen[0]) if seen.size else 'none'}) "
                                  "over all ranks: a classifier needs at least two, not one class")
        self.classes_ = seen if dtype is str else seen.astype(np.int64)  # text, or whole numbers (checked)
        if isinstance(self.class_weight, dict):
            keys = np.array([dtype(k) for k in self.class_weight], dtype=dtype)
            unknown = np.setdiff1d(keys, seen)
            if unknown.size:
                raise ShardlearnError(f"class_weight names label {_fmt(unknown[0])}, which is not a class "
                                      f"(classes: {', '.join(_fmt(c) for c in seen)})")
            if any(not (float(v) >= 0 and np.isfinite(float(v))) for v in self.class_weight.values()):
                raise ShardlearnError("class_weight values must be finite and non-negative")

    def _encode(self, y):
        y = self._as_labels(y)
        K = self.classes_.size
        if K == 2:   # every label is one of the two classes: the target is "is it the second"
            return (y == self.classes_[1]).astype(np.float64), 1, 2
        return np.searchsorted(self.classes_, y).astype(np.int64, copy=False), K, K

    def _class_weights(self, counts):
        K = self.classes_.size
        if self.class_weight == "balanced":
            if np.any(counts == 0):
                k = int(np.flatnonzero(counts == 0)[0])
                raise ShardlearnError(f"class_weight='balanced': class {_fmt(self.classes_[k])} has no training rows")
            return counts.sum() / (K * counts)
        if isinstance(self.class_weight, dict):
            cw = np.ones(K)
            for k, v in self.class_weight.items():
                cw[np.searchsorted(self.classes_, self._as_labels([k])[0])] = float(v)
            return cw
        return np.ones(K)

    def _loss_kind(self, K):
        return "logistic"

    def _set_coef(self, coef, intercept):
        self.coef_ = coef
        self.intercept_ = intercept if self.fit_intercept else np.zeros(coef.shape[0])

    def _fingerprint(self) -> dict:
        return {"classes": self.classes_.tolist()}

    def _proba(self, Z):
        """Class probabilities (n, K) from decision values."""
        if Z.ndim == 1:
            p = _expit(Z)
            return np.column_stack([1.0 - p, p])
        Z = Z - Z.max(axis=1, keepdims=True) if Z.shape[0] else Z
        E = np.exp(Z)
        return E / E.sum(axis=1, keepdims=True)

    def _labels(self, Z):
        idx = (Z > 0).astype(np.int64) if Z.ndim == 1 else Z.argmax(axis=1)
        return self.classes_[idx]

    def decision_function(self, X):
        """Local decision values: (n,) for binary, (n, K) for multinomial."""
        return self._decision(self._check_X(X))

    def predict_proba(self, X):
        """Local class probabilities (n, K), columns in ``classes_`` order."""
        return self._proba(self.decision_function(X))

    def predict(self, X):
        """Local predicted labels (values from ``classes_``)."""
        return self._labels(self.decision_function(X))

    def score(self, X, y, sample_weight=None):
        """Global accuracy over every rank's rows (collective).

        Bad input on any rank (another feature count, NaN or infinite values, a ``y`` of
        another length) raises the same ShardlearnError on every rank.
        """
        from ... import metrics

        ctx = self._context()
        with ctx.collective_errors():
            pred = self._labels(self._decision(self._check_X(X, ctx.rank)))
            y = self._check_y(y, pred.shape[0], ctx.rank, regression=False)
            sw = self._check_weights(sample_weight, pred.shape[0], ctx.rank)
        with ctx.guard(f"{type(self).__name__}.score"):
            return float(metrics.accuracy(ctx, y, pred, sample_weight=sw))

    def _class_index(self, y):
        """Class indices of labels ``y`` (local); ShardlearnError for an unknown label."""
        y = self._as_labels(y)
        idx = np.searchsorted(self.classes_, y)
        idx = np.minimum(idx, self.classes_.size - 1)
        bad = self.classes_[idx] != y
        if np.any(bad):
            raise ShardlearnError(f"label {_fmt(y[bad][0])} is not one of the model's classes "
                                  f"[{', '.join(_fmt(c) for c in self.classes_)}]")
        return idx

    def _as_labels(self, y):
        """Labels ``y`` comparable with ``classes_``: text, or float64 numbers."""
        y = np.asarray(y)
        return y.astype(str) if self.classes_.dtype.kind == "U" else y.astype(np.float64, copy=False)

    def class_index(self, y, ctx):
        """Class indices of labels ``y``; ShardlearnError on every rank for an unknown label."""
        with ctx.collective_errors():
            idx = self._class_index(y)
        return idx

    def predict_columns(self, X) -> dict:
        """``label`` and class probabilities ``proba`` per local row."""
        proba = self.predict_proba(X)
        idx = proba.argmax(axis=1) if proba.shape[0] else np.zeros(0, dtype=np.int64)
        return {"label": idx if self.classes_.dtype.kind == "U" else self.classes_[idx], "proba": proba}

    def evaluate(self, X, y) -> dict:
        """Accuracy, log-loss and (binary) ROC AUC over every rank's rows (collective; bad
        input or an unknown label on any rank raises the same ShardlearnError on every rank)."""
        from ... import metrics

        ctx = self._context()
        with ctx.collective_errors():
            proba = self._proba(self._decision(self._check_X(X, ctx.rank)))
            yi = self._class_index(self._check_y(y, proba.shape[0], ctx.rank, regression=False))
        pred = proba.argmax(axis=1) if proba.shape[0] else np.zeros(0, dtype=np.int64)
        with ctx.guard(f"{type(self).__name__}.evaluate"):
            out = {"accuracy": float(metrics.accuracy(ctx, yi, pred))}
            if proba.shape[1] == 2:
                out["log_loss"] = float(metrics.log_loss(ctx, yi, proba[:, 1]))
                out["roc_auc"] = float(metrics.roc_auc(ctx, yi, proba[:, 1]))
            else:
                out["log_loss"] = float(metrics.log_loss(ctx, yi, proba))
        return out

    def to_arrays(self) -> dict:
        classes = self.classes_.astype("S") if self.classes_.dtype.kind == "U" else self.classes_  # HDF5: bytes
        return {"coef": self.coef_, "intercept": np.atleast_1d(self.intercept_), "classes": classes}

    def from_arrays(self, arrays: dict, info: dict):
        self.coef_ = np.asarray(arrays["coef"], dtype=np.float64)
        self.intercept_ = np.asarray(arrays["intercept"], dtype=np.float64)
        classes = np.asarray(arrays["classes"])
        self.classes_ = classes.astype(str) if classes.dtype.kind in "SO" else classes.astype(np.int64)
        self.n_features_in_ = self.coef_.shape[1]
        self.n_iter_ = info.get("n_iter")
        return self


def _fmt(v) -> str:
    if isinstance(v, str):
        return repr(str(v))
    v = float(v)
    return str(int(v)) if v == int(v) else repr(v)
