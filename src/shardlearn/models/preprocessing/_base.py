"""What every transformer shares: input checks, the shape agreement, model files.

A transformer's ``fit`` is collective: each rank checks its own rows, one small gather
agrees on the outcome and the row counts (:func:`agree_rows`), then ONE packed collective
carries the statistics the transformer needs. ``transform`` and ``inverse_transform``
are local (no communication). Fitted arrays listed in ``_fitted`` go into model files
(:mod:`shardlearn.models.io`), so a transformer can be saved alone or inside a
:class:`shardlearn.models.pipeline.Pipeline`.
"""
from __future__ import annotations

import numpy as np

from ...errors import ShardlearnError, agreed
from ...runtime import context_from
from ..base import BaseEstimator, NotFittedError, Params, TransformerMixin, check_dense, check_fit_input, shape_hint

#: rows per block when a statistic is computed in float64 from float32 data (bounded copies)
BLOCK_ROWS = 65536


def as_float(X, what: str = "X") -> np.ndarray:
    """``X`` as a 2-D float32/float64 array (other numbers become float64); ShardlearnError otherwise
    (sparse or complex input too, :func:`~shardlearn.models.base.check_dense`)."""
    X = np.asarray(check_dense(X, what))
    if X.dtype not in (np.float32, np.float64):
        if X.dtype.kind not in "biuf":
            raise ShardlearnError(f"{what} must be numeric, got dtype {X.dtype}")
        X = X.astype(np.float64)
    if X.ndim != 2:
        raise ShardlearnError(f"{what} must be 2-D (rows x features), got shape {X.shape}"
                              + (shape_hint(X, 0, "") if X.ndim == 1 else ""))
    return X


def agree_rows(ctx, X, error: str | None = None) -> tuple[int, int, int]:
    """Agree on errors and shapes in one small gather: ``(n_total, d, row_offset)``.

    Every rank passes its local ``X`` (or ``None`` with an ``error``). Raises the same
    ShardlearnError on every rank for a local error, for ranks whose feature counts
    differ, or when no rank has a row. A rank with zero rows may pass any width.
    """
    mine = (error, int(X.shape[0]) if X is not None else 0, int(X.shape[1]) if X is not None else 0)
    got = ctx.coll.allgather_obj(mine)
    for rank, (err, _, _) in enumerate(got):
        if err is not None:
            raise agreed(err if err.startswith("rank ") else f"rank {rank}: {err}")
    widths = sorted({d for _, n, d in got if n > 0})
    if len(widths) > 1:
        raise agreed(f"ranks hold different feature counts {widths}: every rank's X needs the same columns")
    n_total = sum(n for _, n, _ in got)
    if n_total == 0:
        raise agreed("no rows to fit on (every rank's X is empty)")
    offset = sum(n for _, n, _ in got[:ctx.rank])
    return n_total, widths[0], offset


def blocks(n: int):
    """Row slices of at most :data:`BLOCK_ROWS` rows covering ``range(n)``."""
    for a in range(0, n, BLOCK_ROWS):
        yield slice(a, min(n, a + BLOCK_ROWS))


def handle_zeros_in_scale(scale: np.ndarray, constant_mask=None) -> np.ndarray:
    """scikit-learn's rule: scales of (near-)constant features become 1."""
    scale = np.array(scale, dtype=np.float64)
    if constant_mask is None:
        constant_mask = scale < 10 * np.finfo(np.float64).eps
    scale[constant_mask] = 1.0
    return scale


