"""Distributed histogram random forests: ``RandomForestClassifier`` / ``RandomForestRegressor``.

The same machinery as the boosting models (global bins, per-node histograms combined
across ranks, vectorised split search), with the forest's statistics:

- each tree sees a bootstrap sample drawn as Poisson(1) row weights keyed by global row
  index (the standard distributed bootstrap: no rank needs the others' rows, and the
  sample does not depend on the number of ranks), or all rows (``bootstrap=False``);
- the gradient channels are ``-w * onehot(y)`` (classification, one channel per class)
  or ``-w * y`` (regression) with hessian ``w``, so the gain ``sum_c G_c^2 / H`` is the
  weighted Gini impurity decrease / variance decrease, and a leaf value ``-G_c / H`` is
  the class distribution / mean target of the leaf;
- features are sampled per node (``max_features``), identically on every rank;
- trees are grown depth-wise (one histogram collective per level, in batches of at most
  ``GROW_BATCH`` nodes to bound memory); predictions average the trees;
- categorical features split as in boosting (:mod:`.categorical`); with one gradient
  channel per class, each class's ratio order is scanned. ``cat_l2`` defaults to 0 here
  so leaf values stay the class frequencies / mean targets of their rows.
"""
from __future__ import annotations

import math
import time

import numpy as np

from ... import rng
from ...data.binning import BinMapper
from ...errors import ShardlearnError
from ...util import faults
from ...util.rowsel import RowView
from ..base import BaseEstimator, ClassifierMixin, Params, RegressorMixin
from .bincache import fit_bins
from .categorical import cat_params, check_categorical_params
from .common import (FittedEnsemble, check_histogram_pool_size, check_sample_weight, check_weight_total,
                     class_labels, diff, phase_snapshot, prepare_rows, resolve_categorical)
from .grower import HIST_REDUCE, GrowParams, TreeGrower, compiled_host
from .io import ensemble_arrays, model_json, restore_ensemble
from .predict import Ensemble
from .split import SplitParams


def poisson1(u: np.ndarray) -> np.ndarray:
    """Poisson(1) draws from uniforms by the inverse CDF (vectorised)."""
    k = np.arange(32)
    pmf = np.exp(-1.0) / np.array([math.factorial(int(i)) for i in k], dtype=np.float64)
    cdf = np.cumsum(pmf)
    return np.searchsorted(cdf, u, side="right").astype(np.float64)


