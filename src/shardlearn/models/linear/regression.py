"""The least-squares estimators: :class:`LinearRegression`, :class:`Ridge` (L2) and
:class:`Lasso` (L1), with scikit-learn's scaling of the penalties.

Each one names its solvers and penalty strengths; fitting, prediction and model files are
:class:`._base._LinearModel`'s.
"""
from __future__ import annotations

from ...errors import ShardlearnError
from ..base import BaseEstimator, RegressorMixin
from ._base import _LinearModel


class _Penalised(_LinearModel):
    """What Ridge and Lasso share: the penalty strength ``alpha`` (>= 0), checked once here."""

    def _check_params(self):
        solver = super()._check_params()
        if not float(self.alpha) >= 0:
            raise ShardlearnError(f"alpha must be >= 0, got {self.alpha}")
        return solver


class LinearRegression(_LinearModel, RegressorMixin, BaseEstimator):
    """Ordinary least squares on row-sharded data: minimises ``sum s (y - Xw - b)^2``.

    Parameters
    ----------
    fit_intercept : bool, default True
    solver : {"normal", "lbfgs", "gd", "fista", "sgd"}, default "normal"
        ``normal`` allreduces ``X^T X`` and ``X^T y`` once and solves by Cholesky (exact,
        one pass); it raises ShardlearnError when the system is singular.
    standardize : bool, default False
        Scale features by their global standard deviation while solving (undone in
        ``coef_``).
    max_iter, tol, batch_size, learning_rate, schedule, power_t, momentum, nesterov,
    epochs, validation_fraction, n_iter_no_change, lbfgs_memory
        Iterative solver settings; see :mod:`shardlearn.models.linear._solvers`.
        ``validation_fraction`` holds out rows with ``row_uniform(random_state,
        stream_id("validation"), row) < fraction`` for early stopping.
    fixed_step : bool, default False
        ``gd``: take ``learning_rate`` as a fixed step instead of backtracking.
    random_state : int
        Seed for the validation split and the SGD batches.
    aggregation : {"allreduce", "ps"}, default "allreduce"
        ``sgd`` only: combine the mini-batch gradients by one allreduce per step, or
        through a parameter server (:mod:`shardlearn.models.linear._ps`) with ``servers``
        server ranks, ``staleness`` 0 (bulk-synchronous), s (stale-synchronous) or
        ``"inf"`` (asynchronous), and ``ps_average`` ``"weighted"`` or ``"mean"``.
    straggler : str, optional
        ``"RANK:FACTOR"``: that rank's gradient computation is FACTOR times slower (tests,
        benchmarks).
    exact_reduce : bool, default False
        Exact, order-independent sums (int64 fixed point, :mod:`._exact`): the fitted model
        is bit-identical for any number of ranks and topology. Solvers ``lbfgs``, ``gd`` and
        ``fista`` only (the others raise ShardlearnError); CPU only.
    verbose : bool, optional
        Per-iteration lines on rank 0 (default: the context's setting).
    comm : mpi4py communicator or shardlearn Context, optional
        Default ``COMM_WORLD``.

    Attributes
    ----------
    coef_ : ndarray (d,)
    intercept_ : float
    n_iter_ : int
    loss_ : float
        Final objective divided by the total training weight.
    history_ : list of dict
        Per-iteration loss, gradient norm, step and seconds.
    """

    _model_name = "linear"

    def __init__(self, *, fit_intercept=True, solver="normal", standardize=False, **kwargs):
        super().__init__(fit_intercept=fit_intercept, solver=solver, standardize=standardize, **kwargs)


class Ridge(_Penalised, RegressorMixin, BaseEstimator):
    """L2-penalised least squares, scikit-learn's scaling:
    ``sum s (y - Xw - b)^2 + alpha ||w||^2``.

    Parameters
    ----------
    alpha : float, default 1.0
    solver : {"normal", "lbfgs", "gd", "fista", "sgd"}, default "normal"
    Other parameters as :class:`LinearRegression`.
    """

    _model_name = "ridge"

    def __init__(self, alpha=1.0, *, fit_intercept=True, solver="normal", standardize=False, **kwargs):
        super().__init__(fit_intercept=fit_intercept, solver=solver, standardize=standardize, **kwargs)
        self.alpha = alpha

    def _ridge_alpha(self):
        return float(self.alpha)

    def _strengths(self, W):
        # (sum s r^2 + alpha ||v||^2) / (2W)  ->  lam = alpha
        return float(self.alpha), 0.0


class Lasso(_Penalised, RegressorMixin, BaseEstimator):
    """L1-penalised least squares, scikit-learn's scaling:
    ``1/(2W) sum s (y - Xw - b)^2 + alpha ||w||_1`` (``W = sum s``, n without weights).

    Solved by proximal gradient: ``fista`` (default, accelerated with adaptive
    restart), ``gd`` (ISTA) or ``sgd`` (proximal SGD).

    Parameters
    ----------
    alpha : float, default 1.0
    solver : {"fista", "gd", "sgd"}, default "fista"
    max_iter : int, default 1000
    tol : float, default 1e-4
        On the max-norm of the gradient mapping.
    Other parameters as :class:`LinearRegression`.
    """

    _model_name = "lasso"
    _default_solver = "fista"
    _solvers = ("fista", "gd", "sgd")

    def __init__(self, alpha=1.0, *, fit_intercept=True, solver="fista", standardize=False, **kwargs):
        super().__init__(fit_intercept=fit_intercept, solver=solver, standardize=standardize, **kwargs)
        self.alpha = alpha

    def _strengths(self, W):
        return 0.0, float(self.alpha)
