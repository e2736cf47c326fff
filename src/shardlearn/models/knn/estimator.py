"""``KNeighborsClassifier`` / ``KNeighborsRegressor``: brute-force k nearest neighbours over
training rows that stay sharded (:mod:`._search` moves the queries, :mod:`._local` scores).

``fit`` keeps a reference to this rank's rows (no copy beyond a float64 contiguous view)
and agrees on the classes; a model file records the training data's path and shape
instead of the rows, and a loaded model reads its shard again on first use.

Sample weights are resampling counts (whole numbers >= 0), kept per row beside the rows:
a row drawn ``c`` times takes ``c`` of the k neighbour slots, exactly as its ``c`` copies
in the materialised resampled data would (so the answers equal scikit-learn's brute
force on that data wherever distances do not tie), and a row drawn 0 times is absent.
A fractional weight has no such meaning (a slot holds one neighbour) and is refused.
With ``resample=`` the estimator draws the counts itself (:mod:`..resample`, keyed by
seed and global row), and a model file records the draw, not the counts: a loaded model
draws them again from the training data it reads.
"""
from __future__ import annotations

import os
import time

import numpy as np

from ...errors import ShardlearnError
from ...runtime import context_from
from ..base import (BaseEstimator, ClassifierMixin, NotFittedError, Params, RegressorMixin, check_dense,
                    check_fit_input, classifier_columns, shape_hint)
from ._local import METRICS, LocalIndex, unpack
from ._search import BLOCK_ROWS, STRATEGIES, kneighbors

WEIGHTS = ("uniform", "distance")