class _RandomForest(FittedEnsemble, Params):
    """Shared machinery; use :class:`RandomForestClassifier` or :class:`RandomForestRegressor`.

    Parameters
    ----------
    n_estimators : int
        Number of trees.
    max_depth : int or None
        Depth limit (None or <= 0, as LightGBM: grow until leaves are pure or too small).
    num_leaves : int or None
        Leaves per tree at most (None: no limit).
    min_child_samples : int
        Rows a leaf needs at least (scikit-learn's ``min_samples_leaf``).
    max_features : "sqrt", "log2", int or float
        Features drawn at each node.
    bootstrap : bool
        Poisson(1) row weights per tree (keyed by global row) or all rows.
    max_bin : int
        Value bins per feature (<= 255); NaN gets its own bin.
    min_gain_to_split : float
    hist_reduce : {"allreduce", "reduce_scatter"}
    histogram_pool_size : float
        MiB of open-leaf histograms each rank keeps at most; negative (default): no bound.
        See :class:`~.gbdt.GradientBoostingClassifier`.
    categorical_features : list of int, bool mask of length d, or None
        Columns holding non-negative integer category codes (NaN: missing); see
        :class:`~.gbdt.GradientBoostingClassifier` for them and the next parameters.
    max_cat_to_onehot, cat_smooth, max_cat_threshold, min_data_per_group
        LightGBM's categorical split parameters (defaults 4, 10, 32, 100).
    cat_l2 : float
        Extra L2 penalty of many-vs-many splits; 0 by default (leaf values stay frequencies).
    random_state : int
        Seed of the bootstrap weights, the per-node feature draws and the binning sample;
        draws are keyed by global row, so the model does not depend on P.
    comm : mpi4py communicator or shardlearn Context, optional
    verbose : bool
    """

    def __init__(self, *, n_estimators=100, max_depth=None, num_leaves=None, min_child_samples=1,
                 max_features="sqrt", bootstrap=True, max_bin=255, min_gain_to_split=0.0,
                 hist_reduce="allreduce", histogram_pool_size=-1.0, categorical_features=None, max_cat_to_onehot=4,
                 cat_smooth=10.0, cat_l2=0.0, max_cat_threshold=32, min_data_per_group=100, random_state=0, comm=None, verbose=False):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.max_features = max_features
        self.bootstrap = bootstrap
        self.max_bin = max_bin
        self.min_gain_to_split = min_gain_to_split
        self.hist_reduce = hist_reduce
        self.histogram_pool_size = histogram_pool_size
        self.categorical_features = categorical_features
        self.max_cat_to_onehot = max_cat_to_onehot
        self.cat_smooth = cat_smooth
        self.cat_l2 = cat_l2
        self.max_cat_threshold = max_cat_threshold
        self.min_data_per_group = min_data_per_group
        self.random_state = random_state
        self.comm = comm
        self.verbose = verbose

    def _n_features_per_node(self, d):
        mf = self.max_features
        if mf == "sqrt":
            return max(1, int(math.sqrt(d)))
        if mf == "log2":
            return max(1, int(math.log2(d)))
        if isinstance(mf, float) or (isinstance(mf, str) and "." in mf):
            return max(1, int(float(mf) * d))
        if mf is None:
            return d
        return max(1, min(d, int(mf)))

    def _check_params(self):
        if int(self.n_estimators) < 1:
            raise ShardlearnError(f"n_estimators must be >= 1, got {self.n_estimators}")
        if self.hist_reduce not in HIST_REDUCE:
            raise ShardlearnError(f"hist_reduce must be one of {HIST_REDUCE}, got {self.hist_reduce!r}")
        check_histogram_pool_size(self.histogram_pool_size)
        if self.num_leaves is not None and int(self.num_leaves) < 2:
            raise ShardlearnError(f"num_leaves must be >= 2, got {self.num_leaves}")
        if not 2 <= int(self.max_bin) <= 255:
            raise ShardlearnError(f"max_bin must be in 2..255, got {self.max_bin}")
        if int(self.min_child_samples) < 0:
            raise ShardlearnError(f"min_child_samples must be >= 0, got {self.min_child_samples}")
        if self.min_gain_to_split < 0:
            raise ShardlearnError(f"min_gain_to_split must be >= 0, got {self.min_gain_to_split}")
        mf = self.max_features
        ok = mf in ("sqrt", "log2", None) or (isinstance(mf, (int, float)) and mf > 0)
        if isinstance(mf, str) and mf not in ("sqrt", "log2"):
            try:
                ok = float(mf) > 0
            except ValueError:
                ok = False
        if not ok:
            raise ShardlearnError(f"max_features must be 'sqrt', 'log2', a count or a fraction, got {mf!r}")
        check_categorical_params(self)

    def _fit(self, X, y, classification, n_classes=None, checkpoint=None, sample_weight=None, rows=None):
        """Fit (collective). ``checkpoint``: a :class:`shardlearn.checkpoint.Checkpoint`, or None.

        With a checkpoint, a step is one tree. The state saved is global: the trees so
        far, the bins (a resumed fit reuses them instead of binning again) and the
        per-tree history; the classes are part of the fingerprint. Bootstrap weights and
        feature draws are keyed by tree index, so nothing else is needed: a fit resumed
        on the same number of ranks ends with the same model bit for bit, and on another
        number of ranks with the same model up to the rounding of histogram sums.

        ``rows`` (a boolean mask or increasing indices of the local rows): fit on
        ``X[rows]``, ``y[rows]`` (and ``sample_weight[rows]``) without copying ``X``
        (:func:`.common.prepare_rows`); model selection's folds.
        """
        t_start = time.perf_counter()
        ctx, X, y, grows, n_total, idx, sample_weight = prepare_rows(self.comm, X, y, self.verbose, rows,
                                                                     sample_weight)
        with ctx.guard(f"{type(self).__name__}.fit"):
            try:
                return self._fit_ranks(ctx, X, y, grows, n_total, classification, n_classes, checkpoint, t_start,
                                       sample_weight, idx)
            finally:
                if checkpoint is not None:
                    checkpoint.finish()     # the stop signals get their handlers back, also after a stop

    def _fit_ranks(self, ctx, X, y, grows, n_total, classification, n_classes, checkpoint, t_start,
                   sample_weight=None, idx=None):
        """The collective part of fit, after the input checks of :func:`.common.prepare`.
        ``sample_weight`` multiplies each row's bootstrap weight; ``idx``: the rows of ``X``
        to fit on (None: all)."""
        n = len(y)
        with ctx.collective_errors():
            self._check_params()
            sw = None if sample_weight is None else check_sample_weight(sample_weight, n)
        check_weight_total(ctx, sw, n)  # every rank, with or without weights: no rank waits
        if classification:
            self.classes_, yk = class_labels(ctx, y, n_classes, n_total=n_total, regressor="RandomForestRegressor")
            K = len(self.classes_)
        else:
            self.classes_, yk, K = None, y.astype(np.float64), 1
        d = X.shape[1]
        self.n_features_in_ = d
        with ctx.collective_errors():
            cat = resolve_categorical(self.categorical_features, d)
        state = None
        if checkpoint is not None:
            state = checkpoint.start(ctx, type(self).__name__, self.model_params(),
                                     X if idx is None else RowView(X, idx), extra_fingerprint={
                "classes": None if self.classes_ is None else self.classes_.tolist()})
        t0 = time.perf_counter()
        row_major = compiled_host(ctx, int(self.max_bin) + 1)    # the layout the grower reads: no copy
        with ctx.timers.phase("binning"):
            if state is None:
                mapper, codes = fit_bins(self, X, grows, n_total, ctx, idx, cat, row_major)   # a search's folds: bincache
            else:  # the saved bins: no sample, no collective, the same codes
                mapper = BinMapper.from_arrays(state["bins"])
                codes = mapper.transform(X, rows=idx, row_major=row_major)
        self.binning_seconds_ = time.perf_counter() - t0
        self.bin_mapper_ = mapper
        depth = None if self.max_depth is None or int(self.max_depth) <= 0 else int(self.max_depth)
        grow = GrowParams(num_leaves=self.num_leaves, max_depth=depth, growth="depthwise",
                          hist_reduce=self.hist_reduce, learning_rate=1.0,
                          histogram_pool_size=float(self.histogram_pool_size),   # checked in _check_params
                          split=SplitParams(0.0, self.min_child_samples, 1e-12, self.min_gain_to_split),
                          categorical=cat_params(self, cat))
        grower = TreeGrower(ctx, codes, mapper.n_bins_, mapper.n_slots, grow)
        codes = None    # the grower holds them (row-major: the same array): not held beside it
        ens = Ensemble(K)
        m = self._n_features_per_node(d)
        history, first = [], 0
        if state is not None:
            ens = Ensemble.from_arrays(state["trees"])
            ens._flat = None                # rebuilt from the trees, as in an uninterrupted fit
            history, first = list(state["history"]), int(state["_step"])
            ctx.log(f"resuming from tree {first} of {int(self.n_estimators)} ({checkpoint.directory})")
        for t in range(first, int(self.n_estimators)):
            t_it = time.perf_counter()
            snap = phase_snapshot(ctx)
            wire0, ncoll0 = grower.wire_bytes, grower.hist_collectives
            if self.bootstrap:
                w = poisson1(rng.row_uniform(self.random_state, rng.stream_id("bootstrap", t), grows))
            else:
                w = np.ones(n)
            if sw is not None:
                w = w * sw
            rows = np.flatnonzero(w > 0)
            ch = np.empty((K + 1, n))
            if classification:
                ch[:K] = -(yk[None, :] == np.arange(K)[:, None]).astype(np.float64) * w[None, :]
            else:
                ch[0] = -yk * w
            ch[K] = w

            def node_mask(ids, t=t):
                # m features per node: the m smallest of d random keys keyed by (tree, node,
                # feature), identical on every rank
                if m >= d:
                    return np.ones((len(ids), d), dtype=bool)
                keys = rng.row_bits(self.random_state, rng.stream_id("forest-features", t),
                                    (ids[:, None] * d + np.arange(d)[None, :]).ravel()).reshape(len(ids), d)
                pick = np.argsort(keys, axis=1, kind="stable")[:, :m]
                mask = np.zeros((len(ids), d), dtype=bool)
                mask[np.arange(len(ids))[:, None], pick] = True
                return mask

            tree, _ = grower.grow(ch, rows, node_mask=node_mask)
            ens.add(tree, mapper, 0)
            rec = {"iteration": t + 1, "seconds": time.perf_counter() - t_it, **diff(snap, phase_snapshot(ctx)),
                   "leaves": int((tree["feature"] < 0).sum()), "wire_bytes": grower.wire_bytes - wire0,
                   "hist_collectives": grower.hist_collectives - ncoll0}
            history.append(rec)
            if self.verbose or ctx.verbose:
                ctx.log(f"tree {t + 1:4d}  leaves={rec['leaves']}  {rec['seconds'] * 1e3:.1f} ms (hist "
                        f"{rec['histogram'] * 1e3:.1f}, comm {rec['communication'] * 1e3:.1f}, split "
                        f"{rec['split_search'] * 1e3:.1f}, partition {rec['partition'] * 1e3:.1f})")
            if checkpoint is not None:
                checkpoint.step(t + 1, lambda: {"trees": ens.to_arrays(), "bins": mapper.to_arrays(),
                                                "history": history})
            faults.check("step")
        self.ensemble_ = ens
        self.history_ = history
        self.n_iter_ = self.best_iteration_ = len(history)
        self.n_trees_per_iteration_ = 1
        self.fit_seconds_ = time.perf_counter() - t_start
        return self

    def _average(self, X):
        X = self._check_X(X)  # first: unfitted raises NotFittedError
        return self.ensemble_.raw_sum(X, self.ensemble_.n_out, average=True)

    _model_name = "forest"

    def to_model(self) -> tuple[dict, dict, dict]:
        """(arrays, params, info) for :func:`shardlearn.models.io.save_estimator`."""
        self._check_fitted()
        info = {"class": type(self).__name__, "n_features": self.n_features_in_,
                "n_trees": self.ensemble_.n_trees}
        return ensemble_arrays(self), self.model_params(), info

    @classmethod
    def from_model(cls, arrays, params, info, comm=None):
        """The fitted estimator a model file describes (see :mod:`shardlearn.models.io`)."""
        klass = RandomForestClassifier if info["class"] == "RandomForestClassifier" else RandomForestRegressor
        est = restore_ensemble(klass, arrays, params, info, comm)
        est.n_trees_per_iteration_ = 1
        return est

    def to_json(self) -> dict:
        self._check_fitted()
        return model_json(self.ensemble_, self.bin_mapper_, self.model_params(),
                          {"model": type(self).__name__,
                           "classes": None if self.classes_ is None else self.classes_.tolist()})


