"""One decision tree from the histogram machinery: ``DecisionTreeClassifier`` / ``DecisionTreeRegressor``.

scikit-learn's single tree, grown the way the forests grow theirs (global bins agreed once,
per-node histograms combined across ranks in one collective per step, every rank taking
the same split and partitioning its own rows), so the tree is the same for any number of
ranks. The statistics are those of :mod:`.forest` without the bootstrap: the gradient
channels are ``-w * onehot(y)`` (classification) or ``-w * y`` (regression) with hessian
``w`` (the row weight: ``sample_weight`` times the ``class_weight`` of the row's class),
so :mod:`.split`'s gain is the weighted Gini / variance decrease and a leaf's value is the
weighted class distribution / mean; ``criterion="entropy"`` searches with
:mod:`.criterion` instead.

**Bins, and where they are exact.** scikit-learn splits halfway between two consecutive
distinct values of the node's rows; this tree splits between bins found once for all
nodes (from a row sample keyed by global row, :class:`shardlearn.data.binning.BinMapper`).
By default (``max_bin=None``) a feature with at most :data:`EXACT_MAX_BIN` (65535)
distinct values gets one bin per value, so every threshold scikit-learn could pick is a
candidate (uint16 codes and histograms sized by each feature's distinct count,
:mod:`.exact`: a pass over a node's rows costs what it costs with 255 bins);
a feature with more gets 255 quantile bins, each holding about ``n / 255`` rows: near
the root that costs little (the best exact threshold is at most one bin away), but a
small deep node may find its best split inside one bin and take a worse one, or none.
After growing, each split's threshold moves to the midpoint of its node's gap (the
largest value of the node's rows going left and the smallest going right, one
allreduce: :func:`_gap_midpoints`), where scikit-learn puts it; the partition of the
training rows does not change. So with exact bins the tree is scikit-learn's wherever
no two splits tie (tests/test_decision_tree.py), and rows with equal features always
land together either way. README.md, "Decision trees", has the measured differences.

Growth: ``depthwise`` (a level per collective) or ``bestfirst`` (the largest impurity
decrease first, as scikit-learn does with ``max_leaf_nodes``); without ``max_leaf_nodes``
both grow the same tree. NaN is a missing value: each split learns which side it goes to
(scikit-learn >= 1.3 does the same); with none at a node, later ones go to the child with
more rows.
"""
from __future__ import annotations

import time

import numpy as np

from ...data.binning import BinMapper
from ...errors import ShardlearnError
from ..base import BaseEstimator, ClassifierMixin, Params, RegressorMixin
from .common import FittedEnsemble, check_sample_weight, class_labels, diff, phase_snapshot, prepare_rows
from .criterion import CRITERIA, find_best_splits_entropy
from .exact import ExactBinMapper, ExactGrower
from .grower import HIST_REDUCE, GrowParams, TreeGrower
from .io import ensemble_arrays, model_json, restore_ensemble
from .predict import Ensemble
from .split import SplitParams

GROWTHS = ("depthwise", "bestfirst")
#: ``max_bin=None``: every distinct value of a feature with at most this many (exact
#: thresholds, as scikit-learn's), 255 quantile bins for a feature with more
EXACT_MAX_BIN = 65535
#: splits whose gain is below this fraction of the root's weighted impurity are not made
GAIN_TOL = 1e-10


class _EntropyGrower(TreeGrower):
    """A :class:`~.grower.TreeGrower` whose split search scores by entropy."""

    def _find_best(self, hists, totals, masks):
        return find_best_splits_entropy(hists, totals, self.block_bins, self.params.split, masks)


