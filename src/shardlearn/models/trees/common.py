"""Shared fit plumbing for the tree models: input checks, global row indices, labels."""
from __future__ import annotations


import numpy as np

from ...backend import to_host
from ...errors import ShardlearnError, agreed
from ...runtime import context_from
from ...util.rowsel import row_index, take_chunks
from ..base import NotFittedError, check_dense, check_fit_input, classifier_columns, shape_hint


def prepare(comm, X, y, verbose=False):
    """Context, float64 X, y and global row indices of the local rows (collective).

    Checks shapes on every rank and agrees on the outcome (clear error everywhere).
    Returns ``(ctx, X, y, global_rows, n_total)``.
    """
    return prepare_rows(comm, X, y, verbose)[:5]


def prepare_rows(comm, X, y, verbose=False, rows=None, sample_weight=None):
    """:func:`prepare` for a fit on the local rows ``rows`` only (collective).

    ``rows``: None, or a boolean mask / increasing indices of the local rows
    (:mod:`shardlearn.util.rowsel`). The fit is that on ``X[rows]``, ``y[rows]`` and
    ``sample_weight[rows]``, without copying ``X``: returns ``(ctx, X, y, global_rows,
    n_total, idx, sample_weight)`` where ``X`` is the whole local matrix (read through
    ``idx``, the selected rows' indices, or None for all of them), ``y``,
    ``sample_weight`` and ``global_rows`` are those of the selected rows (numbered in global
    order as a copy would number them) and ``n_total`` counts the selected rows of every rank.
    """
    ctx = context_from(comm, verbose=verbose)
    idx = None
    with ctx.collective_errors():
        X = to_host(check_dense(X))  # CuPy input: binned on the host (the device path starts at the codes)
        X, y = check_fit_input(X, y, supervised=True)
        if X.ndim != 2:
            raise ShardlearnError(f"X must be 2-D (rows x features), got shape {X.shape}")
        if X.dtype.kind not in "fiub":
            raise ShardlearnError(f"X must be numeric, got dtype {X.dtype}")
        if y.ndim != 1 or len(y) != len(X):
            raise ShardlearnError(f"y must be 1-D with one label per row of X: X has {len(X)} rows, y shape {y.shape}")
        X = np.ascontiguousarray(X, dtype=np.float64)
        idx = row_index(rows, len(X))
        for _, _, chunk in take_chunks(X, idx):      # by chunks: no n x d temporary
            if np.isinf(chunk).any():
                raise ShardlearnError("X holds infinite values (NaN is fine: trees treat it as missing)")
        if idx is not None:
            y = y[idx]
            if sample_weight is not None:
                sample_weight = np.asarray(sample_weight)
                if sample_weight.shape != (len(X),):
                    raise ShardlearnError(f"sample_weight has shape {sample_weight.shape}; expected ({len(X)},), "
                                          "one weight per row of X (rows= selects among them)")
                sample_weight = sample_weight[idx]
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ShardlearnError("y holds NaN or infinite values")
    n = len(X) if idx is None else len(idx)
    counts = np.array(ctx.coll.allgather_obj((n, X.shape[1])))
    with ctx.collective_errors():
        if len(set(counts[:, 1].tolist())) != 1:
            raise ShardlearnError(f"ranks disagree on the number of features: {sorted(set(counts[:, 1].tolist()))}")
        if counts[:, 0].sum() == 0:
            raise ShardlearnError("no rows to train on (every rank has 0 rows)")
        if X.shape[1] == 0:
            raise ShardlearnError("X has no features")
    start = int(counts[:ctx.rank, 0].sum())
    return (ctx, X, y, np.arange(start, start + n, dtype=np.int64), int(counts[:, 0].sum()), idx,
            sample_weight)


