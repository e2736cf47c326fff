"""``shardlearn search MODEL``: parameter search with cross-validation on groups of ranks.

Parses the grid (``--param NAME=VALUES``, repeatable) and fixed parameters (``--set``),
reads each group's rows once (the group's ranks split the table), runs
:class:`shardlearn.models.selection.GridSearch` / ``RandomSearch``, writes the results
(JSON and CSV with scikit-learn's ``cv_results_`` keys) and, with ``--refit``, trains the
best candidate on all rows with all ranks and saves it like ``shardlearn train`` does.
"""
from __future__ import annotations

from .options import HelpFormatter, add_runtime_options, check_outputs, int_at_least

MODELS = ("kmeans", "linear", "ridge", "lasso", "logistic", "svm", "gbdt", "forest", "tree", "knn")
SCORINGS = ("accuracy", "roc_auc", "neg_log_loss", "r2", "neg_mean_squared_error",
            "neg_root_mean_squared_error", "score")

EXAMPLES = """\
examples:
  mpiexec -n 4 shardlearn search logistic --data data/train --param C=log:1e-3:1e2:6 \\
      --cv 5 --groups 2 --out runs/search.json
  mpiexec -n 4 shardlearn search gbdt --data data/train --param num_leaves=int:8:64:4 \\
      --param learning_rate=0.05,0.1 --set n_estimators=50 --scoring roc_auc --groups auto \\
      --refit --out runs/gbdt-search.json
  mpiexec -n 4 shardlearn search ridge --data data/r --param alpha=log:1e-2:1e3:24 --halving --out runs/r.json
  mpiexec -n 2 shardlearn search tree --data data/train --param max_depth=4,8,16 \
      --param min_samples_leaf=1,20 --out runs/tree.json
  mpiexec -n 2 shardlearn search knn --data data/train --param n_neighbors=int:1:31:6 \
      --param weights=uniform,distance --groups 2 --out runs/knn.json

Parameter names are the estimators' own (Python names: num_leaves, min_child_samples, C,
alpha, penalty, solver, loss, max_depth, min_samples_leaf, n_neighbors, weights,
n_clusters ...). Models: svm is LinearSVC, tree DecisionTreeClassifier/Regressor, knn
KNeighborsClassifier/Regressor (tree and knn: regressors with --objective regression). VALUES is a list (0.1,1,10; true/false/none are
understood), log:LOW:HIGH:N (N values evenly spaced in log10) or int:LOW:HIGH:N.
--groups G splits the ranks into G groups that train candidates side by side: 1 = every
rank on every candidate (least memory per rank: each rank holds 1/P of the rows); P = one
rank per candidate (no communication, but each rank holds all rows). Output: OUT (JSON:
cv_results with params, splitK_test_score, mean_test_score, std_test_score,
rank_test_score, mean_fit_time ..., best_params, best_score) and OUT with .csv."""


