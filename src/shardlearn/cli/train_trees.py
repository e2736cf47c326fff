"""``shardlearn train gbdt`` and ``train forest``: histogram tree ensembles."""
from __future__ import annotations

import argparse

MODELS = {
    "gbdt": "histogram gradient-boosted trees (regression, binary, multiclass)",
    "forest": "histogram random forest (classification or regression)",
}
#: how node histograms are combined across ranks, and how boosted trees grow
HIST_REDUCE = ("allreduce", "reduce_scatter")
GROWTH = ("leafwise", "depthwise")

GBDT_EXAMPLES = """\
examples:
  mpiexec -n 4 shardlearn train gbdt --data data/higgs --objective binary --out runs/gbdt.h5
  mpiexec -n 4 shardlearn train gbdt --data data/c --objective multiclass --num-class 5 \\
      --validation-fraction 0.1 --early-stopping-rounds 20 --metric logloss --out runs/mc.h5
  mpiexec -n 4 shardlearn train gbdt --data data/r --objective regression --hist-reduce reduce_scatter \\
      --json-dump runs/trees.json --out runs/reg.h5
  mpiexec -n 4 shardlearn train gbdt --data data/adult --categorical 1,3,5 --out runs/cat.h5
  mpiexec -n 4 shardlearn train gbdt --data data/higgs --checkpoint runs/ck --checkpoint-every 10 \\
      --out runs/gbdt.h5          # stopped or killed: the same command with --resume continues
  mpiexec -n 4 shardlearn evaluate --model runs/gbdt.h5 --data data/higgs-test
Missing values (NaN) in X are fine: each split learns which side they go to.
Categorical columns (--categorical 3,7) hold integer codes; their splits send a set of
categories left, found as LightGBM does (one-vs-rest, or sorted gradient statistics)."""

FOREST_EXAMPLES = """\
examples:
  mpiexec -n 4 shardlearn train forest --data data/c --n-estimators 200 --max-depth 16 --out runs/rf.h5
  mpiexec -n 4 shardlearn train forest --data data/r --objective regression --max-features 0.5 \\
      --min-child-samples 5 --out runs/rfr.h5
Trees grow depth-wise (one histogram collective per level); with --max-depth unset on
large data the trees get very deep: set --max-depth or --num-leaves."""


def add_arguments(parser, name: str) -> None:
    if name == "gbdt":
        _add_gbdt_arguments(parser)
    else:
        _add_forest_arguments(parser)


def _add_gbdt_arguments(parser) -> None:
    parser.epilog = GBDT_EXAMPLES
    g = parser.add_argument_group("gradient boosting")
    g.add_argument("--objective", default="binary", choices=["regression", "binary", "multiclass"],
                   help="loss: L2 regression, binary log-loss (2 classes) or multiclass softmax")
    g.add_argument("--num-class", type=int, default=None,
                   help="multiclass: labels must be integers 0..NUM_CLASS-1 (None: the distinct labels)")
    _add_tree_arguments(parser)
    g.add_argument("--n-estimators", type=int, default=100, help="boosting iterations")
    g.add_argument("--learning-rate", type=float, default=0.1, help="shrinkage of each tree")
    g.add_argument("--num-leaves", type=int, default=31, help="leaves per tree (leaf-wise growth)")
    g.add_argument("--growth", default="leafwise", choices=GROWTH,
                   help="leafwise: split the best leaf first (LightGBM); depthwise: a level at a time")
    g.add_argument("--lambda-l2", type=float, default=0.0, help="L2 penalty on leaf values")
    g.add_argument("--min-sum-hessian", type=float, default=1e-3, help="minimum hessian sum per leaf")
    g.add_argument("--feature-fraction", type=float, default=1.0, help="features drawn per tree")
    g.add_argument("--bagging-fraction", type=float, default=1.0,
                   help="rows drawn per bagging round (keyed by global row index)")
    g.add_argument("--bagging-freq", type=int, default=0, help="re-draw rows every N iterations (0: off)")
    g.add_argument("--validation-fraction", type=float, default=0.0,
                   help="rows held out (by global row index) for validation metrics")
    g.add_argument("--early-stopping-rounds", type=int, default=None,
                   help="stop when the validation metric stalls this many iterations")
    g.add_argument("--metric", default=None, choices=["logloss", "auc", "rmse"],
                   help="validation metric (None: logloss, or rmse for regression)")
    q = parser.add_argument_group("quantized gradients (LightGBM's use_quantized_grad)")
    q.add_argument("--quantized-grad", action="store_true",
                   help="round gradients and hessians stochastically to 2**GRAD_BITS levels and sum them as "
                        "integers: faster histograms, a third of the bytes on the wire, and the same model "
                        "bytes for any number of ranks, topology and --hist-reduce")
    q.add_argument("--grad-bits", type=int, default=2, metavar="B",
                   help="2..16: 2**B levels per tree (LightGBM's num_grad_quant_bins = 2**B; default 2 = its 4)")
    q.add_argument("--no-renew-leaf", dest="quant_train_renew_leaf", action="store_false",
                   help="keep the leaf values of the quantized sums (LightGBM's default) instead of renewing them "
                        "from the exact gradients (exact fixed-point sums, one small collective per tree)")


