"""Linear support vector classification on row-sharded data: :class:`LinearSVC`.

scikit-learn's ``LinearSVC`` objective (liblinear's primal), binary or one-vs-rest:
``C sum_i s_i loss(y_i z_i) + 1/2 ||w||^2`` (``penalty="l2"``) or ``+ ||w||_1``
(``"l1"``), with ``loss`` the squared hinge (default, smooth: L-BFGS) or the hinge (SGD
with subgradients), the intercept a penalised coefficient of a constant feature
``intercept_scaling``. The loss pass is :class:`._hinge_objective._HingeObjective` (one
allreduce per evaluation, the K one-vs-rest problems stacked in it); classes, class
weights, validation and everything else come from :class:`.logistic.LogisticRegression`
(class handling) and :class:`._base._LinearModel` (fitting).
"""
from __future__ import annotations

import numpy as np

from ...errors import ShardlearnError
from ._hinge_objective import LOSSES, _HingeObjective
from .logistic import LogisticRegression


class LinearSVC(LogisticRegression):
    """Linear SVM classifier, scikit-learn's ``LinearSVC`` objective.

    Minimises ``C sum_i s_i max(0, 1 - y_i z_i)^2 + 1/2 ||w||^2`` (default;
    ``loss="hinge"`` drops the square; ``penalty="l1"`` uses ``||w||_1``), where
    ``z = x.w + intercept_scaling * c`` and ``w`` includes ``c`` (the intercept is
    penalised, as liblinear does), ``s_i`` the sample weight times the class weight.
    Two classes give one problem (``coef_`` (1, d)); K > 2 give K one-vs-rest problems
    solved together (``coef_`` (K, d)).

    Parameters
    ----------
    C : float, default 1.0
    loss : {"squared_hinge", "hinge"}, default "squared_hinge"
        ``hinge`` is not differentiable: it needs ``solver="sgd"`` (subgradient steps).
    penalty : {"l2", "l1"}, default "l2"
        ``l1`` needs a proximal solver: ``fista``, ``gd`` or ``sgd``.
    solver : {"lbfgs", "gd", "fista", "sgd"}, default "lbfgs"
    intercept_scaling : float, default 1.0
        Value of the constant feature whose coefficient is the intercept (a larger value
        weakens the intercept's penalty), as scikit-learn.
    class_weight : "balanced", dict or None
        Per-class factor on C; ``balanced`` is ``n / (K n_k)`` from global counts. As
        liblinear: a binary problem weighs each row by its class's weight; one-vs-rest
        problem k weighs class k's rows by its weight and the other rows by 1.
    max_iter : int, default 1000
    Other parameters as :class:`LogisticRegression` (``standardize``, SGD settings,
    ``aggregation="ps"`` ...).

    Attributes
    ----------
    classes_, coef_, intercept_, n_iter_, loss_, history_
    """

    _kind = "svm"
    _model_name = "svm"

    _exact_supported = False  # exact_reduce=True: the hinge objective has no exact form (refused)

    def __init__(self, C=1.0, *, loss="squared_hinge", penalty="l2", fit_intercept=True, intercept_scaling=1.0,
                 solver="lbfgs", class_weight=None, classes=None, standardize=False, max_iter=1000, **kwargs):
        super().__init__(C=C, penalty=penalty, fit_intercept=fit_intercept, solver=solver,
                         class_weight=class_weight, classes=classes, standardize=standardize,
                         max_iter=max_iter, **kwargs)
        self.loss = loss
        self.intercept_scaling = intercept_scaling

    def _check_params(self):
        solver = super()._check_params()
        if self.loss not in LOSSES:
            raise ShardlearnError(f"loss {self.loss!r}: choose squared_hinge or hinge")
        if self.penalty not in ("l2", "l1"):
            raise ShardlearnError(f"penalty {self.penalty!r}: LinearSVC takes l2 or l1")
        if self.loss == "hinge" and solver != "sgd":
            raise ShardlearnError(f"loss='hinge' is not differentiable: use solver='sgd' (subgradient steps), "
                                  f"not {solver!r}, or loss='squared_hinge'")
        if not float(self.intercept_scaling) > 0:
            raise ShardlearnError(f"intercept_scaling must be > 0, got {self.intercept_scaling}")
        return solver

    def _loss_kind(self, K):
        return self.loss

    def _class_weights(self, counts):
        # one-vs-rest weighs by class inside each problem (the objective's positive_weights),
        # not per row: the rows then keep their sample weights only
        cw = super()._class_weights(counts)
        self._positive_weights = cw if self.classes_.size > 2 else None
        return cw if self.classes_.size == 2 else np.ones_like(cw)

    def _make_objective(self, ctx, X, t, s_train, s_val, **kw):
        return _HingeObjective(ctx, X, t, s_train, s_val, intercept_scaling=float(self.intercept_scaling),
                               positive_weights=self._positive_weights, **kw)

    @property
    def predict_proba(self):
        """Not available: an SVM gives no probabilities (use :meth:`decision_function`)."""
        raise AttributeError("LinearSVC has no predict_proba: use decision_function (or LogisticRegression)")

    def predict_columns(self, X) -> dict:
        """``label`` and the ``decision`` values per local row ((n,) binary, (n, K) one-vs-rest)."""
        Z = self.decision_function(X)
        return {"label": self._labels(Z), "decision": Z}

    def evaluate(self, X, y) -> dict:
        """Accuracy, mean hinge loss and (binary) ROC AUC of the decision values over every
        rank's rows (collective; bad input or an unknown label on any rank raises the same
        ShardlearnError on every rank)."""
        from ... import metrics

        ctx = self._context()
        with ctx.collective_errors():
            Z = self._decision(self._check_X(X, ctx.rank))
            yi = self._class_index(self._check_y(y, Z.shape[0], ctx.rank, regression=False))
        with ctx.guard(f"{type(self).__name__}.evaluate"):
            pred = (Z > 0).astype(np.int64) if Z.ndim == 1 else Z.argmax(axis=1)
            Y = 2.0 * yi - 1.0 if Z.ndim == 1 else np.where(np.arange(Z.shape[1]) == yi[:, None], 1.0, -1.0)
            margin = np.maximum(0.0, 1.0 - Y * Z)
            hinge = margin if Z.ndim == 1 else margin.sum(axis=1)
            out = {"accuracy": float(metrics.accuracy(ctx, yi, pred)), "hinge_loss": float(metrics.mean(ctx, hinge))}
            if Z.ndim == 1:
                out["roc_auc"] = float(metrics.roc_auc(ctx, yi, Z))
        return out