def check_histogram_pool_size(value) -> float:
    """``histogram_pool_size`` (MiB, negative: no bound) as a float; ShardlearnError otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value):
        raise ShardlearnError(f"histogram_pool_size must be a number of MiB (negative: no bound), got {value!r}")
    return float(value)


def check_sample_weight(sample_weight, n) -> np.ndarray:
    """``sample_weight`` as float64 (n,), finite and non-negative; ShardlearnError otherwise (local)."""
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n,):
        raise ShardlearnError(f"sample_weight has shape {w.shape}; expected ({n},), one weight per row")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ShardlearnError("sample_weight must be finite and non-negative")
    return w


def check_weight_total(ctx, sw, n_local: int) -> None:
    """Collective (one small allreduce; every rank calls it, with or without weights): the
    same ShardlearnError on every rank when the weights of all rows sum to zero."""
    total = ctx.coll.allreduce(np.array([float(n_local) if sw is None else float(sw.sum())]))
    if not total[0] > 0:
        raise agreed("every row has weight 0 (sample_weight): nothing to learn; give some rows a weight "
                     "above zero")


#: a classifier refuses y with more distinct values than max(MANY_CLASSES, rows / MIN_ROWS_PER_CLASS)
#: unless told the number of classes: that is a regression target (scikit-learn's diabetes
#: data, 200+ distinct whole numbers over 309 rows), not class labels
MANY_CLASSES = 20
MIN_ROWS_PER_CLASS = 5


def class_labels(ctx, y, n_classes=None, n_total=None, regressor=None, compact=False):
    """Sorted classes over all ranks, and the local labels as class indices (collective):
    int64, or with ``compact`` the smallest unsigned type that holds them (uint8 up to 256
    classes; mind its wrap-around in arithmetic).

    With ``n_classes`` set, labels must already be integers ``0..n_classes-1``. Without,
    and with ``n_total`` (rows over all ranks), y with more than ``max(MANY_CLASSES,
    n_total / MIN_ROWS_PER_CLASS)`` distinct values is refused as a regression target;
    the message names ``--objective regression`` and the ``regressor`` class.
    """
    with ctx.collective_errors():
        if n_classes is not None:
            if n_classes < 2:
                raise ShardlearnError(f"num_class must be at least 2, got {n_classes}")
            if y.dtype.kind not in "iufb":
                raise ShardlearnError(f"num_class={n_classes} needs integer labels 0..{n_classes - 1}, got dtype {y.dtype}")
            yi = y.astype(np.int64) if len(y) else np.empty(0, np.int64)
            if len(y) and (not np.array_equal(yi, y) or yi.min() < 0 or yi.max() >= n_classes):
                bad = y[(yi != y) | (yi < 0) | (yi >= n_classes)][0]
                raise ShardlearnError(
                    f"class labels must be integers 0..{n_classes - 1} (num_class={n_classes}); found {bad.item()!r}")
    local = np.unique(y) if len(y) else np.empty(0, dtype=y.dtype)
    present = np.unique(np.concatenate([np.asarray(c) for c in ctx.coll.allgather_obj(local)]))
    classes = np.arange(n_classes) if n_classes is not None else present
    with ctx.collective_errors():
        if len(present) < 2:  # also with the class count given: one class cannot be learnt
            raise ShardlearnError(
                f"only one class ({present[0] if len(present) else 'none'}) in y: a classifier needs at least two")
        k = len(classes)
        if n_classes is None and n_total is not None and k > max(MANY_CLASSES, n_total / MIN_ROWS_PER_CLASS):
            raise ShardlearnError(
                f"y has {k} distinct values over {n_total} rows ({n_total / k:.1f} rows per class): that looks "
                f"like a regression target (continuous values), not class labels (a classifier takes at most "
                f"max({MANY_CLASSES}, rows/{MIN_ROWS_PER_CLASS}) classes unless told their number). Train a "
                f"regressor: --objective regression on the command line"
                + (f", {regressor} in Python" if regressor else "")
                + f"; if these really are {k} classes, label them 0..{k - 1} and pass --num-class {k} "
                  f"(n_classes={k})")
    dtype = np.min_scalar_type(max(len(classes) - 1, 0)) if compact else np.int64
    return classes, np.searchsorted(classes, y).astype(dtype)


def resolve_categorical(spec, d: int) -> np.ndarray:
    """``categorical_features`` as sorted unique int64 indices (raises ShardlearnError).

    Accepts None, a list of column indices (negative ones count from the end, as in
    NumPy), a comma-separated string (``"3,7"``, as on the command line), or a boolean
    mask of length ``d``.
    """
    if spec is None:
        return np.empty(0, dtype=np.int64)
    if isinstance(spec, str):
        try:
            spec = [int(v) for v in spec.replace(" ", "").split(",") if v]
        except ValueError:
            raise ShardlearnError(f"categorical_features must be column indices like '3,7', got {spec!r}") from None
    a = np.asarray(spec)
    if a.ndim != 1:
        raise ShardlearnError(f"categorical_features must be a list of column indices or a boolean mask, got {spec!r}")
    if a.dtype == bool:
        if len(a) != d:
            raise ShardlearnError(f"categorical_features as a boolean mask needs {d} entries (one per feature), "
                                  f"got {len(a)}")
        return np.flatnonzero(a).astype(np.int64)
    if len(a) == 0:
        return np.empty(0, dtype=np.int64)
    if a.dtype.kind not in "iu" and not (a.dtype.kind == "f" and np.array_equal(a, np.floor(a))):
        raise ShardlearnError(f"categorical_features must be integer column indices, got {spec!r}")
    a = a.astype(np.int64)
    if (a < -d).any() or (a >= d).any():
        raise ShardlearnError(f"categorical_features {a.tolist()} out of range: X has {d} features (0..{d - 1})")
    a = np.where(a < 0, a + d, a)
    if len(np.unique(a)) != len(a):
        raise ShardlearnError(f"categorical_features lists a column twice: {spec!r}")
    return np.sort(a)


def sample_features(seed: int, stream: tuple, d: int, fraction: float) -> np.ndarray:
    """Sorted feature indices, the same on every rank (not row-dependent: a seeded draw)."""
    if fraction >= 1.0:
        return np.arange(d)
    from ... import rng

    k = max(1, int(round(fraction * d)))
    g = np.random.default_rng(rng.stream_id(seed, *stream) & 0x7FFFFFFFFFFFFFFF)
    return np.sort(g.choice(d, k, replace=False))


#: the boosting phases outside the tree grower (:func:`phase_snapshot`)
BOOST_PHASES = ("gradients", "quantize", "renew", "update")


def phase_snapshot(ctx) -> dict:
    """Seconds so far per tree phase, plus communication and bytes sent."""
    s = ctx.timers.seconds
    return {"histogram": s.get("histogram", 0.0), "split_search": s.get("split_search", 0.0),
            "partition": s.get("partition", 0.0), "communication": ctx.coll.comm_seconds,
            "bytes_sent": ctx.coll.bytes_sent,
            # boosting's per-row phases (0 for the forests): gradients, their quantization
            # (scales and stochastic rounding), leaf renewal, score update
            **{k: s.get(k, 0.0) for k in BOOST_PHASES}}


def diff(a: dict, b: dict) -> dict:
    return {k: b[k] - a[k] for k in a}


class FittedEnsemble:
    """What every fitted tree ensemble shares: checks, feature importances, class labels.

    Subclasses set ``ensemble_``, ``n_features_in_`` and ``classes_`` (or None) in fit.
    """

    _allow_nan = True  # NaN is a missing value (scikit-learn's allow_nan tag)

    def _check_fitted(self):
        if not hasattr(self, "ensemble_"):
            raise NotFittedError("this model is not fitted yet: call fit first")

    def _check_X(self, X) -> np.ndarray:
        """``X`` as a C-contiguous float64 matrix with the training feature count."""
        self._check_fitted()
        X = np.ascontiguousarray(to_host(check_dense(X)), dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ShardlearnError(f"X must have {self.n_features_in_} features, got shape {X.shape}"
                                  + shape_hint(X, self.n_features_in_, type(self).__name__))
        # categorical columns -> bin codes (unseen categories: the missing bin)
        return self.bin_mapper_.encode(X)

    def feature_importances(self, kind: str = "gain") -> np.ndarray:
        """Per-feature total split ``gain`` or split count (``split``), not normalised."""
        self._check_fitted()
        a = self.ensemble_.to_arrays()
        internal = a["feature"] >= 0
        w = a["gain"][internal] if kind == "gain" else np.ones(int(internal.sum()))
        return np.bincount(a["feature"][internal], weights=w, minlength=self.n_features_in_)

    @property
    def feature_importances_(self) -> np.ndarray:
        """Total gain per feature, normalised to sum 1 (scikit-learn's convention)."""
        imp = self.feature_importances("gain")
        s = imp.sum()
        return imp / s if s > 0 else imp

    # ---------------------------------------------------- applying a fitted model
    evaluate_needs_y = True
    data_options = {"allow_nan": True}  # NaN is a missing value

    def predict_columns(self, X) -> dict:
        """``prediction`` per local row, and ``proba`` (class probabilities) for classifiers.

        A classifier's ``prediction`` is the class label, or its index when labels are text.
        """
        if getattr(self, "classes_", None) is None:
            return {"prediction": self.predict(X)}
        return classifier_columns(self.classes_, self.predict_proba(X))

    def evaluate(self, X, y) -> dict:
        """RMSE and R^2 (regression), or accuracy, log-loss and binary ROC AUC (collective)."""
        from ... import metrics

        ctx = context_from(self.comm)
        with ctx.guard(f"{type(self).__name__}.evaluate"):
            if getattr(self, "classes_", None) is None:
                with ctx.collective_errors():
                    pred = self.predict(X)
                return {"rmse": metrics.rmse(ctx, y, pred), "r2": metrics.r2(ctx, y, pred)}
            classes = np.asarray(self.classes_)
            with ctx.collective_errors():
                idx = np.searchsorted(classes, y)
                idx = np.clip(idx, 0, len(classes) - 1)
                if len(y) and not np.array_equal(classes[idx], y.astype(classes.dtype)):
                    raise ShardlearnError("labels in the data that the model never saw in training")
                proba = self.predict_proba(X)
            out = {"accuracy": metrics.accuracy(ctx, idx, np.argmax(proba, axis=1) if len(proba) else idx),
                   "log_loss": metrics.log_loss(ctx, idx, proba[:, 1] if proba.shape[1] == 2 else proba)}
            if proba.shape[1] == 2:
                out["roc_auc"] = metrics.roc_auc(ctx, idx, proba[:, 1])
            return out

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy (classifiers) or R^2 (regressors) over every rank's rows, as scikit-learn (collective).

        Every rank passes its own rows ``X``, ``y`` (and ``sample_weight``); every rank gets
        the global value. Bad input on any rank raises the same error on every rank. A
        classifier counts labels it never saw in training as wrong, as scikit-learn does.
        """
        from ... import metrics

        ctx = context_from(self.comm)
        with ctx.guard(f"{type(self).__name__}.score"):
            with ctx.collective_errors():
                y = np.asarray(y)
                pred = self.predict(X)
                if y.ndim != 1 or len(y) != len(pred):
                    raise ShardlearnError(f"y must be 1-D with one value per row of X: X has {len(pred)} rows, "
                                          f"y shape {y.shape}")
                if sample_weight is not None and np.shape(sample_weight) != y.shape:
                    raise ShardlearnError(f"sample_weight must have one weight per row: {len(y)} rows, "
                                          f"sample_weight shape {np.shape(sample_weight)}")
                if getattr(self, "classes_", None) is None and y.dtype.kind not in "iufb":
                    raise ShardlearnError(f"a regressor's y must be numeric, got dtype {y.dtype}")
            if getattr(self, "classes_", None) is None:
                return float(metrics.r2(ctx, y, pred, sample_weight=sample_weight))
            return float(metrics.accuracy(ctx, y, pred, sample_weight=sample_weight))
