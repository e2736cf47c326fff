"""Distributed histogram gradient boosting: ``GradientBoostingClassifier`` / ``Regressor``.

Class names follow scikit-learn; hyper-parameter names follow LightGBM (``num_leaves``,
``min_child_samples``, ``lambda_l2``, ``feature_fraction``, ``bagging_fraction``...),
with LightGBM's defaults, so a LightGBM user can read them directly.

Every rank calls ``fit(X_local, y_local)`` with its own rows (in rank order: rank r's
rows follow rank r-1's). Bin edges are agreed once; then each tree is grown by
:class:`~.grower.TreeGrower` (one histogram collective per split, or per level).
Row-dependent random draws (validation hold-out, bagging) are keyed by global row
index, so the model does not depend on the number of ranks.

Objectives: ``regression`` (L2), ``binary`` (log-loss), ``multiclass`` (softmax, one
tree per class per iteration, hessian ``K/(K-1) p(1-p)`` as in LightGBM). The initial
score is the label mean / log-odds / log class priors (LightGBM's boost_from_average).
Each tree reads the rows' gradients and hessians in float32, as LightGBM (``score_t``) and
scikit-learn (``G_H_DTYPE``) keep them: computed in float64, rounded once, summed into
float64 histograms; 8 bytes a training row instead of 16 (the scores stay float64).

Categorical features (``categorical_features``) are split as LightGBM does, one category
against the rest or by gradient-ratio-sorted sets of categories (:mod:`.categorical`).
"""
from __future__ import annotations

import time

import numpy as np
from scipy.special import expit

from ... import metrics, rng
from ...backend import compiled_kernels
from ...data.binning import BinMapper
from ...errors import ShardlearnError
from ...util import faults
from ...util.rowsel import RowView, take_chunks
from ..base import BaseEstimator, ClassifierMixin, Params, RegressorMixin
from .bincache import fit_bins
from .categorical import cat_params, check_categorical_params
from .common import (FittedEnsemble, check_histogram_pool_size, check_sample_weight, check_weight_total,
                     class_labels, diff, phase_snapshot, prepare_rows, resolve_categorical, sample_features)
from .grower import GROWTH, HIST_REDUCE, GrowParams, TreeGrower, compiled_host
from .io import ensemble_arrays, model_json, restore_ensemble
from .predict import Ensemble, replay_scores, tree_values
from .quantize import GRAD_BITS, Quantizer, agree_max, exact_class_weights, exact_mean, renew_leaf_values
from .split import SplitParams