class _DecisionTree(FittedEnsemble, Params):
    """Shared machinery; use :class:`DecisionTreeClassifier` or :class:`DecisionTreeRegressor`.

    Parameters
    ----------
    criterion : {"gini", "entropy"} (classifier) or "squared_error" (regressor)
    max_depth : int or None
        Depth limit (None: grow until leaves are pure or too small).
    min_samples_leaf : int
        Rows each leaf needs at least.
    min_weight_fraction_leaf : float
        Weight each leaf needs at least, as a fraction (0..0.5) of the total weight
        (``sample_weight`` times ``class_weight``), as scikit-learn's.
    max_leaf_nodes : int or None
        Leaves at most; grown best-first (the largest impurity decrease first).
    min_impurity_decrease : float
        A split must decrease the weighted impurity by at least this, as scikit-learn:
        ``N_t / N * (impurity - N_L / N_t * impurity_L - N_R / N_t * impurity_R)``
        (weights, entropy in bits as scikit-learn's).
    growth : {"depthwise", "bestfirst"} or None
        None: best-first with ``max_leaf_nodes``, else depth-wise (one collective per level).
    class_weight : "balanced", dict or None (classifier)
        Row weight of each class: ``balanced`` is ``n / (K n_k)`` from the global class
        counts; a dict maps labels to weights. Multiplies ``sample_weight``.
    max_bin : int or None, default None
        Value bins per feature; NaN gets its own bin. None: every distinct value of a
        feature with at most :data:`EXACT_MAX_BIN` (65535) of them is a candidate threshold
        (scikit-learn's candidates), 255 quantile bins for a feature with more. 2..255: at
        most that many (quantiles beyond), as the ensembles' ``max_bin``. Above 255 (up to
        65535): at most that many (quantiles beyond), uint16 codes (:mod:`.exact`; CPU
        only, as every ``max_bin=None`` fit: the device histograms are uint8).
    hist_reduce : {"allreduce", "reduce_scatter"}
    random_state : int
        Seed of the binning sample (keyed by global row: the tree does not depend on P).
    comm : mpi4py communicator or shardlearn Context, optional
    verbose : bool
    """

    _criteria = CRITERIA

    def __init__(self, *, criterion="gini", max_depth=None, min_samples_leaf=1, min_weight_fraction_leaf=0.0,
                 max_leaf_nodes=None, min_impurity_decrease=0.0, growth=None, class_weight=None, max_bin=None,
                 hist_reduce="allreduce", random_state=0, comm=None, verbose=False):
        self.criterion = criterion
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.min_weight_fraction_leaf = min_weight_fraction_leaf
        self.max_leaf_nodes = max_leaf_nodes
        self.min_impurity_decrease = min_impurity_decrease
        self.growth = growth
        self.class_weight = class_weight
        self.max_bin = max_bin
        self.hist_reduce = hist_reduce
        self.random_state = random_state
        self.comm = comm
        self.verbose = verbose

    def _check_params(self):
        if self.criterion not in self._criteria:
            raise ShardlearnError(f"criterion must be one of {', '.join(self._criteria)} for "
                                  f"{type(self).__name__}, got {self.criterion!r}")
        if self.max_depth is not None and int(self.max_depth) < 1:
            raise ShardlearnError(f"max_depth must be >= 1 or None, got {self.max_depth}")
        if int(self.min_samples_leaf) < 1:
            raise ShardlearnError(f"min_samples_leaf must be >= 1, got {self.min_samples_leaf}")
        if not 0.0 <= float(self.min_weight_fraction_leaf) <= 0.5:
            raise ShardlearnError(f"min_weight_fraction_leaf must be in [0, 0.5], got {self.min_weight_fraction_leaf}")
        if self.max_leaf_nodes is not None and int(self.max_leaf_nodes) < 2:
            raise ShardlearnError(f"max_leaf_nodes must be >= 2 or None, got {self.max_leaf_nodes}")
        if not float(self.min_impurity_decrease) >= 0:
            raise ShardlearnError(f"min_impurity_decrease must be >= 0, got {self.min_impurity_decrease}")
        if self.growth is not None and self.growth not in GROWTHS:
            raise ShardlearnError(f"growth must be one of {', '.join(GROWTHS)} or None, got {self.growth!r}")
        if self.max_bin is not None and not 2 <= int(self.max_bin) <= ExactBinMapper.MAX_BIN:
            raise ShardlearnError(f"max_bin must be in 2..{ExactBinMapper.MAX_BIN}, got {self.max_bin}")
        if self.hist_reduce not in HIST_REDUCE:
            raise ShardlearnError(f"hist_reduce must be one of {HIST_REDUCE}, got {self.hist_reduce!r}")
        cw = self.class_weight
        if cw is not None and cw != "balanced" and not isinstance(cw, dict):
            raise ShardlearnError(f"class_weight must be 'balanced', a dict or None, got {cw!r}")

    # ------------------------------------------------------------------ fit
    def _fit(self, X, y, classification, sample_weight, rows=None):
        """Fit (collective); ``rows``: on ``X[rows]`` only, without copying it
        (:func:`.common.prepare_rows`)."""
        t_start = time.perf_counter()
        ctx, X, y, grows, n_total, idx, sample_weight = prepare_rows(self.comm, X, y, self.verbose, rows,
                                                                     sample_weight)
        with ctx.guard(f"{type(self).__name__}.fit"):
            return self._fit_ranks(ctx, X, y, grows, n_total, classification, sample_weight, t_start, idx)

    def _fit_ranks(self, ctx, X, y, grows, n_total, classification, sample_weight, t_start, idx=None):
        n = len(y)
        with ctx.collective_errors():
            self._check_params()
            w = np.ones(n) if sample_weight is None else check_sample_weight(sample_weight, n)
        if classification:
            self.classes_, yk = class_labels(ctx, y, None, n_total=n_total, regressor="DecisionTreeRegressor")
            K = len(self.classes_)
            cw = self._class_weights(ctx, yk, K)
            w = w * cw[yk]
        else:
            self.classes_, yk, K = None, y.astype(np.float64), 1
        d = X.shape[1]
        self.n_features_in_ = d
        W = float(ctx.coll.allreduce(np.array([w.sum()]))[0])
        with ctx.collective_errors():
            if not W > 0:
                raise ShardlearnError("every row has weight 0 (sample_weight / class_weight): nothing to learn; "
                                      "give some rows a weight above zero")
        t0 = time.perf_counter()
        with ctx.timers.phase("binning"):
            # more than 255 bins: uint16 codes and ragged histograms (exact.py)
            if self.max_bin is None:
                mapper = ExactBinMapper(EXACT_MAX_BIN, quantile_bins=255, seed=self.random_state)
            elif int(self.max_bin) > 255:
                mapper = ExactBinMapper(int(self.max_bin), seed=self.random_state)
            else:
                mapper = BinMapper(int(self.max_bin), seed=self.random_state)
            keep = w > 0
            if keep.all():
                codes = mapper.fit_transform(X, grows, n_total, ctx, rows=idx)
            else:  # bins from the rows that count: a zero weight is a row left out (the same collectives)
                sel = np.flatnonzero(keep) if idx is None else idx[keep]
                codes = mapper.fit(X, grows[keep], n_total, ctx, rows=sel).transform(X, rows=idx)
        self.binning_seconds_ = time.perf_counter() - t0
        self.bin_mapper_ = mapper
        growth = self.growth or ("bestfirst" if self.max_leaf_nodes is not None else "depthwise")
        # scikit-learn's min_impurity_decrease is per total weight; the gain here is in weight
        # units (and nats for entropy)
        min_gain = float(self.min_impurity_decrease) * W * (np.log(2.0) if self.criterion == "entropy" else 1.0)
        # a gain below GAIN_TOL of the root's weighted impurity is rounding noise, not a split (a
        # pure node's candidates score +-1e-15 with fractional weights, and the noise differs
        # with P); scikit-learn likewise makes a node of impurity <= EPSILON a leaf
        min_gain = max(min_gain, GAIN_TOL * _root_scale(ctx, classification, yk, w, W))
        grow = GrowParams(num_leaves=None if self.max_leaf_nodes is None else int(self.max_leaf_nodes),
                          max_depth=None if self.max_depth is None else int(self.max_depth),
                          growth="leafwise" if growth == "bestfirst" else "depthwise",
                          hist_reduce=self.hist_reduce, learning_rate=1.0,
                          split=SplitParams(0.0, int(self.min_samples_leaf),
                                            max(1e-12, float(self.min_weight_fraction_leaf) * W), min_gain))
        if isinstance(mapper, ExactBinMapper):
            grower = ExactGrower(ctx, codes, mapper.n_bins_, grow, self.criterion)
        else:
            grower_cls = _EntropyGrower if self.criterion == "entropy" else TreeGrower
            grower = grower_cls(ctx, codes, mapper.n_bins_, mapper.n_slots, grow)
        ch = np.empty((K + 1, n))
        if classification:
            ch[:K] = -(yk[None, :] == np.arange(K)[:, None]).astype(np.float64) * w[None, :]
        else:
            ch[0] = -yk * w
        ch[K] = w
        rows = np.flatnonzero(w > 0)
        snap = phase_snapshot(ctx)
        t_it = time.perf_counter()
        tree, _ = grower.grow(ch, rows)
        ens = Ensemble(K)
        # (rows index the fitted rows; with rows= those are X[idx])
        ens.add(tree, mapper, 0, threshold=_gap_midpoints(ctx, tree, mapper, X, rows if idx is None else idx[rows]))
        self.ensemble_ = ens
        leaves = int((tree["feature"] < 0).sum())
        rec = {"iteration": 1, "seconds": time.perf_counter() - t_it, **diff(snap, phase_snapshot(ctx)),
               "leaves": leaves, "depth": int(tree["depth"].max()), "wire_bytes": grower.wire_bytes,
               "hist_collectives": grower.hist_collectives}
        ctx.log(f"tree: {leaves} leaves, depth {rec['depth']}, {grower.hist_collectives} histogram collectives, "
                f"{rec['seconds'] * 1e3:.1f} ms (hist {rec['histogram'] * 1e3:.1f}, comm "
                f"{rec['communication'] * 1e3:.1f}, split {rec['split_search'] * 1e3:.1f}, partition "
                f"{rec['partition'] * 1e3:.1f})", self.verbose or None)
        self.history_ = [rec]
        self.n_iter_ = self.best_iteration_ = 1
        self.n_trees_per_iteration_ = 1
        self.fit_seconds_ = time.perf_counter() - t_start
        return self

    def _class_weights(self, ctx, yk, K) -> np.ndarray:
        """Per-class row weights (collective: balanced needs the global class counts)."""
        cw = self.class_weight
        if cw is None:
            return np.ones(K)
        if cw == "balanced":
            counts = ctx.coll.allreduce(np.bincount(yk, minlength=K).astype(np.float64))
            return counts.sum() / (K * np.maximum(counts, 1.0))
        out = np.ones(K)
        classes = np.asarray(self.classes_)
        with ctx.collective_errors():
            for key, value in cw.items():
                i = _class_position(classes, key)
                if i is None:
                    raise ShardlearnError(f"class_weight names label {key!r}, which is not a class "
                                          f"(classes: {', '.join(map(str, classes.tolist()))})")
                if not (float(value) >= 0 and np.isfinite(float(value))):
                    raise ShardlearnError("class_weight values must be finite and non-negative")
                out[i] = float(value)
        return out

    # -------------------------------------------------------------- predict
    def _values(self, X):
        X = self._check_X(X)
        return self.ensemble_.raw_sum(X, self.ensemble_.n_out)

    def apply(self, X) -> np.ndarray:
        """Index of the leaf each local row ends in (no communication)."""
        return self.ensemble_.apply(self._check_X(X))[:, 0]

    def get_depth(self) -> int:
        self._check_fitted()
        return int(self.ensemble_.trees[0]["depth"].max())

    def get_n_leaves(self) -> int:
        self._check_fitted()
        return int((self.ensemble_.trees[0]["feature"] < 0).sum())

    # ---------------------------------------------------------- model files
    _model_name = "tree"

    def to_model(self) -> tuple[dict, dict, dict]:
        """(arrays, params, info) for :func:`shardlearn.models.io.save_estimator`."""
        self._check_fitted()
        info = {"class": type(self).__name__, "n_features": self.n_features_in_, "n_trees": 1,
                "leaves": self.get_n_leaves(), "depth": self.get_depth()}
        params = self.model_params()
        if isinstance(params.get("class_weight"), dict):   # file params are JSON: string keys
            params["class_weight"] = {str(k): float(v) for k, v in params["class_weight"].items()}
        return ensemble_arrays(self), params, info

    @classmethod
    def from_model(cls, arrays, params, info, comm=None):
        """The fitted estimator a model file describes (see :mod:`shardlearn.models.io`)."""
        klass = DecisionTreeClassifier if info["class"] == "DecisionTreeClassifier" else DecisionTreeRegressor
        est = restore_ensemble(klass, arrays, params, info, comm)
        est.n_trees_per_iteration_ = 1
        return est

    def to_json(self) -> dict:
        self._check_fitted()
        return model_json(self.ensemble_, self.bin_mapper_, self.model_params(),
                          {"model": type(self).__name__,
                           "classes": None if self.classes_ is None else self.classes_.tolist()})