class _KNeighbors(Params):
    """Shared machinery; use :class:`KNeighborsClassifier` or :class:`KNeighborsRegressor`.

    Parameters
    ----------
    n_neighbors : int, default 5
    weights : {"uniform", "distance"}
        Every neighbour counts alike, or by the inverse of its distance (a neighbour at
        distance 0 takes it all, as scikit-learn).
    metric : {"euclidean", "manhattan", "cosine"}
    strategy : {"auto", "broadcast", "ring"}
        How query blocks travel (:mod:`shardlearn.models.knn._search`): auto picks the
        ring when the queries are at least a tenth of the training rows and every rank
        holds a full block, else broadcast from the owner. The answer is the same.
    block_rows : int
        Queries per travelling block.
    resample : {"under", "over", "under:RATIO", "over:RATIO"} or None
        Resample the classes by per-row counts drawn per global row
        (:func:`shardlearn.models.resample.resample_weights`, classifier only): a row drawn
        ``c`` times is ``c`` neighbours. Recorded in model files (the draw is repeated on load).
    random_state : int
        Seed of the ``resample`` draw.
    comm : mpi4py communicator or shardlearn Context, optional
    verbose : bool
        Rank 0 prints a progress line per query block.

    Neighbours are ordered by (distance, global training row): ties go to the lower row,
    for any number of ranks (scikit-learn's brute force breaks exact ties in its own order).
    ``fit(X, y, sample_weight)`` takes resampling counts (whole numbers >= 0): a row of
    count ``c`` fills ``c`` neighbour slots (``kneighbors`` lists it ``c`` times), one of
    count 0 is left out.
    """

    def __init__(self, n_neighbors=5, *, weights="uniform", metric="euclidean", strategy="auto",
                 block_rows=BLOCK_ROWS, resample=None, random_state=0, comm=None, verbose=False):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.metric = metric
        self.strategy = strategy
        self.block_rows = block_rows
        self.resample = resample
        self.random_state = random_state
        self.comm = comm
        self.verbose = verbose

    def _check_params(self):
        if int(self.n_neighbors) < 1:
            raise ShardlearnError(f"n_neighbors must be >= 1, got {self.n_neighbors}")
        if self.weights not in WEIGHTS:
            raise ShardlearnError(f"weights must be one of {', '.join(WEIGHTS)}, got {self.weights!r}")
        if self.metric not in METRICS:
            raise ShardlearnError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.strategy not in STRATEGIES:
            raise ShardlearnError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if int(self.block_rows) < 1:
            raise ShardlearnError(f"block_rows must be >= 1, got {self.block_rows}")
        if self.resample is not None:
            from ..resample import parse_resample

            if not isinstance(self, KNeighborsClassifier):
                raise ShardlearnError("resample is for classifiers (a regression target has no classes)")
            parse_resample(self.resample)

    def _ctx(self):
        return context_from(self.comm, verbose=bool(self.verbose)) if not hasattr(self.comm, "coll") else self.comm

    # ------------------------------------------------------------------ fit
    def fit(self, X, y, sample_weight=None, *, row_offset=None, data_path=None):
        """Keep this rank's training rows (collective: checks and classes are agreed).

        ``sample_weight``: this rank's per-row resampling counts (whole numbers >= 0; see
        the class docstring), or None (each row once; with ``resample``, the drawn counts).
        ``row_offset``: global index of this rank's first row (default: rows in rank order).
        ``data_path``: where these rows come from (a dataset :func:`shardlearn.data.read_shard`
        reads); needed to save the model, which refers to the data instead of copying it.
        """
        t0 = time.perf_counter()
        ctx = self._ctx()
        with ctx.guard(f"{type(self).__name__}.fit"):
            with ctx.collective_errors():
                self._check_params()
                X, y = _check_Xy(X, y, type(self).__name__)
                if sample_weight is not None and self.resample is not None:
                    raise ShardlearnError("give sample_weight or resample, not both (resample draws the weights)")
                counts = None if sample_weight is None else _check_counts(sample_weight, len(X))
            meta = ctx.coll.allgather_obj((X.shape[0], X.shape[1]))
            n_total = sum(m[0] for m in meta)
            widths = {m[1] for m in meta if m[0] > 0}
            with ctx.collective_errors():
                if n_total == 0:
                    raise ShardlearnError("no training rows (every rank's X is empty)")
                if len(widths) > 1:
                    raise ShardlearnError(f"ranks hold different feature counts {sorted(widths)}")
                if int(self.n_neighbors) > n_total:
                    raise ShardlearnError(f"n_neighbors={self.n_neighbors} is more than the {n_total} training "
                                          f"rows (n_samples={n_total}): choose fewer neighbours")
            d = widths.pop()
            X = X.reshape(X.shape[0], d) if X.shape[0] else np.empty((0, d))
            offset = sum(m[0] for m in meta[:ctx.rank]) if row_offset is None else int(row_offset)
            target = self._targets(ctx, y, n_total)
            self.n_weighted_ = int(n_total)
            counts = self._counts(ctx, y, offset, counts)
            self.index_ = LocalIndex(X, offset, self.metric, target, counts)
            self.index_.ranks = ctx.size  # it holds this rank's shard of ctx.size (pickled: see _search)
            self.n_samples_fit_ = int(n_total)
            self.n_features_in_ = int(d)
            self.data_path_ = None if data_path is None else os.path.abspath(str(data_path))
            self.sample_weight_given_ = sample_weight is not None
            self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _counts(self, ctx, y, offset, counts):
        """The per-row counts (``resample``'s draw, the given ones, or None), checked to
        leave at least ``n_neighbors`` slots (collective); sets ``n_weighted_``, their sum."""
        if self.resample is not None:
            from ..resample import parse_resample, resample_weights

            kind, ratio = parse_resample(self.resample)
            counts = resample_weights(ctx, y, kind, ratio, seed=int(self.random_state), row_offset=offset)
        if counts is None:
            return None
        slots = int(ctx.coll.allreduce(np.array([counts.sum()], dtype=np.float64))[0])
        with ctx.collective_errors():
            if slots == 0:
                raise ShardlearnError("every sample weight is zero: no training row is left to be a neighbour "
                                      "(give some rows a weight above zero)")
            if int(self.n_neighbors) > slots:
                raise ShardlearnError(f"n_neighbors={self.n_neighbors} is more than the {slots} weighted training "
                                      "rows (the sum of the sample weights): choose fewer neighbours")
        self.n_weighted_ = slots
        return counts

    def _check_fitted(self):
        if not hasattr(self, "n_samples_fit_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit first")

    def _ensure_index(self, ctx):
        """A loaded model reads its training shard on first use (collective)."""
        if hasattr(self, "index_"):
            return
        from ...data import read_shard

        shard = read_shard(self.data_path_, ctx, need_y=True)
        with ctx.collective_errors():
            if shard.n_total != self.n_samples_fit_ or shard.dataset.n_features != self.n_features_in_:
                raise ShardlearnError(
                    f"{self.data_path_}: the training data changed since the model was saved ({shard.n_total} x "
                    f"{shard.dataset.n_features} now, {self.n_samples_fit_} x {self.n_features_in_} then): "
                    "train the model again")
        target = self._targets(ctx, shard.y, shard.n_total, known=True)
        counts = self._counts(ctx, shard.y, shard.start, None)   # resample= draws again; None otherwise
        self.index_ = LocalIndex(shard.X, shard.start, self.metric, target, counts)
        self.index_.ranks = ctx.size

    # ------------------------------------------------------------ neighbours
    def _search(self, X):
        """Packed candidates (n_local, 3k) of this rank's query rows (collective)."""
        self._check_fitted()  # first, on every rank alike: NotFittedError as scikit-learn
        ctx = self._ctx()
        with ctx.collective_errors():
            self._check_params()
            Q = _check_X(X, self.n_features_in_, type(self).__name__)
            ranks = getattr(self.__dict__.get("index_"), "ranks", None)
            if ranks not in (None, ctx.size):  # a pickled estimator holds one rank's training rows
                raise ShardlearnError(f"this {type(self).__name__} was fitted on {ranks} ranks and holds one rank's "
                                      f"share of the training rows; this world has {ctx.size}: use it on {ranks} "
                                      "ranks (each rank its own pickle), or save it as a model file (fit with "
                                      "data_path=) and load that on any number of ranks")
        self._ensure_index(ctx)
        with ctx.guard(f"{type(self).__name__}.kneighbors"):
            out, used = kneighbors(ctx, self.index_, Q, int(self.n_neighbors), self.strategy, int(self.block_rows))
        self.index_.strategy = used  # a record of the search, not of the model: predict leaves vars(self) alone
        return out

    @property
    def strategy_(self) -> str:
        """How the last search moved its queries (``broadcast`` or ``ring``; see ``strategy``)."""
        index = self.__dict__.get("index_")
        if index is None or index.strategy is None:
            raise AttributeError("strategy_: no search has run yet (kneighbors / predict)")
        return index.strategy

    def kneighbors(self, X, return_distance=True):
        """Distances and global training rows of the k nearest neighbours of this rank's
        query rows ``X`` (collective: every rank calls it with its own queries, maybe none)."""
        d, i, _ = unpack(self._search(X), int(self.n_neighbors))
        return (np.ascontiguousarray(d), i) if return_distance else i

    def _weights(self, dist):
        if self.weights == "uniform":
            return np.ones_like(dist)
        with np.errstate(divide="ignore"):
            w = 1.0 / dist
        inf = np.isinf(w)
        rows = inf.any(axis=1)
        w[rows] = inf[rows]
        return w

    # ---------------------------------------------------------- model files
    _model_name = "knn"
    evaluate_needs_y = True
    data_options: dict = {}

    def to_model(self) -> tuple[dict, dict, dict]:
        """(arrays, params, info): the classes and a reference to the training data, not its rows."""
        self._check_fitted()
        if self.data_path_ is None:
            raise ShardlearnError("a k-NN model refers to its training data by path: fit with data_path= "
                                  "(shardlearn train knn does) to save it")
        if getattr(self, "sample_weight_given_", False):
            raise ShardlearnError("a k-NN model fitted with sample_weight cannot be saved: the file refers to the "
                                  "training data and keeps no per-row weights; fit with resample= (the file "
                                  "records the draw) instead")
        arrays = {}
        if getattr(self, "classes_", None) is not None:
            cl = np.asarray(self.classes_)
            arrays["classes"] = cl.astype("S") if cl.dtype.kind == "U" else cl
        info = {"class": type(self).__name__, "training_data": self.data_path_,
                "n_samples_fit": self.n_samples_fit_, "n_features": self.n_features_in_}
        return arrays, self.model_params(), info

    @classmethod
    def from_model(cls, arrays, params, info, comm=None):
        """The estimator a model file describes; it reads ``info["training_data"]`` on first use."""
        klass = KNeighborsClassifier if info["class"] == "KNeighborsClassifier" else KNeighborsRegressor
        est = klass(**{k: v for k, v in params.items() if k in klass.param_names() and k != "comm"}, comm=comm)
        est.data_path_ = str(info["training_data"])
        est.n_samples_fit_ = int(info["n_samples_fit"])
        est.n_features_in_ = int(info["n_features"])
        if "classes" in arrays:
            c = np.asarray(arrays["classes"])
            est.classes_ = c.astype(str) if c.dtype.kind in "SO" else c
        return est