def _add_forest_arguments(parser) -> None:
    parser.epilog = FOREST_EXAMPLES
    g = parser.add_argument_group("random forest")
    g.add_argument("--objective", default="classification", choices=["classification", "regression"],
                   help="Gini classification (any number of classes) or variance-reduction regression")
    g.add_argument("--num-class", type=int, default=None,
                   help="classification: labels must be integers 0..NUM_CLASS-1 (None: the distinct labels)")
    g.add_argument("--n-estimators", type=int, default=100, help="number of trees")
    g.add_argument("--num-leaves", type=int, default=None, help="leaves per tree at most (None: no limit)")
    g.add_argument("--max-features", default=None, type=max_features_arg,
                   help="features drawn per node: sqrt, log2, a count or a fraction "
                        "(None: sqrt for classification, all for regression)")
    g.add_argument("--no-bootstrap", action="store_true",
                   help="use every row in every tree instead of Poisson(1) bootstrap weights")
    _add_tree_arguments(parser)
    parser.set_defaults(min_child_samples=1)


def max_features_arg(text: str):
    """``sqrt``, ``log2``, a count (``3``) or a fraction (``0.5``)."""
    if text in ("sqrt", "log2"):
        return text
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sqrt, log2, a count or a fraction, got {text!r}") from None


def _add_tree_arguments(parser) -> None:
    """Options shared by gbdt and forest."""
    g = parser.add_argument_group("trees")
    g.add_argument("--max-depth", type=int, default=None, help="depth limit (None: unlimited)")
    g.add_argument("--max-bin", type=int, default=255, help="value bins per feature (<= 255)")
    g.add_argument("--min-child-samples", type=int, default=20, help="minimum rows per leaf")
    g.add_argument("--min-gain-to-split", type=float, default=0.0, help="minimum gain of a split")
    g.add_argument("--hist-reduce", default="allreduce", choices=HIST_REDUCE,
                   help="combine histograms by allreduce, or reduce-scatter by feature blocks with "
                        "the best split per block allgathered (less traffic)")
    g.add_argument("--histogram-pool-size", type=float, default=-1.0, metavar="MIB",
                   help="MiB of open-leaf histograms a rank keeps at most (LightGBM's histogram_pool_size; "
                        "default -1: no bound). A leaf split without its histogram has both children's "
                        "built from their rows: less memory (about C x features x (max_bin+1) x 8 bytes "
                        "per histogram), more histogram time, the same trees up to the rounding of sums")
    g.add_argument("--json-dump", default=None, metavar="FILE.json",
                   help="also write the trees as human-readable JSON")
    c = parser.add_argument_group("categorical features (LightGBM's parameters and defaults)")
    c.add_argument("--categorical", default=None, metavar="COLS",
                   help="comma-separated column indices holding integer category codes, e.g. 3,7 "
                        "(NaN: missing; categories unseen in training go with missing values)")
    c.add_argument("--max-cat-to-onehot", type=int, default=4, metavar="N",
                   help="at most this many bins (categories + missing): split one category vs the rest")
    c.add_argument("--cat-smooth", type=float, default=10.0, metavar="X",
                   help="categories are sorted by G/(H+cat_smooth); those with fewer rows are left out")
    c.add_argument("--cat-l2", type=float, default=None, metavar="X",
                   help="extra L2 penalty of many-vs-many splits (None: 10 for gbdt, 0 for forest)")
    c.add_argument("--max-cat-threshold", type=int, default=32, metavar="N",
                   help="categories in the left set of a split at most")
    c.add_argument("--min-data-per-group", type=int, default=100, metavar="N",
                   help="rows per group of categories at least")


def _categorical_kwargs(args) -> dict:
    """Estimator keyword arguments of the categorical options (cat_l2 only when given)."""
    kw = dict(categorical_features=args.categorical, max_cat_to_onehot=args.max_cat_to_onehot,
              cat_smooth=args.cat_smooth, max_cat_threshold=args.max_cat_threshold,
              min_data_per_group=args.min_data_per_group)
    if args.cat_l2 is not None:
        kw["cat_l2"] = args.cat_l2
    return kw