def add_parsers(sub) -> None:
    p = sub.add_parser("search", help="parameter search with cross-validation on groups of ranks",
                       description="Search a parameter grid with k-fold cross-validation. The ranks "
                                   "split into groups; each group keeps the table split between its "
                                   "ranks and trains one candidate at a time; the group that "
                                   "finishes first takes the next.",
                       epilog=EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("model", choices=MODELS, metavar="MODEL", help=f"one of: {', '.join(MODELS)}")
    p.add_argument("--data", required=True, help="HDF5 file or directory of part files")
    p.add_argument("--out", required=True, metavar="RESULTS.json",
                   help="results file (JSON); a CSV of the same table goes beside it (.csv)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUES",
                   help="a searched parameter and its values (repeat for more)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="fixed",
                   help="a parameter held fixed for every candidate (repeat for more)")
    p.add_argument("--random", type=int_at_least(1), default=None, metavar="N",
                   help="random search: N candidates drawn from the grid (default: every candidate)")
    p.add_argument("--seed", type=int_at_least(0), default=0,
                   help="seed of the folds, halving subsets and random draws")
    p.add_argument("--cv", type=int_at_least(2), default=5, help="folds (stratified for classifiers)")
    p.add_argument("--groups", default="1", metavar="G|auto",
                   help="groups of ranks training candidates side by side (1..P, or auto: the most "
                        "groups whose rows fit a quarter of the node's free memory)")
    p.add_argument("--scoring", choices=SCORINGS, default=None,
                   help="default: accuracy (classifiers), r2 (regressors), score (k-means: minus inertia)")
    p.add_argument("--objective", choices=["classification", "regression"], default="classification",
                   help="gbdt, forest, tree and knn: classifier or regressor")
    p.add_argument("--halving", action="store_true",
                   help="successive halving: early rounds on row subsets keep the best 1/factor")
    p.add_argument("--factor", type=float, default=3.0, help="halving factor")
    p.add_argument("--error-score", default="nan", metavar="NUMBER|raise",
                   help="score of a failing candidate (the search goes on), or 'raise' to stop")
    p.add_argument("--lockstep", default="1", metavar="L|auto",
                   help="gbdt, forest, tree, kmeans: fits a group runs side by side, their collectives "
                        "packed into one per step (default 1: one after another; auto: a candidate's "
                        "folds on groups of 2+ ranks; costs L fits' working memory; pays off on a "
                        "loaded machine only, see bench/search.md)")
    p.add_argument("--no-multi-alpha", action="store_true",
                   help="fit ridge/logistic candidates that differ only in alpha/C one by one")
    p.add_argument("--refit", nargs="?", const=True, default=None, metavar="MODEL.h5",
                   help="train the best candidate on all rows with all ranks and save it "
                        "(default file: OUT with .h5)")
    p.add_argument("--dtype", default=None, choices=["float32", "float64"],
                   help="compute dtype (default: the data's)")
    add_runtime_options(p)
    p.set_defaults(run=run)


def _estimator(args):
    """The base estimator for MODEL with the --set parameters."""
    from ..errors import ShardlearnError
    from ..models.selection._grid import parse_param

    fixed = {}
    for spec in args.fixed:
        name, values = parse_param(spec)
        if len(values) != 1:
            raise ShardlearnError(f"--set {spec!r}: one value expected (use --param for several)")
        fixed[name] = values[0]
    if args.model == "kmeans":
        from ..models.kmeans import KMeans as cls
    elif args.model in ("linear", "ridge", "lasso", "logistic", "svm"):
        from ..models import linear

        cls = {"linear": linear.LinearRegression, "ridge": linear.Ridge, "lasso": linear.Lasso,
               "logistic": linear.LogisticRegression, "svm": linear.LinearSVC}[args.model]
    elif args.model == "knn":
        from ..models import knn

        cls = knn.KNeighborsRegressor if args.objective == "regression" else knn.KNeighborsClassifier
    else:
        from ..models import trees

        kind = "Regressor" if args.objective == "regression" else "Classifier"
        cls = getattr(trees, {"gbdt": "GradientBoosting", "forest": "RandomForest", "tree": "DecisionTree"}[args.model]
                      + kind)
    valid = cls.param_names()
    for name in fixed:
        if name not in valid or name == "comm":
            raise ShardlearnError(f"--set {name}: unknown parameter for {cls.__name__}; its parameters are: "
                                  f"{', '.join(n for n in valid if n != 'comm')}")
    if "random_state" in valid and "random_state" not in fixed:
        fixed["random_state"] = args.seed
    return cls(**fixed)


def run(args, ctx) -> dict:
    """Check the outputs and the grid, search, write the results, maybe refit and save."""
    import time

    import numpy as np

    from ..data import read_shard
    from ..errors import ShardlearnError
    from ..models.io import save_estimator
    from ..models.selection import GridSearch, RandomSearch, _groups
    from ..models.selection._grid import parse_param

    base = args.out[:-5] if args.out.endswith(".json") else args.out
    csv_path = base + ".csv"
    model_path = None if args.refit is None else (base + ".h5" if args.refit is True else args.refit)
    check_outputs(ctx, {"--out": args.out, "CSV": csv_path, "--refit": model_path, "--report": args.report},
                  {"--data": args.data})
    grid, est, error_score = {}, None, None
    with ctx.collective_errors():
        if not args.param:
            raise ShardlearnError("give at least one --param NAME=VALUES to search over")
        for spec in args.param:
            name, values = parse_param(spec)
            if name in grid:
                raise ShardlearnError(f"--param {name} given twice: list all its values in one --param")
            grid[name] = values
        est = _estimator(args)
        if args.error_score == "raise":
            error_score = "raise"
        else:
            try:
                error_score = float(args.error_score)
            except ValueError:
                raise ShardlearnError(f"--error-score {args.error_score!r}: a number, nan or 'raise'") from None
        groups = args.groups if args.groups == "auto" else _int_or_error(args.groups)
        lockstep = args.lockstep if args.lockstep == "auto" else _int_or_error(args.lockstep, "--lockstep")
    common = dict(cv=args.cv, n_groups=groups, scoring=args.scoring, refit=False, error_score=error_score,
                  halving=args.halving, factor=args.factor, multi_alpha=not args.no_multi_alpha,
                  lockstep=lockstep, random_state=args.seed, comm=ctx)
    search = (RandomSearch(est, grid, n_iter=args.random, **common) if args.random
              else GridSearch(est, grid, **common))
    tree = args.model in ("gbdt", "forest", "tree")
    need_y = args.model != "kmeans"
    meta = _peek(args.data, ctx, need_y)
    itemsize = np.dtype(args.dtype or meta.dtype).itemsize
    cands = search.prepare(ctx, meta.n_rows, meta.n_features, itemsize)   # a bad grid stops here
    layout = _groups.split_groups(ctx, search.n_groups_)
    t0 = time.perf_counter()
    try:
        shard = read_shard(args.data, layout.group, dtype=args.dtype, need_y=need_y, allow_nan=tree)
        ctx.log(f"search: each of {layout.count} group(s) holds {shard.n_total} rows x "
                f"{shard.dataset.n_features} split over {layout.group.size} rank(s)")
        search.search(layout, cands, shard.X, shard.y if need_y else None, shard.start, shard.n_total)
        phases = layout.group.timings()     # this rank's group: seconds per phase of its fits
    finally:
        layout.free()
    seconds = time.perf_counter() - t0
    table = search.results_table()
    report = {"command": "search", "model": args.model, "data": args.data, "rows": meta.n_rows,
              "features": meta.n_features, "groups": search.n_groups_, "ranks_per_group": ctx.size // search.n_groups_,
              "cv": args.cv, "scoring": search.scoring_, "candidates": len(cands), "halving": bool(args.halving),
              "fixed": {k: v for k, v in est.model_params().items()}, "best_params": search.best_params_,
              "best_score": search.best_score_, "best_index": search.best_index_, "search_seconds": round(seconds, 4),
              "lockstep": search.lockstep_, "lockstep_stats": search.lockstep_stats_, "rank0_phase_seconds": phases,
              "cv_results": {key: [row[key] for row in table] for key in (table[0] if table else {})}}
    if model_path:
        # one group: its rows are the world's rows already; else read the world's blocks
        full = shard if layout.count == 1 else read_shard(args.data, ctx, dtype=args.dtype, need_y=need_y,
                                                          allow_nan=tree)
        # k-NN's model refers to its training rows by path (the rows the full read gives)
        fit_params = {"row_offset": full.start, "data_path": args.data} if args.model == "knn" else {}
        search.refit_on(ctx, full.X, full.y if need_y else None, **fit_params)
        save_estimator(search.best_estimator_, model_path, ctx,
                       info={"data": args.data, "rows": full.n_total, "search": args.out,
                             "best_score": search.best_score_, **ctx.describe()})
        report["refit_model"] = model_path
        report["refit_seconds"] = round(search.refit_time_, 4)
        ctx.log(f"model: {model_path}")
    _write(ctx, args.out, csv_path, report, table)
    ctx.log(f"results: {args.out} and {csv_path}")
    return report


def _int_or_error(text, option="--groups"):
    from ..errors import ShardlearnError

    try:
        return int(text)
    except ValueError:
        what = "an integer (1..ranks)" if option == "--groups" else "an integer >= 1"
        raise ShardlearnError(f"{option} {text!r}: {what} or auto") from None


def _peek(path, ctx, need_y):
    from ..data.shards import open_dataset

    return open_dataset(path, ctx, need_y=need_y)


def _write(ctx, json_path, csv_path, report, table) -> None:
    """Rank 0 writes the JSON results and the CSV table, atomically; errors agreed."""
    import csv
    import io
    import json

    from ..persist import write_json
    from ..util.files import atomic_path

    with ctx.collective_errors():
        if ctx.rank == 0:
            write_json(json_path, report)
            keys = list(table[0]) if table else []
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(keys)
            for row in table:
                w.writerow([json.dumps(row[k], sort_keys=True) if isinstance(row[k], (dict, list))
                            else ("" if row[k] is None else row[k]) for k in keys])
            with atomic_path(csv_path) as tmp:
                with open(tmp, "w", newline="") as f:
                    f.write(buf.getvalue())