class KNeighborsClassifier(_KNeighbors, ClassifierMixin, BaseEstimator):
    __doc__ = ("k-nearest-neighbour classification over sharded training rows (brute force, exact).\n"
               + _KNeighbors.__doc__.split("\n", 2)[2])

    def _targets(self, ctx, y, n_total, known=False):
        """Class indices (float64) of the local labels; the classes agreed over all ranks."""
        from ..trees.common import class_labels

        if known:
            with ctx.collective_errors():
                idx = np.searchsorted(self.classes_, y)
                idx = np.clip(idx, 0, len(self.classes_) - 1)
                if len(y) and not np.array_equal(np.asarray(self.classes_)[idx], y.astype(self.classes_.dtype)):
                    raise ShardlearnError(f"{self.data_path_}: labels the model never saw: the training data "
                                          "changed since the model was saved")
            return idx.astype(np.float64)
        self.classes_, idx = class_labels(ctx, y, None, n_total=n_total, regressor="KNeighborsRegressor")
        return idx.astype(np.float64)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities of this rank's rows: the (weighted) votes of their neighbours (collective)."""
        k = int(self.n_neighbors)
        d, _, lab = unpack(self._search(X), k)
        w = self._weights(d)
        K = len(self.classes_)
        proba = np.zeros((len(d), K))
        np.add.at(proba, (np.repeat(np.arange(len(d)), k), lab.ravel().astype(np.int64)), w.ravel())
        s = proba.sum(axis=1, keepdims=True)
        return np.divide(proba, s, out=np.zeros_like(proba), where=s > 0)

    def predict(self, X) -> np.ndarray:
        """Class of the most (weighted) votes, ties to the first class (collective)."""
        proba = self.predict_proba(X)
        return np.asarray(self.classes_)[np.argmax(proba, axis=1)] if len(proba) else \
            np.empty(0, dtype=np.asarray(self.classes_).dtype)

    def predict_columns(self, X) -> dict:
        """``prediction`` and ``proba`` per local row (collective)."""
        return classifier_columns(self.classes_, self.predict_proba(X))

    def evaluate(self, X, y) -> dict:
        """Accuracy, log-loss and (binary) ROC AUC over every rank's rows (collective)."""
        from ... import metrics

        ctx = self._ctx()
        proba = self.predict_proba(X)
        classes = np.asarray(self.classes_)
        with ctx.collective_errors():
            y = np.asarray(y)
            if y.shape != (len(proba),):
                raise ShardlearnError(f"y must be 1-D with one label per row of X: {len(proba)} rows, y shape {y.shape}")
            idx = np.clip(np.searchsorted(classes, y), 0, len(classes) - 1)
            if len(y) and not np.array_equal(classes[idx], y.astype(classes.dtype)):
                raise ShardlearnError("labels in the data that the model never saw in training")
        with ctx.guard(f"{type(self).__name__}.evaluate"):
            out = {"accuracy": metrics.accuracy(ctx, idx, np.argmax(proba, axis=1) if len(proba) else idx),
                   "log_loss": metrics.log_loss(ctx, idx, proba[:, 1] if proba.shape[1] == 2 else proba)}
            if proba.shape[1] == 2:
                out["roc_auc"] = metrics.roc_auc(ctx, idx, proba[:, 1])
        return out

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy over every rank's rows, as scikit-learn (collective)."""
        from ... import metrics

        ctx = self._ctx()
        pred = self.predict(X)
        with ctx.collective_errors():
            y = np.asarray(y)
            if y.shape != pred.shape:
                raise ShardlearnError(f"y must be 1-D with one value per row of X: {len(pred)} rows, y shape {y.shape}")
        return float(metrics.accuracy(ctx, y, pred, sample_weight=sample_weight))