def fit(name: str, args, ctx, checkpoint_for):
    """Read the data (NaN allowed: missing values), fit; return (estimator, shard, facts)."""
    from .train import compact_history, read_training_shard, resample_weights_for

    shard = read_training_shard(args, ctx, dtype=None, need_y=True, allow_nan=True)
    ckpt = checkpoint_for(shard)   # a step: one boosting iteration (gbdt), one tree (forest)
    args.sample_weight = resample_weights_for(args, ctx, shard, classifier=args.objective != "regression")
    est = _fit_gbdt(args, ctx, shard, ckpt) if name == "gbdt" else _fit_forest(args, ctx, shard, ckpt)
    hist = est.history_
    phases = ("histogram", "communication", "split_search", "partition", "gradients", "quantize", "renew", "update")
    tot = {k: float(sum(r.get(k, 0.0) for r in hist)) for k in phases}
    n_trees = max(1, len(hist) * est.n_trees_per_iteration_)
    ctx.log(f"{name}: {est.ensemble_.n_trees} trees")
    last = hist[-1] if hist else {}
    return est, shard, {
        "n_iter": est.n_iter_, "best_iteration": est.best_iteration_, "n_trees": est.ensemble_.n_trees,
        "metrics": {k: v for k, v in last.items() if k.startswith(("train_", "valid_"))},
        "tree_seconds": tot, "binning_seconds": est.binning_seconds_, "fit_seconds": est.fit_seconds_,
        "bytes_sent_per_tree": float(sum(r["bytes_sent"] for r in hist)) / n_trees,
        "wire_bytes_per_tree": float(sum(r.get("wire_bytes", 0) for r in hist)) / n_trees,
        "collectives_per_tree": float(sum(r.get("hist_collectives", 0) for r in hist)) / n_trees,
        "history": compact_history(hist)}


def _fit_gbdt(args, ctx, shard, checkpoint):
    from ..models.trees import GradientBoostingClassifier, GradientBoostingRegressor

    kw = dict(n_estimators=args.n_estimators, learning_rate=args.learning_rate, num_leaves=args.num_leaves,
              max_depth=args.max_depth, growth=args.growth, max_bin=args.max_bin,
              min_child_samples=args.min_child_samples, min_sum_hessian=args.min_sum_hessian,
              lambda_l2=args.lambda_l2, min_gain_to_split=args.min_gain_to_split,
              feature_fraction=args.feature_fraction, bagging_fraction=args.bagging_fraction,
              bagging_freq=args.bagging_freq, validation_fraction=args.validation_fraction,
              early_stopping_rounds=args.early_stopping_rounds, metric=args.metric,
              hist_reduce=args.hist_reduce, histogram_pool_size=args.histogram_pool_size,
              quantized_grad=args.quantized_grad, grad_bits=args.grad_bits,
              quant_train_renew_leaf=args.quant_train_renew_leaf,
              random_state=args.seed, comm=ctx, **_categorical_kwargs(args))
    if args.objective == "regression":
        est = GradientBoostingRegressor(**kw)
    else:
        # binary: labels must be 0/1; multiclass: 0..num_class-1 when given, else any labels
        n_cls = args.num_class if args.objective == "multiclass" else 2
        est = GradientBoostingClassifier(n_classes=n_cls, **kw)
    ctx.log(f"gbdt: {shard.n_total} rows x {shard.dataset.n_features} features on {ctx.size} ranks, "
            f"objective {args.objective}")
    return est.fit(shard.X, shard.y, args.sample_weight, checkpoint=checkpoint)


def _fit_forest(args, ctx, shard, checkpoint):
    from ..models.trees import RandomForestClassifier, RandomForestRegressor

    mf = args.max_features  # sqrt, log2, an int or a float (max_features_arg)
    kw = dict(n_estimators=args.n_estimators, max_depth=args.max_depth, num_leaves=args.num_leaves,
              min_child_samples=args.min_child_samples, bootstrap=not args.no_bootstrap,
              max_bin=args.max_bin, min_gain_to_split=args.min_gain_to_split,
              hist_reduce=args.hist_reduce, histogram_pool_size=args.histogram_pool_size, random_state=args.seed,
              comm=ctx, **_categorical_kwargs(args))
    ctx.log(f"forest: {shard.n_total} rows x {shard.dataset.n_features} features on {ctx.size} ranks")
    if args.objective == "regression":
        return RandomForestRegressor(max_features=1.0 if mf is None else mf, **kw).fit(
            shard.X, shard.y, args.sample_weight, checkpoint=checkpoint)
    est = RandomForestClassifier(max_features="sqrt" if mf is None else mf, **kw)
    return est.fit(shard.X, shard.y, n_classes=args.num_class, sample_weight=args.sample_weight,
                   checkpoint=checkpoint)
