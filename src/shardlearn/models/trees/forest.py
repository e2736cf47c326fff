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
from ..base import Params
from .common import FittedEnsemble, class_labels, diff, phase_snapshot, prepare, resolve_categorical
from .gbdt import (LoadedModel, _HelpFormatter, _save, add_tree_arguments, cat_params, categorical_kwargs,
                   check_categorical_params, model_json)
from .grower import HIST_REDUCE, GrowParams, TreeGrower
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
        Depth limit (None: grow until leaves are pure or too small).
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
    categorical_features : list of int, bool mask of length d, or None
        Columns holding non-negative integer category codes (NaN: missing); see
        :class:`~.gbdt.GradientBoostingClassifier` for them and the next parameters.
    max_cat_to_onehot, cat_smooth, max_cat_threshold, min_data_per_group
        LightGBM's categorical split parameters (defaults 4, 10, 32, 100).
    cat_l2 : float
        Extra L2 penalty of many-vs-many splits; 0 by default (leaf values stay frequencies).
    seed : int
    comm : mpi4py communicator or shardlearn Context, optional
    verbose : bool
    """

    def __init__(self, *, n_estimators=100, max_depth=None, num_leaves=None, min_child_samples=1,
                 max_features="sqrt", bootstrap=True, max_bin=255, min_gain_to_split=0.0,
                 hist_reduce="allreduce", categorical_features=None, max_cat_to_onehot=4, cat_smooth=10.0,
                 cat_l2=0.0, max_cat_threshold=32, min_data_per_group=100, seed=0, comm=None, verbose=False):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.max_features = max_features
        self.bootstrap = bootstrap
        self.max_bin = max_bin
        self.min_gain_to_split = min_gain_to_split
        self.hist_reduce = hist_reduce
        self.categorical_features = categorical_features
        self.max_cat_to_onehot = max_cat_to_onehot
        self.cat_smooth = cat_smooth
        self.cat_l2 = cat_l2
        self.max_cat_threshold = max_cat_threshold
        self.min_data_per_group = min_data_per_group
        self.seed = seed
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
        if self.num_leaves is not None and int(self.num_leaves) < 2:
            raise ShardlearnError(f"num_leaves must be >= 2, got {self.num_leaves}")
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

    def _fit(self, X, y, classification, n_classes=None):
        t_start = time.perf_counter()
        ctx, X, y, grows, n_total = prepare(self.comm, X, y, self.verbose)
        with ctx.collective_errors():
            self._check_params()
        if classification:
            self.classes_, yk = class_labels(ctx, y, n_classes)
            K = len(self.classes_)
        else:
            self.classes_, yk, K = None, y.astype(np.float64), 1
        d = X.shape[1]
        self.n_features_in_ = d
        with ctx.collective_errors():
            cat = resolve_categorical(self.categorical_features, d)
        t0 = time.perf_counter()
        with ctx.timers.phase("binning"):
            mapper = BinMapper(self.max_bin, seed=self.seed, categorical=cat)
            codes = mapper.fit_transform(X, grows, n_total, ctx)
        self.binning_seconds_ = time.perf_counter() - t0
        self.bin_mapper_ = mapper
        grow = GrowParams(num_leaves=self.num_leaves, max_depth=self.max_depth, growth="depthwise",
                          hist_reduce=self.hist_reduce, learning_rate=1.0,
                          split=SplitParams(0.0, self.min_child_samples, 1e-12, self.min_gain_to_split),
                          categorical=cat_params(self, cat))
        grower = TreeGrower(ctx, codes, mapper.n_bins_, mapper.n_slots, grow)
        ens = Ensemble(K)
        m = self._n_features_per_node(d)
        history = []
        for t in range(int(self.n_estimators)):
            t_it = time.perf_counter()
            snap = phase_snapshot(ctx)
            wire0, ncoll0 = grower.wire_bytes, grower.hist_collectives
            if self.bootstrap:
                w = poisson1(rng.row_uniform(self.seed, rng.stream_id("bootstrap", t), grows))
            else:
                w = np.ones(len(X))
            rows = np.flatnonzero(w > 0)
            ch = np.empty((K + 1, len(X)))
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
                keys = rng.row_bits(self.seed, rng.stream_id("forest-features", t),
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
        self.ensemble_ = ens
        self.history_ = history
        self.n_iter_ = self.best_iteration_ = len(history)
        self.n_trees_per_iteration_ = 1
        self.fit_seconds_ = time.perf_counter() - t_start
        return self

    def _average(self, X):
        return self.ensemble_.raw_sum(self._check_X(X), self.ensemble_.n_out, average=True)

    def to_model(self):
        self._check_fitted()
        arrays = {"trees": self.ensemble_.to_arrays(), "bins": self.bin_mapper_.to_arrays(),
                  **self._classes_array()}
        info = {"class": type(self).__name__, "n_features": self.n_features_in_,
                "n_trees": self.ensemble_.n_trees}
        return arrays, self.model_params(), info

    def to_json(self) -> dict:
        self._check_fitted()
        return model_json(self.ensemble_, self.bin_mapper_, self.model_params(),
                          {"model": type(self).__name__,
                           "classes": None if self.classes_ is None else self.classes_.tolist()})


class RandomForestClassifier(_RandomForest):
    __doc__ = ("Histogram random forest for classification (Gini), trained across MPI ranks.\n"
               + _RandomForest.__doc__.split("\n", 2)[2])

    def fit(self, X, y, n_classes=None):
        """Fit on this rank's rows (collective); ``n_classes`` checks labels are 0..n_classes-1."""
        return self._fit(X, y, True, n_classes)

    def predict_proba(self, X) -> np.ndarray:
        return self._average(X)

    def predict(self, X) -> np.ndarray:
        return np.asarray(self.classes_)[np.argmax(self.predict_proba(X), axis=1)]