class KNeighborsRegressor(_KNeighbors, RegressorMixin, BaseEstimator):
    __doc__ = ("k-nearest-neighbour regression over sharded training rows (brute force, exact).\n"
               + _KNeighbors.__doc__.split("\n", 2)[2])

    classes_ = None

    def _targets(self, ctx, y, n_total, known=False):
        with ctx.collective_errors():
            if y.dtype.kind not in "iufb":
                raise ShardlearnError(f"a regressor's y must be numeric, got dtype {y.dtype}")
            if not np.all(np.isfinite(y.astype(np.float64))):
                raise ShardlearnError("y holds NaN or infinite values")
        return y.astype(np.float64)

    def predict(self, X) -> np.ndarray:
        """The (distance-weighted) mean target of the neighbours (collective)."""
        k = int(self.n_neighbors)
        d, _, t = unpack(self._search(X), k)
        w = self._weights(d)
        return (w * t).sum(axis=1) / w.sum(axis=1) if len(d) else np.empty(0)

    def predict_columns(self, X) -> dict:
        return {"prediction": self.predict(X)}

    def _predicted(self, X, y):
        """(ctx, local predictions, y as float64), y checked on every rank (collective)."""
        ctx = self._ctx()
        pred = self.predict(X)
        with ctx.collective_errors():
            y = np.asarray(y, dtype=np.float64)
            if y.shape != pred.shape:
                raise ShardlearnError(f"y must be 1-D with one value per row of X: {len(pred)} rows, y shape {y.shape}")
        return ctx, pred, y

    def evaluate(self, X, y) -> dict:
        """RMSE and R^2 over every rank's rows (collective)."""
        from ... import metrics

        ctx, pred, y = self._predicted(X, y)
        return {"rmse": metrics.rmse(ctx, y, pred), "r2": metrics.r2(ctx, y, pred)}

    def score(self, X, y, sample_weight=None) -> float:
        """R^2 over every rank's rows, as scikit-learn (collective)."""
        from ... import metrics

        ctx, pred, y = self._predicted(X, y)
        return float(metrics.r2(ctx, y, pred, sample_weight=sample_weight))


