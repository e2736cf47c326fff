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
  mpiexec -n 4 shardlearn train knn --data data/imbalanced --resample under:2 --out runs/knnu.h5
Training stores no rows: the model file names the training data (its absolute path, row
and feature counts), and predict / evaluate read each rank's shard of it again. Moving
or changing the training data after training is an error at prediction time. With
--resample a row drawn c times is c of the k neighbours (0: left out); the model file
records the draw (--resample, --seed) and predict draws the same counts again."""


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
    from ..models.resample import parse_resample

    shard = read_shard(args.data, ctx, dtype=args.dtype, need_y=True)
    ckpt = checkpoint_for(shard)
    with ctx.collective_errors():
        if ckpt is not None:
            raise ShardlearnError("train knn keeps a reference to the data in one step: it takes no --checkpoint")
    with ctx.collective_errors():
        if args.resample is not None:
            if args.objective == "regression":
                raise ShardlearnError("--resample is for classifiers (a regression target has no classes)")
            parse_resample(args.resample)
    kw = dict(weights=args.weights, metric=args.metric, strategy=args.strategy, block_rows=args.block_rows,
              comm=ctx, verbose=ctx.verbose)
    if args.resample is not None:   # the estimator draws the weights (its model file records the draw)
        kw.update(resample=args.resample, random_state=args.seed)
    cls = KNeighborsRegressor if args.objective == "regression" else KNeighborsClassifier
    est = cls(args.n_neighbors, **kw)
    with ctx.timers.phase("fit"):
        est.fit(shard.X, shard.y, row_offset=shard.start, data_path=args.data)
    ctx.log(f"knn: {shard.n_total} training rows x {shard.dataset.n_features} features on {ctx.size} ranks, "
            f"k={args.n_neighbors}, {args.metric}, {args.weights}"
            + (f", {len(est.classes_)} classes" if est.classes_ is not None else "")
            + (f", resample {args.resample}: {est.n_weighted_} weighted rows" if args.resample else ""))
    facts = {"n_samples_fit": est.n_samples_fit_, "training_data": est.data_path_, "fit_seconds": est.fit_seconds_}
    if args.resample is not None:
        facts["n_weighted_rows"] = est.n_weighted_
    return est, shard, facts