class RandomForestRegressor(_RandomForest):
    __doc__ = ("Histogram random forest for regression (variance reduction), trained across MPI ranks.\n"
               + _RandomForest.__doc__.split("\n", 2)[2])

    def __init__(self, *, max_features=1.0, **kwargs):
        super().__init__(max_features=max_features, **kwargs)

    def fit(self, X, y):
        """Fit on this rank's rows (collective)."""
        return self._fit(X, y, False)

    def predict(self, X) -> np.ndarray:
        return self._average(X)[:, 0]


def from_model(arrays, params, info):
    cls = RandomForestClassifier if info["class"] == "RandomForestClassifier" else RandomForestRegressor
    est = cls(**params)
    est.ensemble_ = Ensemble.from_arrays(arrays["trees"])
    est.bin_mapper_ = BinMapper.from_arrays(arrays["bins"])
    est.classes_ = np.asarray(arrays["classes"]) if "classes" in arrays else None
    if est.classes_ is not None and est.classes_.dtype.kind in "SO":
        est.classes_ = est.classes_.astype(str)
    est.n_features_in_ = int(info["n_features"])
    est.n_trees_per_iteration_ = 1
    return est


# ======================================================================= CLI plug-in
def add_train_arguments(parser, name: str) -> None:
    """Options of ``shardlearn train forest``."""
    parser.formatter_class = _HelpFormatter
    parser.epilog = """\
examples:
  mpiexec -n 4 shardlearn train forest --data data/c --n-estimators 200 --max-depth 16 --out runs/rf.h5
  mpiexec -n 4 shardlearn train forest --data data/r --objective regression --max-features 0.5 \\
      --min-child-samples 5 --out runs/rfr.h5
Trees grow depth-wise (one histogram collective per level); with --max-depth unset on
large data the trees get very deep: set --max-depth or --num-leaves."""
    g = parser.add_argument_group("random forest")
    g.add_argument("--objective", default="classification", choices=["classification", "regression"],
                   help="Gini classification (any number of classes) or variance-reduction regression")
    g.add_argument("--num-class", type=int, default=None,
                   help="classification: labels must be integers 0..NUM_CLASS-1 (None: the distinct labels)")
    g.add_argument("--n-estimators", type=int, default=100, help="number of trees")
    g.add_argument("--num-leaves", type=int, default=None, help="leaves per tree at most (None: no limit)")
    g.add_argument("--max-features", default=None,
                   help="features drawn per node: sqrt, log2, a count or a fraction "
                        "(None: sqrt for classification, all for regression)")
    g.add_argument("--no-bootstrap", action="store_true",
                   help="use every row in every tree instead of Poisson(1) bootstrap weights")
    add_tree_arguments(parser)
    parser.set_defaults(min_child_samples=1)


def train_from_args(name: str, args, ctx) -> dict:
    from ...data.shards import read_shard

    shard = read_shard(args.data, ctx, need_y=True, allow_nan=True)
    mf = args.max_features
    if mf is not None and mf not in ("sqrt", "log2"):
        mf = float(mf) if "." in mf else int(mf)
    kw = dict(n_estimators=args.n_estimators, max_depth=args.max_depth, num_leaves=args.num_leaves,
              min_child_samples=args.min_child_samples, bootstrap=not args.no_bootstrap,
              max_bin=args.max_bin, min_gain_to_split=args.min_gain_to_split,
              hist_reduce=args.hist_reduce, seed=args.seed, comm=ctx, **categorical_kwargs(args))
    if args.objective == "regression":
        est = RandomForestRegressor(max_features=1.0 if mf is None else mf, **kw)
        est.fit(shard.X, shard.y)
    else:
        est = RandomForestClassifier(max_features="sqrt" if mf is None else mf, **kw)
        est.fit(shard.X, shard.y, n_classes=args.num_class)
    ctx.log(f"forest: {shard.n_total} rows x {shard.dataset.n_features} features on {ctx.size} ranks")
    return _save(est, "forest", args, ctx, shard)


def load_estimator(path: str, ctx):
    from .gbdt import load_estimator as load

    return load(path, ctx)


__all__ = ["RandomForestClassifier", "RandomForestRegressor", "LoadedModel"]