def _check_Xy(X, y, name):
    X, y = check_fit_input(X, y, supervised=True, name=name)
    X = _check_X(X, None, name)
    if y.ndim != 1 or len(y) != len(X):
        raise ShardlearnError(f"y must be 1-D with one label per row of X: X has {len(X)} rows, y shape {y.shape}")
    return X, y


def _check_counts(w, n):
    """Sample weights as int64 resampling counts: 1-D, one per row, whole numbers >= 0."""
    w = np.asarray(w)
    if w.shape != (n,):
        raise ShardlearnError(f"sample_weight must be 1-D with one weight per row of X: {n} rows, shape {w.shape}")
    if w.dtype.kind not in "iufb":
        raise ShardlearnError(f"sample_weight must be numeric, got dtype {w.dtype}")
    wf = w.astype(np.float64)
    bad = ~(np.isfinite(wf) & (wf >= 0) & (wf == np.round(wf)))
    if bad.any():
        raise ShardlearnError(f"k-NN sample_weight must be whole numbers >= 0 (resampling counts: a row of count c "
                              f"is c of the k neighbours), got {w[bad][0]!r} in {int(bad.sum())} rows; fractional "
                              "weights have no neighbour-slot meaning (use weights='distance' or resample)")
    return wf.astype(np.int64)


def _check_X(X, d, name="KNeighbors"):
    """X as float64, 2-D, finite, with ``d`` features (any when None); ShardlearnError otherwise."""
    X = np.asarray(check_dense(X))
    if X.ndim != 2:
        if X.ndim == 1 and X.size == 0 and d is not None:
            return np.empty((0, d))
        raise ShardlearnError(f"X must be 2-D (rows x features), got shape {X.shape}" + shape_hint(X, d or 0, name))
    if X.dtype.kind not in "fiub":
        raise ShardlearnError(f"X must be numeric, got dtype {X.dtype}")
    if d is not None and X.shape[1] != d:
        if X.shape[0] == 0:
            return np.empty((0, d))
        raise ShardlearnError(f"X must have {d} features (as the training data), got shape {X.shape}"
                              + shape_hint(X, d, name))
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.size and not np.isfinite(X.sum()) and not np.isfinite(X).all():
        raise ShardlearnError(f"X holds NaN or infinite values in {int((~np.isfinite(X).all(axis=1)).sum())} rows: "
                              "k-NN needs finite features (impute or drop them)")
    return X