class DecisionTreeClassifier(_DecisionTree, ClassifierMixin, BaseEstimator):
    __doc__ = ("A decision tree classifier (histogram splits) trained across MPI ranks.\n"
               + _DecisionTree.__doc__.split("\n", 2)[2])
    _criteria = ("gini", "entropy")

    def fit(self, X, y, sample_weight=None, *, rows=None):
        """Fit on this rank's rows ``X``, labels ``y`` and optional ``sample_weight`` (collective).
        ``rows``: fit on those local rows only, without copying them."""
        return self._fit(X, y, True, sample_weight, rows)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities of the local rows: the weighted class frequencies of their leaf."""
        return self._values(X)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)
        return np.asarray(self.classes_)[np.argmax(proba, axis=1)]


class DecisionTreeRegressor(_DecisionTree, RegressorMixin, BaseEstimator):
    __doc__ = ("A decision tree regressor (histogram splits, squared error) trained across MPI ranks.\n"
               + _DecisionTree.__doc__.split("\n", 2)[2])
    _criteria = ("squared_error",)

    def __init__(self, *, criterion="squared_error", **kwargs):
        super().__init__(criterion=criterion, **kwargs)

    def _check_params(self):
        super()._check_params()
        if self.class_weight is not None:
            raise ShardlearnError("class_weight is for classifiers; DecisionTreeRegressor takes sample_weight")

    def fit(self, X, y, sample_weight=None, *, rows=None):
        """Fit on this rank's rows ``X``, targets ``y`` and optional ``sample_weight`` (collective).
        ``rows``: fit on those local rows only, without copying them."""
        return self._fit(X, y, False, sample_weight, rows)

    def predict(self, X) -> np.ndarray:
        return self._values(X)[:, 0]


def _root_scale(ctx, classification, yk, w, W) -> float:
    """An upper bound of the root's weighted impurity: ``W`` (Gini, entropy up to log K), or
    the weighted sum of squares about the mean (regression; one allreduce)."""
    if classification:
        return W
    s = ctx.coll.allreduce(np.array([float(w @ yk), float(w @ (yk * yk))]))
    return max(0.0, s[1] - s[0] * s[0] / W)


def _gap_midpoints(ctx, tree: dict, mapper, X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each split's threshold moved to the midpoint of its node's gap, as scikit-learn's
    (collective: one allreduce).

    The grower picks a bin; every threshold between the largest value of the node's rows
    that go left (``a``) and the smallest that go right (``b``) makes the same partition of
    the training rows, and scikit-learn puts it at ``a / 2 + b / 2`` (``a`` if that rounds
    to ``b``). The rows ``rows`` (weight > 0) are routed down by the bin thresholds (which
    partition them as the bins did), ``a`` and ``b`` per node are a max and a min over
    every rank (exact, so the same for any P); a split with no non-missing row on one
    side keeps its bin threshold.
    """
    feat, left, right, ml = tree["feature"], tree["left"], tree["right"], tree["missing_left"].astype(bool)
    internal = feat >= 0
    thr = np.zeros(len(feat))
    thr[internal] = mapper.threshold_value(feat[internal], tree["bin"][internal])
    lo = np.full(len(feat), -np.inf)      # largest non-missing value sent left
    hi = np.full(len(feat), np.inf)       # smallest non-missing value sent right
    active, node = np.asarray(rows, dtype=np.int64), np.zeros(len(rows), dtype=np.int64)
    while active.size:
        keep = feat[node] >= 0
        active, node = active[keep], node[keep]
        if not active.size:
            break
        x = X[active, feat[node]]
        nan = np.isnan(x)
        go_left = np.where(nan, ml[node], x <= thr[node])
        sel = go_left & ~nan
        np.maximum.at(lo, node[sel], x[sel])
        sel = ~go_left & ~nan
        np.minimum.at(hi, node[sel], x[sel])
        node = np.where(go_left, left[node], right[node])
    both = ctx.coll.allreduce(np.concatenate([lo, -hi]), op="max")
    a, b = both[:len(feat)], -both[len(feat):]
    gap = internal & np.isfinite(a) & np.isfinite(b)
    mid = a[gap] / 2.0 + b[gap] / 2.0
    thr[gap] = np.where((mid == b[gap]) | ~np.isfinite(mid), a[gap], mid)
    return thr