class Transformer(Params, TransformerMixin, BaseEstimator):
    """Base of the transformers: ``fit_transform``, checks, model files, ``predict_columns``.

    Subclasses set ``_model_name`` and ``_fitted`` (the fitted attributes a model file
    keeps) and implement ``_fit(ctx, X)`` (collective) and ``transform(X)`` (local).
    """

    _model_name = "transformer"
    _fitted: tuple = ()
    evaluate_needs_y = False
    data_options = {"allow_nan": True}  # NaN passes through (or is imputed)
    _allow_nan = True  # scikit-learn's allow_nan tag

    def fit(self, X, y=None):
        """Fit on this rank's rows (collective: every rank of ``comm`` calls it; ``y`` is ignored)."""
        ctx = context_from(self.comm)
        Xc, error = None, None
        try:
            Xc = as_float(check_fit_input(X)[0])
            if not self._allow_nan and Xc.size and not np.isfinite(Xc.sum()) and not np.isfinite(Xc).all():
                raise ShardlearnError(f"X holds NaN or infinite values in {int((~np.isfinite(Xc).all(axis=1)).sum())} "
                                      f"rows: {type(self).__name__} needs finite features (impute them first)")
            self._check_params()
        except ShardlearnError as exc:
            Xc, error = None, str(exc)
        except (TypeError, ValueError) as exc:  # e.g. an object array holding a dict: every rank hears
            Xc, error = None, f"{type(exc).__name__}: {exc}"
        n_total, d, offset = agree_rows(ctx, Xc, error)
        if Xc.shape[0] == 0:
            Xc = Xc.reshape(0, d)
        with ctx.guard(f"{type(self).__name__}.fit"):
            self.n_features_in_ = d
            self.n_samples_total_ = n_total
            self._fit(ctx, Xc, n_total)
        return self

    def fit_transform(self, X, y=None):
        """``fit(X).transform(X)`` (collective, because ``fit`` is)."""
        return self.fit(X, y).transform(X)

    def _check_params(self) -> None:
        """Raise ShardlearnError for a bad parameter (local; fit agrees on it)."""

    def _fit(self, ctx, X, n_total) -> None:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def _context(self):
        return context_from(self.comm)

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit first")

    def _check_X(self, X, width: int | None = None) -> np.ndarray:
        """A local ``X`` of the fitted width as float (an empty block of any width is reshaped)."""
        self._check_fitted()
        X = as_float(X)
        d = self.n_features_in_ if width is None else width
        if X.shape[1] != d:
            if X.shape[0] == 0:
                return X.reshape(0, d)
            raise ShardlearnError(f"X has {X.shape[1]} features but {type(self).__name__} was fitted on {d}"
                                  + shape_hint(X, d, type(self).__name__))
        return X

    # ------------------------------------------------------------ model files, CLI
    def predict_columns(self, X) -> dict:
        """``shardlearn predict`` with a transformer file writes the transformed rows."""
        return {"X": self.transform(X)}

    def evaluate(self, X, y=None) -> dict:
        """A transformer has no metrics: the same error on every rank (no communication)."""
        raise agreed(f"{type(self).__name__} is a transformer: it has no metrics to evaluate "
                     "(shardlearn predict writes the transformed rows)")

    def to_model(self) -> tuple[dict, dict, dict]:
        """(arrays, params, info) for :func:`shardlearn.models.io.save_estimator`."""
        self._check_fitted()
        arrays = {"n_features_in": np.int64(self.n_features_in_)}
        for name in self._fitted:
            value = getattr(self, name)
            if value is not None:
                arrays[name.rstrip("_")] = np.asarray(value)
        return arrays, self.model_params(), {"n_samples_total": int(getattr(self, "n_samples_total_", 0))}

    @classmethod
    def from_model(cls, arrays, params, info, comm=None):
        """The fitted transformer a model file describes."""
        est = cls(**{k: v for k, v in params.items() if k in cls.param_names() and k != "comm"}, comm=comm)
        est.n_features_in_ = int(arrays["n_features_in"])
        for name in est._fitted:
            key = name.rstrip("_")
            value = arrays.get(key)
            if isinstance(value, np.ndarray) and value.ndim == 0:
                value = value.item()
            setattr(est, name, value)
        est.n_samples_total_ = int(info.get("n_samples_total", 0))
        est._loaded()
        return est

    def _loaded(self) -> None:
        """Fix up attributes after :meth:`from_model` (types a file cannot keep)."""
