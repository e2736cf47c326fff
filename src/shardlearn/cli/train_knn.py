"""``shardlearn train knn``: k nearest neighbours (the model refers to its training data)."""
from __future__ import annotations

MODELS = {"knn": "k-nearest neighbours (brute force over the sharded training rows; the model file "
                 "refers to the training data)"}
#: the estimators check the same lists (tests/test_layout.py keeps them equal)
WEIGHTS = ("uniform", "distance")
METRICS = ("euclidean", "manhattan", "cosine")
STRATEGIES = ("auto", "broadcast", "ring")

EXAMPLES = """\
examples:
  mpiexec -n 4 shardlearn train knn --data data/train --n-neighbors 10 --out runs/knn.h5
  mpiexec -n 4 shardlearn predict --model runs/knn.h5 --data data/test --out runs/pred.h5
  mpiexec -n 4 shardlearn evaluate --model runs/knn.h5 --data data/test
  mpiexec -n 4 shardlearn train knn --data data/r --objective regression --weights distance \\
      --metric manhattan --out runs/knnr.h5
Training stores no rows: the model file names the training data (its absolute path, row
and feature counts), and predict / evaluate read each rank's shard of it again. Moving
or changing the training data after training is an error at prediction time."""


def add_arguments(parser, name: str) -> None:
    parser.epilog = EXAMPLES
    g = parser.add_argument_group("k nearest neighbours")
    g.add_argument("--objective", default="classification", choices=["classification", "regression"],
                   help="KNeighborsClassifier (votes) or KNeighborsRegressor (mean target)")
    g.add_argument("--n-neighbors", type=int, default=5, help="neighbours per query (k)")
    g.add_argument("--weights", default="uniform", choices=WEIGHTS,
                   help="uniform votes, or weighted by 1/distance (distance 0 takes all)")
    g.add_argument("--metric", default="euclidean", choices=METRICS, help="distance")
    g.add_argument("--strategy", default="auto", choices=STRATEGIES,
                   help="how query blocks travel: broadcast from their owner, or around a ring of ranks; "
                        "auto: ring when the queries are at least a tenth of the training rows and every "
                        "rank holds a full block (the answer is the same either way)")
    g.add_argument("--block-rows", type=int, default=4096, help="queries per travelling block")


def fit(name: str, args, ctx, checkpoint_for):
    """Check the training data and keep a reference to it; return (estimator, shard, facts)."""
    from ..data import read_shard
    from ..errors import ShardlearnError
    from ..models.knn import KNeighborsClassifier, KNeighborsRegressor

    shard = read_shard(args.data, ctx, dtype=args.dtype, need_y=True)
    ckpt = checkpoint_for(shard)
    with ctx.collective_errors():
        if ckpt is not None:
            raise ShardlearnError("train knn keeps a reference to the data in one step: it takes no --checkpoint")
    kw = dict(weights=args.weights, metric=args.metric, strategy=args.strategy, block_rows=args.block_rows,
              comm=ctx, verbose=ctx.verbose)
    cls = KNeighborsRegressor if args.objective == "regression" else KNeighborsClassifier
    est = cls(args.n_neighbors, **kw)
    with ctx.timers.phase("fit"):
        est.fit(shard.X, shard.y, row_offset=shard.start, data_path=args.data)
    ctx.log(f"knn: {shard.n_total} training rows x {shard.dataset.n_features} features on {ctx.size} ranks, "
            f"k={args.n_neighbors}, {args.metric}, {args.weights}"
            + (f", {len(est.classes_)} classes" if est.classes_ is not None else ""))
    return est, shard, {"n_samples_fit": est.n_samples_fit_, "training_data": est.data_path_,
                        "fit_seconds": est.fit_seconds_}