class RandomForestClassifier(_RandomForest, ClassifierMixin, BaseEstimator):
    __doc__ = ("Histogram random forest for classification (Gini), trained across MPI ranks.\n"
               + _RandomForest.__doc__.split("\n", 2)[2])

    def fit(self, X, y, n_classes=None, *, sample_weight=None, checkpoint=None, rows=None):
        """Fit on this rank's rows (collective); ``n_classes`` checks labels are 0..n_classes-1;
        ``sample_weight`` (keyword: the third position is ``n_classes``) weighs each row.

        ``checkpoint``: a :class:`shardlearn.checkpoint.Checkpoint` to save the state to
        (every few trees, and on a stop signal) and resume from (see :meth:`_RandomForest._fit`).
        ``rows``: fit on those local rows only, without copying them (see :meth:`_RandomForest._fit`).
        """
        return self._fit(X, y, True, n_classes, checkpoint=checkpoint, sample_weight=sample_weight, rows=rows)

    def predict_proba(self, X) -> np.ndarray:
        return self._average(X)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # first: unfitted raises NotFittedError
        return np.asarray(self.classes_)[np.argmax(proba, axis=1)]


class RandomForestRegressor(_RandomForest, RegressorMixin, BaseEstimator):
    __doc__ = ("Histogram random forest for regression (variance reduction), trained across MPI ranks.\n"
               + _RandomForest.__doc__.split("\n", 2)[2])

    def __init__(self, *, max_features=1.0, **kwargs):
        super().__init__(max_features=max_features, **kwargs)

    def fit(self, X, y, sample_weight=None, *, checkpoint=None, rows=None):
        """Fit on this rank's rows (collective), optionally weighted by ``sample_weight``.

        ``checkpoint``: a :class:`shardlearn.checkpoint.Checkpoint` to save the state to
        (every few trees, and on a stop signal) and resume from (see :meth:`_RandomForest._fit`).
        ``rows``: fit on those local rows only, without copying them (see :meth:`_RandomForest._fit`).
        """
        return self._fit(X, y, False, checkpoint=checkpoint, sample_weight=sample_weight, rows=rows)

    def predict(self, X) -> np.ndarray:
        return self._average(X)[:, 0]


__all__ = ["RandomForestClassifier", "RandomForestRegressor"]