def export_text(tree: _DecisionTree, feature_names=None, decimals: int = 2, max_depth: int = 10) -> str:
    """A text rendering of a fitted tree, as ``sklearn.tree.export_text``.

    A threshold ``t`` sends ``x <= t`` left; a side that takes missing values (NaN) says
    so where the feature held any in training. Deeper branches than ``max_depth`` are
    summarised as scikit-learn does (``truncated branch of depth N``).
    """
    tree._check_fitted()
    t = tree.ensemble_.trees[0]
    d = tree.n_features_in_
    names = [f"feature_{i}" for i in range(d)] if feature_names is None else list(feature_names)
    if len(names) != d:
        raise ShardlearnError(f"feature_names has {len(names)} names; the tree has {d} features")
    has_missing = getattr(tree.bin_mapper_, "has_missing_", np.zeros(d, bool))
    classes = tree.classes_
    lines = []

    def leaf_text(i):
        v = t["value"][i]
        if classes is None:
            return f"value: [{v[0]:.{decimals}f}]"
        return f"class: {classes[int(np.argmax(v))]}"

    def subtree_depth(i):
        if t["feature"][i] < 0:
            return 0
        return 1 + max(subtree_depth(int(t["left"][i])), subtree_depth(int(t["right"][i])))

    def rec(i, depth):
        indent = "|   " * depth + "|--- "
        f = int(t["feature"][i])
        if f < 0:
            lines.append(indent + leaf_text(i))
            return
        if depth > max_depth:
            lines.append("|   " * depth + f"|--- truncated branch of depth {subtree_depth(i)}")
            return
        thr = float(t["threshold"][i])
        nan_left = bool(t["missing_left"][i]) and has_missing[f]
        nan_right = not bool(t["missing_left"][i]) and has_missing[f]
        lines.append(f"{indent}{names[f]} <= {thr:.{decimals}f}" + (" or NaN" if nan_left else ""))
        rec(int(t["left"][i]), depth + 1)
        lines.append(f"{indent}{names[f]} >  {thr:.{decimals}f}" + (" or NaN" if nan_right else ""))
        rec(int(t["right"][i]), depth + 1)

    rec(0, 0)
    return "\n".join(lines) + "\n"


def _class_position(classes: np.ndarray, key):
    """Index of label ``key`` in ``classes`` (numbers compare by value, "1" names 1), or None."""
    if classes.dtype.kind in "iufb":
        try:
            hit = np.flatnonzero(classes == float(key))
        except (TypeError, ValueError):
            return None
    else:
        hit = np.flatnonzero(classes.astype(str) == str(key))
    return int(hit[0]) if len(hit) else None


__all__ = ["DecisionTreeClassifier", "DecisionTreeRegressor", "export_text"]
