"""``shardlearn train tree``: one decision tree (classification or regression)."""
from __future__ import annotations

from .train_linear import class_weight_arg

MODELS = {"tree": "one decision tree (gini / entropy / squared error), as scikit-learn's DecisionTree"}
#: the estimators check the same lists (tests/test_layout.py keeps them equal)
CRITERIA = ("gini", "entropy", "squared_error")
GROWTHS = ("depthwise", "bestfirst")

EXAMPLES = """\
examples:
  mpiexec -n 4 shardlearn train tree --data data/c --max-depth 8 --text-dump runs/tree.txt --out runs/tree.h5
  mpiexec -n 4 shardlearn train tree --data data/c --criterion entropy --max-leaf-nodes 64 \\
      --class-weight balanced --json-dump runs/tree.json --out runs/tree.h5
  mpiexec -n 4 shardlearn train tree --data data/r --objective regression --min-samples-leaf 20 --out runs/treg.h5
  mpiexec -n 4 shardlearn evaluate --model runs/tree.h5 --data data/c-test
Splits fall between bins: by default every distinct value of a feature with at most
65535 of them (scikit-learn's candidates), 255 quantile bins of a row sample for a feature
with more; thresholds sit at the midpoint of each node's gap, as scikit-learn's. NaN is a
missing value and each split learns its side. The tree is the same for any number of ranks."""


def add_arguments(parser, name: str) -> None:
    parser.epilog = EXAMPLES
    g = parser.add_argument_group("decision tree")
    g.add_argument("--objective", default="classification", choices=["classification", "regression"],
                   help="DecisionTreeClassifier or DecisionTreeRegressor")
    g.add_argument("--criterion", default=None, choices=CRITERIA,
                   help="impurity: gini or entropy (classification), squared_error (regression); "
                        "default gini / squared_error")
    g.add_argument("--max-depth", type=int, default=None, help="depth limit (None: until pure or too small)")
    g.add_argument("--min-samples-leaf", type=int, default=1, help="rows per leaf at least")
    g.add_argument("--max-leaf-nodes", type=int, default=None,
                   help="leaves at most, grown best-first (largest impurity decrease first)")
    g.add_argument("--min-impurity-decrease", type=float, default=0.0,
                   help="split only when the weighted impurity falls by at least this (scikit-learn's scale)")
    g.add_argument("--growth", default=None, choices=GROWTHS,
                   help="depthwise (one histogram collective per level) or bestfirst; default bestfirst "
                        "with --max-leaf-nodes, else depthwise (the same tree without a leaf limit)")
    g.add_argument("--class-weight", type=class_weight_arg, default=None, metavar="balanced|LABEL:W,...",
                   help="classification: 'balanced' (n/(K n_k), global counts) or weights like 0:1,1:5")
    g.add_argument("--max-bin", type=int, default=None,
                   help="value bins per feature: default every distinct value up to 65535 per feature "
                        "(255 quantile bins beyond; uint16 codes, CPU); 2..255 as the ensembles; above 255 "
                        "(<= 65535): at most that many, quantiles beyond")
    g.add_argument("--hist-reduce", default="allreduce", choices=("allreduce", "reduce_scatter"),
                   help="combine histograms by allreduce, or reduce-scatter by feature blocks")
    g.add_argument("--json-dump", default=None, metavar="FILE.json", help="also write the tree as JSON")
    g.add_argument("--text-dump", default=None, metavar="FILE.txt",
                   help="also write the tree as text, like sklearn.tree.export_text")
    g.add_argument("--feature-names", default=None, metavar="A,B,...",
                   help="feature names for --text-dump (default feature_0, feature_1, ...)")


def fit(name: str, args, ctx, checkpoint_for):
    """Read the data (NaN allowed), fit one tree; return (estimator, shard, facts)."""
    from ..errors import ShardlearnError
    from ..models.trees.decision_tree import DecisionTreeClassifier, DecisionTreeRegressor
    from .options import check_outputs
    from .train import compact_history, read_training_shard, resample_weights_for

    check_outputs(ctx, {"--text-dump": args.text_dump}, {"--data": args.data, "--out": args.out})
    shard = read_training_shard(args, ctx, dtype=None, need_y=True, allow_nan=True)
    ckpt = checkpoint_for(shard)
    with ctx.collective_errors():
        if ckpt is not None:
            raise ShardlearnError("train tree grows one tree in one step: it takes no --checkpoint")
        if args.objective == "regression" and args.class_weight is not None:
            raise ShardlearnError("--class-weight is for --objective classification")
    kw = dict(max_depth=args.max_depth, min_samples_leaf=args.min_samples_leaf,
              max_leaf_nodes=args.max_leaf_nodes, min_impurity_decrease=args.min_impurity_decrease,
              growth=args.growth, max_bin=args.max_bin, hist_reduce=args.hist_reduce,
              random_state=args.seed, comm=ctx, verbose=ctx.verbose)
    ctx.log(f"tree: {shard.n_total} rows x {shard.dataset.n_features} features on {ctx.size} ranks, "
            f"{args.objective}")
    if args.objective == "regression":
        est = DecisionTreeRegressor(criterion=args.criterion or "squared_error", **kw)
        sw = resample_weights_for(args, ctx, shard, classifier=False)
    else:
        est = DecisionTreeClassifier(criterion=args.criterion or "gini", class_weight=args.class_weight, **kw)
        sw = resample_weights_for(args, ctx, shard)
    est.fit(shard.X, shard.y, sample_weight=sw)
    if args.text_dump:
        _write_text(args, ctx, est)
    metrics = est.evaluate(shard.X, shard.y)
    ctx.log("tree: training " + " ".join(f"{k}={v:.6g}" for k, v in metrics.items()))
    rec = est.history_[0]
    return est, shard, {"n_leaves": est.get_n_leaves(), "depth": est.get_depth(), "metrics": metrics,
                        "binning_seconds": est.binning_seconds_, "fit_seconds": est.fit_seconds_,
                        "tree_seconds": {k: rec[k] for k in ("histogram", "communication", "split_search",
                                                             "partition")},
                        "collectives_per_tree": rec["hist_collectives"], "wire_bytes_per_tree": rec["wire_bytes"],
                        "history": compact_history(est.history_)}


def _write_text(args, ctx, est) -> None:
    """The export_text rendering, written atomically by rank 0 (errors agreed)."""
    from ..errors import ShardlearnError
    from ..models.trees.decision_tree import export_text
    from ..util.files import atomic_path

    with ctx.collective_errors():
        if ctx.rank == 0:
            names = None if args.feature_names is None else [s.strip() for s in args.feature_names.split(",")]
            if names is not None and len(names) != est.n_features_in_:
                raise ShardlearnError(f"--feature-names lists {len(names)} names; the data has "
                                      f"{est.n_features_in_} features")
            with atomic_path(args.text_dump) as tmp:
                with open(tmp, "w") as f:
                    f.write(export_text(est, feature_names=names))