METRICS = {"regression": ("rmse",), "binary": ("logloss", "auc"), "multiclass": ("logloss",)}
HIGHER_IS_BETTER = {"auc": True, "logloss": False, "rmse": False}


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _softmax(s):
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class _GradientBoosting(FittedEnsemble, Params):
    """Shared machinery; use :class:`GradientBoostingClassifier` or :class:`GradientBoostingRegressor`.

    Parameters
    ----------
    n_estimators : int
        Boosting iterations (trees per class).
    learning_rate : float
        Shrinkage of every leaf value.
    num_leaves : int
        Leaves per tree (leaf-wise growth stops there).
    max_depth : int or None
        Depth limit (None or <= 0: none).
    growth : {"leafwise", "depthwise"}
        Best-first (LightGBM) or level by level (one histogram collective per level).
    max_bin : int
        Value bins per feature (<= 255); NaN gets its own bin.
    min_child_samples : int
        Rows a leaf needs at least (LightGBM's ``min_data_in_leaf``).
    min_sum_hessian : float
        Hessian sum a leaf needs at least.
    lambda_l2 : float
        L2 penalty on leaf values.
    min_gain_to_split : float
    feature_fraction : float
        Fraction of features drawn for each tree.
    bagging_fraction : float
        Fraction of rows drawn (keyed by global row) every ``bagging_freq`` iterations.
    bagging_freq : int
        0 disables bagging.
    validation_fraction : float
        Rows held out (by global row index) for validation metrics / early stopping.
    early_stopping_rounds : int or None
        Stop when the validation metric has not improved for this many iterations;
        the model keeps the best iteration.
    metric : {"logloss", "auc", "rmse"} or None
        Validation metric (default: logloss for classification, rmse for regression).
    hist_reduce : {"allreduce", "reduce_scatter"}
        How the ranks combine histograms.
    histogram_pool_size : float
        MiB of open-leaf histograms each rank keeps at most (LightGBM's name and unit);
        negative (default): no bound beyond the leaves that can still be split. A leaf
        split without its histogram has both children's built from their rows instead of
        one and a subtraction: a bound trades histogram time for memory, and changes the
        tree only in the rounding of those sums (quantized_grad: not at all).
    quantized_grad : bool
        LightGBM's ``use_quantized_grad``: gradients and hessians rounded stochastically
        (keyed by iteration and global row) to ``2**grad_bits`` levels and summed as
        integers, so histograms are exact: the model is bit-identical for any number of
        ranks, topology and ``hist_reduce``, and the histograms travel packed in 8 (or 4)
        bytes per bin instead of 24 (:mod:`.quantize`).
    grad_bits : int
        2..16; ``2**grad_bits`` is LightGBM's ``num_grad_quant_bins`` (default 2: its 4).
    quant_train_renew_leaf : bool
        With ``quantized_grad``, leaf values from the exact gradients (exact fixed-point
        sums) instead of the quantized ones. LightGBM's name; on by default here (LightGBM:
        off), since it costs one small collective per tree and keeps the accuracy.
    categorical_features : list of int, bool mask of length d, or None
        Columns holding non-negative integer category codes (NaN: missing). Each
        category gets its own bin (the ``max_bin - 1`` most frequent; rarer and unseen
        categories go with missing values, always to the right child).
    max_cat_to_onehot : int
        Features with at most this many bins (categories + the missing bin) are split
        one category against the rest; others by sorted gradient statistics.
    cat_smooth : float
        Added to the hessian sum when sorting categories by ``G / (H + cat_smooth)``;
        categories with fewer rows than this are left out of the sorted scan.
    cat_l2 : float
        Extra L2 penalty for many-vs-many categorical splits (gain and child values).
    max_cat_threshold : int
        Categories in the left set of a many-vs-many split at most.
    min_data_per_group : int
        Rows per group of categories at least (and on the right side of the split).
    random_state : int
        Seed of every random draw (validation split, bagging, feature fraction, binning
        sample); draws are keyed by global row, so the model does not depend on P.
    comm : mpi4py communicator or shardlearn Context, optional (default COMM_WORLD)
    verbose : bool
        Rank 0 logs one line per iteration.
    """

    def __init__(self, *, n_estimators=100, learning_rate=0.1, num_leaves=31, max_depth=None,
                 growth="leafwise", max_bin=255, min_child_samples=20, min_sum_hessian=1e-3,
                 lambda_l2=0.0, min_gain_to_split=0.0, feature_fraction=1.0, bagging_fraction=1.0,
                 bagging_freq=0, validation_fraction=0.0, early_stopping_rounds=None, metric=None,
                 hist_reduce="allreduce", histogram_pool_size=-1.0, quantized_grad=False, grad_bits=2,
                 quant_train_renew_leaf=True,
                 categorical_features=None, max_cat_to_onehot=4, cat_smooth=10.0,
                 cat_l2=10.0, max_cat_threshold=32, min_data_per_group=100, random_state=0, comm=None, verbose=False):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.max_depth = max_depth
        self.growth = growth
        self.max_bin = max_bin
        self.min_child_samples = min_child_samples
        self.min_sum_hessian = min_sum_hessian
        self.lambda_l2 = lambda_l2
        self.min_gain_to_split = min_gain_to_split
        self.feature_fraction = feature_fraction
        self.bagging_fraction = bagging_fraction
        self.bagging_freq = bagging_freq
        self.validation_fraction = validation_fraction
        self.early_stopping_rounds = early_stopping_rounds
        self.metric = metric
        self.hist_reduce = hist_reduce
        self.histogram_pool_size = histogram_pool_size
        self.quantized_grad = quantized_grad
        self.grad_bits = grad_bits
        self.quant_train_renew_leaf = quant_train_renew_leaf
        self.categorical_features = categorical_features
        self.max_cat_to_onehot = max_cat_to_onehot
        self.cat_smooth = cat_smooth
        self.cat_l2 = cat_l2
        self.max_cat_threshold = max_cat_threshold
        self.min_data_per_group = min_data_per_group
        self.random_state = random_state
        self.comm = comm
        self.verbose = verbose

    # --------------------------------------------------------------- checks
    def _check_params(self, objective):
        def bad(msg):
            raise ShardlearnError(msg)

        if int(self.n_estimators) < 1:
            bad(f"n_estimators must be >= 1, got {self.n_estimators}")
        if not self.learning_rate > 0:
            bad(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.num_leaves is not None and int(self.num_leaves) < 2:
            bad(f"num_leaves must be >= 2, got {self.num_leaves}")
        if not 2 <= int(self.max_bin) <= 255:
            bad(f"max_bin must be in 2..255, got {self.max_bin}")
        if self.growth not in GROWTH:
            bad(f"growth must be one of {GROWTH}, got {self.growth!r}")
        if self.quantized_grad and not (isinstance(self.grad_bits, (int, np.integer))
                                        and GRAD_BITS[0] <= self.grad_bits <= GRAD_BITS[1]):
            bad(f"grad_bits must be an integer in {GRAD_BITS[0]}..{GRAD_BITS[1]}, got {self.grad_bits!r}")
        if self.hist_reduce not in HIST_REDUCE:
            bad(f"hist_reduce must be one of {HIST_REDUCE}, got {self.hist_reduce!r}")
        check_histogram_pool_size(self.histogram_pool_size)
        for name in ("feature_fraction", "bagging_fraction"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                bad(f"{name} must be in (0, 1], got {v}")
        if int(self.bagging_freq) < 0:
            bad(f"bagging_freq must be >= 0 (0: no bagging), got {self.bagging_freq}")
        if not 0 <= self.validation_fraction < 1:
            bad(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if self.lambda_l2 < 0 or self.min_sum_hessian < 0 or self.min_child_samples < 0:
            bad("lambda_l2, min_sum_hessian and min_child_samples must be >= 0")
        if self.early_stopping_rounds and not self.validation_fraction > 0:
            bad("early stopping needs a validation set: set validation_fraction > 0")
        if self.metric is not None and self.metric not in METRICS[objective]:
            bad(f"metric {self.metric!r} does not fit objective {objective}: use one of {METRICS[objective]}")
        check_categorical_params(self)

    # ------------------------------------------------------------------ fit
    def _fit(self, X, y, objective, n_classes=None, checkpoint=None, sample_weight=None, rows=None):
        """Fit (collective). ``checkpoint``: a :class:`shardlearn.checkpoint.Checkpoint`, or None.

        With a checkpoint, a step is one boosting iteration (its K trees). The state saved
        is global: the trees so far, the bins (a resumed fit reuses them instead of
        binning again), the initial score, and the early-stopping state (best value and
        iteration, iterations since, the per-iteration history); the classes and the
        objective are part of the fingerprint. The per-row boosting scores are rebuilt
        from the trees (:func:`.predict.replay_scores`, bit-identical to the accumulated
        ones), and bagging and feature draws are keyed by (seed, iteration), so a fit
        resumed on the same number of ranks ends with the same model bit for bit, and on
        another number of ranks with the same model up to the rounding of histogram sums.

        ``rows`` (a boolean mask or increasing indices of the local rows): fit on
        ``X[rows]``, ``y[rows]`` (and ``sample_weight[rows]``) without copying ``X``
        (:func:`.common.prepare_rows`); model selection's folds. ``X`` itself is never
        copied: the training rows are binned through an index, and only the validation
        rows (``validation_fraction``) are gathered.
        """
        t_start = time.perf_counter()
        ctx, X, y, grows, n_total, idx, sample_weight = prepare_rows(self.comm, X, y, self.verbose, rows,
                                                                     sample_weight)
        self.ctx_ = ctx
        # handed over in a list, so that _fit_ranks can let go of them (with rows=, y is a
        # copy of the selected labels, idx the int64 indices of the rows) once it has read
        # them: no frame here holds them
        held = [y, grows, idx]
        del y, grows, idx
        with ctx.guard(f"{type(self).__name__}.fit"):
            try:
                return self._fit_ranks(ctx, X, held, None, n_total, objective, n_classes, checkpoint, t_start,
                                       sample_weight)
            finally:
                if checkpoint is not None:
                    checkpoint.finish()     # the stop signals get their handlers back, also after a stop

    def _fit_ranks(self, ctx, X, y, grows, n_total, objective, n_classes, checkpoint, t_start,
                   sample_weight=None, idx=None):
        """The collective part of fit, after the input checks of :func:`.common.prepare`.

        ``sample_weight`` multiplies every row's gradient and hessian (and weighs the initial
        score); rows of weight 0 grow no tree and have their scores updated like out-of-bag rows.
        ``idx``: the rows of ``X`` that ``y``, ``grows`` and ``sample_weight`` describe (None: all).
        ``y`` may be the list ``[y, grows]`` or ``[y, grows, idx]`` (``grows`` then None):
        emptied here, so that the labels, global rows and row indices are freed once read.
        """
        if isinstance(y, list):
            box = y
            y, grows, *rest = box
            if rest:
                idx = rest[0]
            box.clear()
            del box, rest
        n = len(y)
        with ctx.collective_errors():
            self._check_params(objective)
            sw = None if sample_weight is None else check_sample_weight(sample_weight, n)
        check_weight_total(ctx, sw, n)  # every rank, with or without weights: no rank waits
        if objective == "regression":
            K = 1
            yk = y.astype(np.float64)
            self.classes_ = None
        else:
            # class indices in the smallest unsigned type (uint8 up to 256 classes): a byte a
            # row, and the binary gradient kernel reads them as they are
            self.classes_, yk = class_labels(ctx, y, n_classes, n_total=n_total,
                                             regressor="GradientBoostingRegressor", compact=True)
            K = 1 if len(self.classes_) == 2 else len(self.classes_)
            if objective == "binary" and len(self.classes_) > 2:
                with ctx.collective_errors():
                    raise ShardlearnError(f"objective binary needs 2 classes, y has {len(self.classes_)}: "
                                          "use objective multiclass")
            objective = "binary" if K == 1 else "multiclass"
        y = None                # read (yk): the labels are not held twice
        self.objective_ = objective
        self.n_features_in_ = X.shape[1]
        with ctx.collective_errors():
            cat = resolve_categorical(self.categorical_features, X.shape[1])
        metric = self.metric or METRICS[objective][0]
        self.metric_ = metric
        # validation rows: keyed by global row index
        if self.validation_fraction > 0:
            is_val = rng.row_uniform(self.random_state, rng.stream_id("validation"), grows) < self.validation_fraction
        else:
            is_val = np.zeros(n, dtype=bool)
        # the training rows of X by index (tr; None: every row of X), never a copy of X
        tr = idx
        if is_val.any():
            tr = np.flatnonzero(~is_val) if idx is None else idx[~is_val]
            ytr, gtr = yk[~is_val], grows[~is_val]
            swtr = None if sw is None else sw[~is_val]
        else:
            ytr, gtr, swtr = yk, grows, sw
        Xva, yva = X.take(np.flatnonzero(is_val) if idx is None else idx[is_val], axis=0), yk[is_val]
        is_val = yk = None      # read: ytr and yva hold the labels
        n_tr = len(ytr)
        n_train = int(ctx.coll.allreduce(np.array([n_tr], dtype=np.int64))[0])
        with ctx.collective_errors():
            if n_train == 0:
                raise ShardlearnError("no training rows left after the validation hold-out")
        state = None
        if checkpoint is not None:
            state = checkpoint.start(ctx, type(self).__name__, self.model_params(),
                                     X if idx is None else RowView(X, idx), extra_fingerprint={
                "objective": objective, "classes": None if self.classes_ is None else self.classes_.tolist()})
        t0 = time.perf_counter()
        row_major = compiled_host(ctx, int(self.max_bin) + 1)    # the layout the grower reads: no copy
        with ctx.timers.phase("binning"):
            if state is None:
                mapper, codes = fit_bins(self, X, gtr, n_train, ctx, tr, cat, row_major)   # a search's folds: bincache
            else:  # the saved bins: no sample, no collective, the same codes
                mapper = BinMapper.from_arrays(state["bins"])
                codes = mapper.transform(X, rows=tr, row_major=row_major)
        self.binning_seconds_ = time.perf_counter() - t0
        if not (self.bagging_freq and self.bagging_fraction < 1) and not self.quantized_grad:
            gtr = grows = None  # the global rows key only the binning sample, bagging and quantization
        self.bin_mapper_ = mapper
        # what tree prediction reads: categorical columns as bin codes (X itself without any)
        Xva = mapper.encode(Xva)
        bagged = self.bagging_freq and self.bagging_fraction < 1
        keep = None if swtr is None or (swtr > 0).all() else swtr > 0   # rows of weight 0 grow no tree

        def add_tree_values(t, sub, Fk):
            """``Fk[sub] += `` tree ``t``'s values of the training rows ``sub`` (None: all), read
            from X a chunk at a time (categorical columns as bin codes)."""
            rows_x = tr if sub is None else (sub if tr is None else tr[sub])
            for lo, hi, chunk in take_chunks(X, rows_x):
                Fk[slice(lo, hi) if sub is None else sub[lo:hi]] += tree_values(t, mapper.encode(chunk))[:, 0]
        # initial score (saved in checkpoints: a sum over ranks, so it depends on P in the last bits)
        if state is not None:
            init = np.asarray(state["init_score"], dtype=np.float64)
        elif objective == "regression" and self.quantized_grad:
            init = np.array([exact_mean(ctx, ytr, n_train, swtr)])     # the same bits for any P
        elif objective == "regression":
            wsum = float(len(ytr)) if swtr is None else swtr.sum()
            s = ctx.coll.allreduce(np.array([ytr.sum() if swtr is None else swtr @ ytr, wsum], dtype=np.float64))
            init = np.array([s[0] / s[1]])
        else:
            n_cls = 2 if K == 1 else K
            if self.quantized_grad and swtr is not None:    # weighted class sums, the same bits for any P
                cnt = exact_class_weights(ctx, ytr, swtr, n_cls, n_train)
            else:
                cnt = ctx.coll.allreduce(np.bincount(ytr, weights=swtr, minlength=n_cls).astype(np.float64))
            prior = np.clip(cnt / cnt.sum(), 1e-15, 1 - 1e-15)
            init = np.array([np.log(prior[1] / prior[0])]) if K == 1 else np.log(prior)
        self.init_score_ = init
        F = np.tile(init, (n_tr, 1))
        Fva = np.tile(init, (len(Xva), 1))
        ens = Ensemble(1)
        history, best, best_iter, since_best, first = [], None, 0, 0, 0
        if state is not None:
            # per-row state from the global one: the boosting scores, tree by tree in fit order
            ens = Ensemble.from_arrays(state["trees"])
            ens._flat = None                # rebuilt from the trees, as in an uninterrupted fit
            for t, k in zip(ens.trees, ens.tree_class):     # as replay_scores, the rows by chunks
                add_tree_values(t, None, F[:, k])
            replay_scores(ens, Xva, Fva)
            history = list(state["history"])
            best, best_iter, since_best = state["best"], int(state["best_iter"]), int(state["since_best"])
            first = int(state["_step"])
            ctx.log(f"resuming from iteration {first} of {int(self.n_estimators)} ({checkpoint.directory})")
        Ytr = None if objective != "multiclass" else (ytr[:, None] == np.arange(K)[None, :])

        grow = GrowParams(num_leaves=self.num_leaves,
                          max_depth=self.max_depth if self.max_depth and self.max_depth > 0 else None,
                          growth=self.growth, hist_reduce=self.hist_reduce,
                          histogram_pool_size=float(self.histogram_pool_size),   # checked in _check_params
                          learning_rate=self.learning_rate,
                          split=SplitParams(self.lambda_l2, self.min_child_samples, self.min_sum_hessian,
                                            self.min_gain_to_split),
                          categorical=cat_params(self, cat))
        grower = TreeGrower(ctx, codes, mapper.n_bins_, mapper.n_slots, grow)
        codes = None    # the grower holds them (row-major: the same array): not held twice
        quantizer = None
        if self.quantized_grad:
            # the packed kernels need the compiled host histogram (on a device: the float path)
            qk = (compiled_kernels("models.trees._quant_kernels")
                  if grower.chist is not None and not grower.device else None)
            # a constant hessian (no hessian field in the packing): unweighted L2 only
            quantizer = Quantizer(self.grad_bits, self.random_state, n_train,
                                  objective == "regression" and swtr is None, qk)
        # binary and L2 gradients in one compiled pass (the same bits as the NumPy forms below),
        # with their local maxima (the quantization scales)
        gk = compiled_kernels("models.trees._quant_kernels") if objective != "multiclass" else None
        # fused: the kernel writes the gradients and hessians straight into the tree's channels
        # (no per-row copy of G and H; the same values as copying them in)
        fused = gk is not None and quantizer is None
        # the trees' channels in float32 (see the module docstring); the quantized path reads
        # its own float64 G and H
        CH = np.float32
        ch = None
        if gk is not None:
            # the labels the gradients read: binary 0/1 class indices as uint8 (a byte a row;
            # the kernel converts them exactly), regression targets as float64
            y_u8 = int(objective == "binary")
            ylab = np.ascontiguousarray(ytr, dtype=np.uint8 if y_u8 else np.float64)
            w64 = np.empty(0) if swtr is None else np.ascontiguousarray(swtr, dtype=np.float64)
            has_h = objective == "binary" or swtr is not None
            if fused:
                ch = np.empty((2, n_tr), dtype=CH)
                G = ch[0:1]
                H = ch[1:2] if has_h else None
                if H is None:
                    ch[1] = 1.0
            else:
                G = np.empty((1, n_tr))
                H = np.empty((1, n_tr)) if has_h else None
        rows = None if keep is None else np.flatnonzero(keep)   # None: every row (the grower's own arange)
        if keep is None and not bagged:
            # every tree grows on every training row: add_tree_values (the scores of rows a tree
            # did not grow on) is not called again, so the training rows' indices are let go
            tr = idx = None
        in_bag = None
        grown = keep                    # rows the trees grow on (None: all)
        d = X.shape[1]
        log_metrics = ctx.verbose and ctx.rank == 0 or self.verbose
        log_metrics = bool(ctx.coll.allreduce(np.array([int(log_metrics)], dtype=np.int64), op="max")[0])
        if gk is not None and not log_metrics:
            ytr = None          # the gradients read ylab: no second per-row copy of the labels
        self.tree_stats_ = []
        for it in range(first, int(self.n_estimators)):
            t_it = time.perf_counter()
            snap = phase_snapshot(ctx)
            wire0, ncoll0 = grower.wire_bytes, grower.hist_collectives
            # gradients and hessians of the current scores
            with ctx.timers.phase("gradients"):
                if gk is not None:
                    local_max = gk.gradients(F, K, 0, ylab, w64, int(objective == "binary"), G[0],
                                             np.empty(0, dtype=G.dtype) if H is None else H[0], y_u8,
                                             int(G.dtype == np.float32))
                elif objective == "regression":
                    G = (F[:, 0] - ytr)[None]
                    H = None
                elif objective == "binary":
                    p = expit(F[:, 0])          # 3x faster than the tanh form here
                    G = (p - ytr)[None]
                    H = (p * (1.0 - p))[None]
                else:
                    p = _softmax(F)
                    G = (p - Ytr).T
                    H = (K / (K - 1.0)) * (p * (1.0 - p)).T
                if swtr is not None and gk is None:
                    G = G * swtr[None]
                    H = np.broadcast_to(swtr[None], G.shape) if H is None else H * swtr[None]
            if bagged and (it % self.bagging_freq == 0 or in_bag is None):   # None: resumed mid-round
                u = rng.row_uniform(self.random_state, rng.stream_id("bagging", it // self.bagging_freq), gtr)
                in_bag = u < self.bagging_fraction
                grown = in_bag if keep is None else in_bag & keep
                rows = np.flatnonzero(grown)
            feats = sample_features(self.random_state, ("feature_fraction", it), d, self.feature_fraction)
            mask = None
            if len(feats) < d:
                m = np.zeros(d, dtype=bool)
                m[feats] = True
                mask = lambda ids, m=m: np.broadcast_to(m, (len(ids), d))  # noqa: E731
            if quantizer is not None:
                with ctx.timers.phase("quantize"):     # the scales: one max-allreduce
                    gmax, hmax = agree_max(ctx, G, H, local_max if gk is not None else None)
            for k in range(K):
                if fused:
                    tq = None       # ch already holds G[0] and H[0] (or 1.0)
                elif quantizer is None:
                    ch, tq = np.empty((2, n_tr), dtype=CH), None
                    ch[0] = G[k]
                    ch[1] = 1.0 if H is None else H[k]
                else:
                    with ctx.timers.phase("quantize"):
                        ch, tq = None, quantizer.tree(G[k], None if H is None else H[k], gtr, it, k, gmax[k], hmax[k])
                tree, leaf_rows = grower.grow(ch, rows, hess_is_count=H is None,
                                              hist_features=feats if mask is not None else None,
                                              node_mask=mask, quant=tq)
                if tq is not None and self.quant_train_renew_leaf:
                    with ctx.timers.phase("renew"):
                        renew_leaf_values(ctx, tree["value"][:, 0], leaf_rows, G[k], None if H is None else H[k],
                                          grower.last_l2, self.learning_rate, gmax[k], hmax[k], n_train,
                                          kernels=gk, perm=grower.last_perm, spans=grower.last_spans)
                ens.add(tree, mapper, k)
                t = ens.trees[-1]
                with ctx.timers.phase("update"):
                    grower.add_leaf_values(F, k, tree["value"][:, 0], leaf_rows)
                    if grown is not None and not grown.all():
                        add_tree_values(t, np.flatnonzero(~grown), F[:, k])
                    if len(Xva):
                        Fva[:, k] += tree_values(t, Xva)[:, 0]
            step = diff(snap, phase_snapshot(ctx))
            rec = {"iteration": it + 1, "seconds": time.perf_counter() - t_it, **step,
                   "wire_bytes": grower.wire_bytes - wire0, "hist_collectives": grower.hist_collectives - ncoll0,
                   "leaves": int((ens.trees[-1]["feature"] < 0).sum())}
            if log_metrics or self.early_stopping_rounds:
                if log_metrics:
                    rec["train_" + metric] = self._metric(ctx, metric, objective, ytr, F)
                if len(Xva) or self.validation_fraction > 0:
                    rec["valid_" + metric] = self._metric(ctx, metric, objective, yva, Fva)
            history.append(rec)
            if log_metrics:
                ctx.log(_format_line(rec, metric))
            if self.early_stopping_rounds:
                v = rec["valid_" + metric]
                better = best is None or (v > best if HIGHER_IS_BETTER[metric] else v < best)
                if better:
                    best, best_iter, since_best = v, it + 1, 0
                else:
                    since_best += 1
                    if since_best >= self.early_stopping_rounds:
                        ctx.log(f"early stopping: no {metric} improvement for {since_best} iterations; "
                                f"best iteration {best_iter} ({metric}={best:.6g})")
                        break
            if checkpoint is not None:
                checkpoint.step(it + 1, lambda: {
                    "trees": ens.to_arrays(), "bins": mapper.to_arrays(), "init_score": init,
                    "history": history, "best": best, "best_iter": best_iter, "since_best": since_best})
            faults.check("step")
        if self.early_stopping_rounds and best_iter:
            ens.truncate(best_iter * K)
            self.best_iteration_ = best_iter
        else:
            self.best_iteration_ = len(history)
        self.n_iter_ = len(history)
        self.ensemble_ = ens
        self.n_trees_per_iteration_ = K
        self.history_ = history
        self.fit_seconds_ = time.perf_counter() - t_start
        return self

    @staticmethod
    def _metric(ctx, metric, objective, y, F):
        if metric == "rmse":
            return metrics.rmse(ctx, y, F[:, 0])
        if metric == "auc":
            return metrics.roc_auc(ctx, y, F[:, 0])
        proba = _sigmoid(F[:, 0]) if objective == "binary" else _softmax(F)
        return metrics.log_loss(ctx, y, proba)

    # -------------------------------------------------------------- predict
    def raw_predict(self, X) -> np.ndarray:
        """Raw scores (n, K): init score plus the sum of the tree values (local rows, no collective)."""
        X = self._check_X(X)
        return self.init_score_[None, :] + self.ensemble_.raw_sum(X, self.n_trees_per_iteration_)

    # ---------------------------------------------------------- persistence
    _model_name = "gbdt"

    def to_model(self) -> tuple[dict, dict, dict]:
        """(arrays, params, info) for :func:`shardlearn.persist.save_model`."""
        self._check_fitted()
        arrays = {**ensemble_arrays(self), "init_score": self.init_score_}
        info = {"objective": self.objective_, "n_features": self.n_features_in_,
                "n_iter": self.n_iter_, "best_iteration": self.best_iteration_,
                "n_trees": self.ensemble_.n_trees, "metric": self.metric_,
                "class": type(self).__name__, "K": self.n_trees_per_iteration_}
        return arrays, self.model_params(), info

    @classmethod
    def from_model(cls, arrays, params, info, comm=None):
        """The fitted estimator a model file describes (see :mod:`shardlearn.models.io`)."""
        klass = (GradientBoostingClassifier if info["class"] == "GradientBoostingClassifier"
                 else GradientBoostingRegressor)
        est = restore_ensemble(klass, arrays, params, info, comm)
        est.init_score_ = np.asarray(arrays["init_score"], dtype=np.float64)
        est.objective_ = info["objective"]
        est.n_iter_, est.best_iteration_ = info["n_iter"], info["best_iteration"]
        est.metric_ = info["metric"]
        est.n_trees_per_iteration_ = int(info["K"])
        return est

    def to_json(self) -> dict:
        """A human-readable dump: parameters, bins summary and every tree's nodes."""
        self._check_fitted()
        return model_json(self.ensemble_, self.bin_mapper_, self.model_params(),
                          {"objective": self.objective_, "init_score": self.init_score_.tolist(),
                           "classes": None if self.classes_ is None else self.classes_.tolist()})


def _format_line(rec, metric):
    parts = [f"iter {rec['iteration']:4d}"]
    for key in ("train_" + metric, "valid_" + metric):
        if key in rec:
            parts.append(f"{key}={rec[key]:.6f}")
    parts.append(f"leaves={rec['leaves']}")
    parts.append(f"{rec['seconds'] * 1e3:.1f} ms (hist {rec['histogram'] * 1e3:.1f}, comm "
                 f"{rec['communication'] * 1e3:.1f}, split {rec['split_search'] * 1e3:.1f}, partition "
                 f"{rec['partition'] * 1e3:.1f}; {rec['bytes_sent'] / 1024:.0f} KiB sent)")
    return "  ".join(parts)


class GradientBoostingRegressor(_GradientBoosting, RegressorMixin, BaseEstimator):
    __doc__ = "Histogram gradient boosting for regression (L2 loss), trained across MPI ranks.\n" + \
        _GradientBoosting.__doc__.split("\n", 2)[2]

    def fit(self, X, y, sample_weight=None, *, checkpoint=None, rows=None):
        """Fit on this rank's rows ``X`` (n_local, d), targets ``y`` and optional ``sample_weight``
        (collective).

        ``checkpoint``: a :class:`shardlearn.checkpoint.Checkpoint` (see :meth:`_GradientBoosting._fit`).
        ``rows``: fit on those local rows only, without copying them (ditto).
        """
        return self._fit(X, y, "regression", checkpoint=checkpoint, sample_weight=sample_weight, rows=rows)

    def predict(self, X) -> np.ndarray:
        return self.raw_predict(X)[:, 0]


class GradientBoostingClassifier(_GradientBoosting, ClassifierMixin, BaseEstimator):
    __doc__ = ("Histogram gradient boosting for classification (binary log-loss or multiclass "
               "softmax), trained across MPI ranks.\n" + _GradientBoosting.__doc__.split("\n", 2)[2]
               + "    n_classes : int, optional\n        Labels are integers 0..n_classes-1 "
                 "(checked); default: the sorted distinct labels.\n")

    def __init__(self, *, n_classes=None, **kwargs):
        super().__init__(**kwargs)
        self.n_classes = n_classes

    def fit(self, X, y, sample_weight=None, *, checkpoint=None, rows=None):
        """Fit on this rank's rows ``X`` (n_local, d), labels ``y`` and optional ``sample_weight``
        (collective).

        ``checkpoint``: a :class:`shardlearn.checkpoint.Checkpoint` (see :meth:`_GradientBoosting._fit`).
        ``rows``: fit on those local rows only, without copying them (ditto).
        """
        return self._fit(X, y, "multiclass" if self.n_classes and self.n_classes > 2 else "binary_or_multi",
                         self.n_classes, checkpoint=checkpoint, sample_weight=sample_weight, rows=rows)

    def _check_params(self, objective):
        super()._check_params("binary" if objective == "binary_or_multi" else objective)

    def predict_proba(self, X) -> np.ndarray:
        raw = self.raw_predict(X)
        if raw.shape[1] == 1:
            p = _sigmoid(raw[:, 0])
            return np.column_stack([1.0 - p, p])
        return _softmax(raw)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # first: unfitted raises NotFittedError
        return np.asarray(self.classes_)[np.argmax(proba, axis=1)]
