"""``shardlearn train kmeans``."""
from __future__ import annotations

#: k-means initialisations by name (a path to an HDF5 file is the fourth kind)
INITS = ("k-means++", "k-means||", "random")

MODELS = {"kmeans": "k-means clustering (distributed Lloyd; k-means++ or k-means|| init)"}


def add_arguments(parser, name) -> None:
    g = parser.add_argument_group("k-means")
    g.add_argument("--k", type=int, required=True, help="number of clusters")
    g.add_argument("--init", default="k-means++", metavar="{k-means++,k-means||,random,FILE.h5}",
                   help="initialisation: greedy k-means++ (as scikit-learn; k passes over the "
                        "data), k-means|| (Bahmani et al.; ~init-rounds passes, better for large k), "
                        "random rows, or an HDF5 file with initial centers")
    g.add_argument("--init-file", default=None, metavar="FILE.h5",
                   help="initial centers from this HDF5 file (dataset 'centers', or a k-means "
                        "model file); overrides --init")
    g.add_argument("--n-init", type=int, default=1, help="runs with different seeds; the lowest "
                                                          "inertia wins")
    g.add_argument("--max-iter", type=int, default=300, help="maximum Lloyd iterations")
    g.add_argument("--tol", type=float, default=1e-4,
                   help="stop when the summed squared center shift <= tol x mean feature variance")
    g.add_argument("--init-rounds", type=int, default=5, help="k-means|| sampling rounds")
    g.add_argument("--oversampling", type=float, default=2.0,
                   help="k-means|| candidates per round, as a multiple of k")
    g.add_argument("--exact-reduce", action="store_true",
                   help="exact, order-independent sums (int64 fixed point): the model is bit-identical "
                        "for any number of ranks and topology (cost: bench/exact_reduce.md; CPU only)")


def fit(name, args, ctx, checkpoint_for):
    """Read the data, fit k-means; return (estimator, shard, report facts)."""
    import os

    import numpy as np

    from ..backend import kernels_name
    from .train import read_training_shard
    from .train import compact_history
    from ..errors import ShardlearnError
    from ..models.kmeans import KERNELS, KMeans

    shard = read_training_shard(args, ctx, dtype=args.dtype)
    init = args.init_file or args.init
    with ctx.collective_errors():
        if init not in INITS and not os.path.exists(init):
            raise ShardlearnError(f"--init {init!r}: not one of {', '.join(INITS)} and no such file")
    ctx.log(f"kmeans: {shard.n_total} rows x {shard.dataset.n_features} features "
            f"({shard.X.dtype}) on {ctx.size} ranks, k={args.k}, init={init}, "
            f"kernels {kernels_name(KERNELS)}")
    km = KMeans(n_clusters=args.k, init=init, n_init=args.n_init, max_iter=args.max_iter,
                tol=args.tol, verbose=int(ctx.verbose), random_state=args.seed, comm=ctx,
                oversampling_factor=args.oversampling, init_rounds=args.init_rounds,
                exact_reduce=args.exact_reduce)
    km.fit(shard.X, checkpoint=checkpoint_for(shard))
    sizes = ctx.coll.allreduce(np.bincount(km.labels_, minlength=args.k).astype(np.int64))
    iters = km.iteration_log_
    return km, shard, {
        "n_iter": km.n_iter_, "metrics": {"inertia": km.inertia_, "cluster_sizes": sizes.tolist()},
        "dtype": str(shard.X.dtype), "init_seconds": round(km.init_seconds_, 4),
        "seconds_per_iteration": round(sum(i["seconds"] for i in iters) / max(1, len(iters)), 6),
        "kernels": kernels_name(KERNELS), "history": compact_history(iters)}
