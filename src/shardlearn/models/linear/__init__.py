"""Linear and logistic regression on row-sharded data (scikit-learn names and scaling).

Every rank calls ``fit(X_local, y_local)`` with its own rows. Each loss+gradient
evaluation walks the rank's rows once, in cache-sized blocks (``z = X_b @ a``, loss and
residual, ``X_b.T @ r`` while the block is still in cache; float32 blocks are widened to
float64 there), and combines the partial sums with ONE packed float64 allreduce
(``[loss, val_loss, X^T r, sum r]``); every rank then takes the same optimizer step.

Objectives (``s_i``: sample weight times class weight; ``W = sum s_i`` over training rows)

=================  =============================================================
LinearRegression   ``sum s (y - Xw - b)^2``
Ridge(alpha)       ``sum s (y - Xw - b)^2 + alpha ||w||^2``          (sklearn Ridge)
Lasso(alpha)       ``1/(2W) sum s (y - Xw - b)^2 + alpha ||w||_1``   (sklearn Lasso)
LogisticRegression ``C sum s logloss + 1/2 ||w||^2`` (l2), ``C sum s logloss + ||w||_1`` (l1)
LinearSVC          ``C sum s sqhinge + 1/2 ||(w, c)||^2`` (or hinge, or L1; one-vs-rest)
=================  =============================================================

The solvers minimise these divided by ``W`` (same optimum, O(1) gradients). The
intercept is never penalised. Internally the features are centred (and, with
``standardize=True``, scaled) *virtually*: ``(X - mu)/sigma @ v = X @ (v/sigma) - mu.(v/sigma)``,
so no copy of X is made; the stored ``coef_`` and ``intercept_`` are on the original
scale. With ``standardize=True`` the penalty applies to the standardised coefficients
(glmnet's convention); without it the optimum is scikit-learn's.

Solvers: ``normal`` (least squares: allreduce ``X^T S X`` and ``X^T S y`` once, Cholesky),
``lbfgs``, ``gd`` (backtracking or fixed step; proximal for L1), ``fista`` (accelerated
proximal gradient), ``sgd`` (synchronous mini-batch; batches keyed by global row index).
See :mod:`._solvers`.

Checkpoints (``fit(..., checkpoint=Checkpoint(...))``, the CLI's ``--checkpoint``): a step
is a solver iteration (``lbfgs``, ``gd``, ``fista``) or an SGD epoch; ``normal`` finishes
in one step. The saved state is global (the solver's whole state and the history), so a
stopped fit resumes bit for bit on the same ranks and on any other number of ranks up to
the order of the sums (not at all with ``exact_reduce=True``). ``score`` and ``evaluate`` agree over the ranks on bad input (another
feature count, NaN or infinite values) and raise the same error everywhere.

``exact_reduce=True`` (``lbfgs``, ``gd``, ``fista``; not LinearSVC; CPU only): every sum that
reaches the solver is int64 fixed point and every row's decision value is computed in a
fixed order, so the model is bit-identical for any number of ranks and topology (:mod:`._exact`).

Modules, one job each; imports point down this list only:

- :mod:`.regression` — :class:`LinearRegression`, :class:`Ridge`, :class:`Lasso`: their
  penalties and the solvers they accept;
- :mod:`.logistic` — :class:`LogisticRegression`: classes agreed over ranks, class
  weights, probabilities and classification metrics;
- :mod:`.svm` — :class:`LinearSVC`: the logistic model's class handling with the
  (squared) hinge losses of :mod:`._hinge_objective` (liblinear's penalised intercept);
- :mod:`._base` — what the estimators share: parameter checks, ``fit`` (input checks,
  validation split, global statistics, one solver), local prediction, model files;
- :mod:`._objective` — the distributed loss+gradient oracle: one blocked pass over the
  rank's rows and one packed allreduce per evaluation (also the SGD mini-batch and
  validation losses);
- :mod:`._exact` — ``exact_reduce=True``: the setup sums and the oracle in int64 fixed point
  (row dot products and ``X^T r`` in ``_linear_kernels.c``);
- :mod:`._hinge_objective` — the SVM's oracle: :mod:`._objective`'s pass with the
  (squared) hinge, one-vs-rest problems stacked in the same allreduce;
- :mod:`._normal` — the normal-equations path of least squares: ``X^T S X`` in one pass,
  one allreduce, Cholesky;
- :mod:`._solvers` — L-BFGS with a strong-Wolfe line search, (proximal) GD and FISTA,
  mini-batch SGD and its step-size schedules, on any such oracle;
- :mod:`._ps` — SGD through a parameter server (``aggregation="ps"``: MPI one-sided
  windows, bulk-synchronous, stale-synchronous or asynchronous), and ``straggler``.
"""
from .logistic import LogisticRegression
from .regression import Lasso, LinearRegression, Ridge
from .svm import LinearSVC

__all__ = ["Lasso", "LinearRegression", "LinearSVC", "LogisticRegression", "Ridge"]
