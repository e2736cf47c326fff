"""Command line: argument parsing and wiring only (no math, no MPI calls of its own).

Model commands are plug-ins: ``train NAME`` imports the module in :data:`MODELS` and
uses three functions it must define::

    add_train_arguments(parser, name)      # its own options
    train_from_args(name, args, ctx) -> dict
        # read args.data, fit, save the model to args.out (atomic); return the facts
        # for the run report (params, n_iter, metrics, ...)
    load_estimator(path, ctx) -> estimator
        # with .read_options (kwargs for data.read_shard), .predict_columns(shard)
        # -> {name: local array}, and .evaluate(shard) -> {metric: value}

A model file records its estimator name, so ``predict``/``evaluate`` find the module.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys

from . import __version__
from .errors import ShardlearnError

MODELS = {
    "kmeans": "shardlearn.models.kmeans",
    "linear": "shardlearn.models.linear",
    "ridge": "shardlearn.models.linear",
    "lasso": "shardlearn.models.linear",
    "logistic": "shardlearn.models.linear",
    "gbdt": "shardlearn.models.trees.gbdt",
    "forest": "shardlearn.models.trees.forest",
}

MODEL_HELP = {
    "kmeans": "k-means clustering (distributed Lloyd; k-means++ or k-means|| init)",
    "linear": "least-squares linear regression (normal equations, GD, SGD or L-BFGS)",
    "ridge": "L2-penalised least squares",
    "lasso": "L1-penalised least squares (proximal gradient)",
    "logistic": "logistic regression, binary or multinomial (L-BFGS, GD or SGD)",
    "gbdt": "histogram gradient-boosted trees (regression, binary, multiclass)",
    "forest": "histogram random forest (classification or regression)",
}

EPILOG = """\
Run every command under MPI, the same on every rank:
  mpiexec -n 4 shardlearn make-data blobs --rows 1000000 --features 32 --centers 16 --out data/blobs
  mpiexec -n 4 shardlearn train kmeans --data data/blobs --k 16 --out runs/km.h5
  mpiexec -n 4 shardlearn predict --model runs/km.h5 --data data/blobs --out runs/labels.h5
  mpiexec -n 4 shardlearn evaluate --model runs/km.h5 --data data/blobs
Under Slurm use 'srun --mpi=pmi2 shardlearn ...' (see jobs/README.md).
On one workstation with the pip MPICH, export UCX_NET_DEVICES=lo to keep traffic on loopback.
'shardlearn COMMAND --help' explains each command's options."""


def _runtime_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--topology", default="auto", choices=["native", "ring", "tree", "auto"],
                   help="collective algorithm: MPI's own, ring (bandwidth-optimal), "
                        "tree (latency-optimal) or auto by message size (default: auto)")
    g.add_argument("--device", default="cpu", choices=["cpu", "gpu"],
                   help="compute with NumPy on CPU or CuPy on GPU; each rank binds to GPU "
                        "local_rank %% n_gpus (default: cpu)")
    g.add_argument("--threads", type=int, default=None,
                   help="BLAS/OpenMP threads per rank (default: the node's cores divided by "
                        "the ranks on the node, or OMP_NUM_THREADS if set)")
    g.add_argument("--report", default=None, metavar="FILE.json",
                   help="write a JSON run report here (train: default OUT with .json)")
    g.add_argument("--quiet", action="store_true", help="no progress lines")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shardlearn",
        description="Train classic ML models on HDF5 data sharded across MPI ranks: each rank "
                    "reads only its block of rows; the ranks agree on the model with "
                    "allreduce and broadcast.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"shardlearn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # ---- data
    md = sub.add_parser("make-data", help="generate a deterministic synthetic dataset",
                        description="Write a synthetic dataset whose rows depend only on --seed and the\n"
                                    "options, never on the number of ranks or parts. Under mpiexec each\n"
                                    "rank writes its own part files in parallel, in 65536-row blocks.",
                        epilog="""\
kinds (like scikit-learn's make_blobs / make_classification / make_regression):
  blobs           --centers centres in [-10,10]^d, N(0, cluster-std^2) around them; y = centre id
  classification  columns [informative | redundant | noise]; Gaussian clusters on hypercube
                  vertices, --noise = fraction of labels redrawn at random; y = class id
  regression      X ~ N(0,1); y = X[:, :informative] @ coef + N(0, noise^2)
examples:
  mpiexec -n 4 shardlearn make-data blobs --rows 10000000 --features 32 --centers 16 --out data/blobs
  shardlearn make-data classification --rows 100000 --features 20 --classes 3 --out data/c.h5
  shardlearn make-data regression --rows 100000 --features 10 --missing 0.05 --out data/r.h5""",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    md.add_argument("kind", choices=["blobs", "classification", "regression"])
    md.add_argument("--rows", type=int, required=True, help="number of rows n")
    md.add_argument("--features", type=int, required=True, help="number of features d")
    md.add_argument("--out", required=True, help="output: FILE.h5 (one part) or a directory")
    md.add_argument("--parts", type=int, default=None,
                    help="number of part files (default: 1 for a .h5 path, else the rank count)")
    md.add_argument("--seed", type=int, default=0, help="non-negative seed; the only source of randomness")
    md.add_argument("--dtype", default="float64", choices=["float32", "float64"],
                    help="dtype of X (float32 is the float64 data rounded)")
    md.add_argument("--centers", type=int, default=8, help="blobs: number of clusters")
    md.add_argument("--cluster-std", type=float, default=1.0, help="blobs: spread of each cluster")
    md.add_argument("--classes", type=int, default=2, help="classification: number of classes")
    md.add_argument("--informative", type=int, default=None,
                    help="classification/regression: informative features (default d/2)")
    md.add_argument("--noise", type=float, default=0.1, help="regression: noise std; "
                    "classification: fraction of flipped labels")
    md.add_argument("--missing", type=float, default=0.0,
                    help="fraction of X entries set to NaN (for testing trees)")
    _runtime_options(md)

    sh = sub.add_parser("shard", help="split an HDF5 file into part files",
                        description="Split IN.h5 (X and optional y) into --parts files "
                                    "part-00000.h5 ... in --out, copying in row blocks.")
    sh.add_argument("input", metavar="IN.h5")
    sh.add_argument("--out", required=True, help="output directory")
    sh.add_argument("--parts", type=int, required=True)
    _runtime_options(sh)

    inf = sub.add_parser("info", help="describe a dataset: rows, features, dtypes, parts")
    inf.add_argument("path", help="an HDF5 file or a directory of part files")
    inf.add_argument("--json", action="store_true", help="print JSON instead of text")
    _runtime_options(inf)

    bc = sub.add_parser("bench-comm", help="measure allreduce latency and bandwidth per topology",
                        description="Time allreduce (float64 sum) for each topology and message "
                                    "size, print a table and write JSON, so you can pick "
                                    "--topology for your cluster.")
    bc.add_argument("--sizes", default="8,1K,128K,1M,8M,64M",
                    help="message sizes in bytes, with K/M suffixes (default: %(default)s)")
    bc.add_argument("--topologies", default="native,ring,tree,auto")
    bc.add_argument("--repeats", type=int, default=None,
                    help="timed repetitions per size (default: more for small messages)")
    bc.add_argument("--json-out", default=None, metavar="FILE.json",
                    help="where to write the results (default: print only)")
    _runtime_options(bc)

    # ---- models
    tr = sub.add_parser("train", help="train a model; 'train NAME --help' for its options",
                        description="Train a model on a sharded dataset and write it (HDF5, "
                                    "atomically) plus a JSON run report.")
    trs = tr.add_subparsers(dest="model", metavar="MODEL", required=True)
    for name, help_text in MODEL_HELP.items():
        mp = trs.add_parser(name, help=help_text, description=help_text,
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        mp.add_argument("--data", required=True, help="HDF5 file or directory of part files")
        mp.add_argument("--out", required=True, help="model file to write (.h5)")
        mp.add_argument("--seed", type=int, default=0, help="random seed")
        mp.add_argument("--dtype", default=None, choices=["float32", "float64"],
                        help="compute dtype (default: the data's)")
        _runtime_options(mp)
        _model_module(name, required=False, then=lambda m, mp=mp, name=name: m.add_train_arguments(mp, name))

    pr = sub.add_parser("predict", help="apply a model to a dataset; outputs in global row order")
    pr.add_argument("--model", required=True)
    pr.add_argument("--data", required=True)
    pr.add_argument("--out", required=True, help="HDF5 file for the predictions")
    _runtime_options(pr)

    ev = sub.add_parser("evaluate", help="score a model on a (labelled) dataset")
    ev.add_argument("--model", required=True)
    ev.add_argument("--data", required=True)
    _runtime_options(ev)
    return p


def _model_module(name: str, required: bool = True, then=None):
    try:
        mod = importlib.import_module(MODELS[name])
    except ModuleNotFoundError as exc:
        if not exc.name or not exc.name.startswith("shardlearn"):
            raise
        if required:
            raise ShardlearnError(f"model {name!r} is not available in this build") from None
        return None
    if then is not None:
        then(mod)
    return mod


def _write_report(ctx, path: str | None, report: dict) -> None:
    from .persist import write_json

    report = dict(report)
    report["runtime"] = ctx.describe()
    # timings: the slowest rank's figure per phase is what the user waited for
    local = ctx.timings()
    import numpy as np

    # ranks may have timed different phases: take the union of names, then one MAX
    keys = sorted(set().union(*ctx.mpi_comm.allgather(sorted(local))))
    mx = ctx.coll.allreduce(np.array([local.get(k, 0.0) for k in keys], dtype=np.float64), op="max")
    report["seconds"] = {k: round(float(v), 4) for k, v in zip(keys, mx)}
    if ctx.rank == 0:
        if path:
            write_json(path, report)
            ctx.log(f"report: {path}")


def run(args, ctx) -> dict | None:
    """Dispatch a parsed command. Returns the report dict, if the command makes one."""
    cmd = args.command
    if cmd == "make-data":
        from .data import synth

        return synth.make_data_from_args(args, ctx)
    if cmd == "shard":
        from .data import tools

        return tools.shard_from_args(args, ctx)
    if cmd == "info":
        from .data import tools

        info = tools.info(args.path, ctx)
        if ctx.rank == 0:
            print(json.dumps(info, indent=2) if args.json else tools.format_info(info))
        return None
    if cmd == "bench-comm":
        from .comm import bench

        return bench.bench_from_args(args, ctx)
    if cmd == "train":
        mod = _model_module(args.model)
        if ctx.device == "gpu" and not getattr(mod, "GPU_SUPPORT", False):
            ctx.warn(f"{args.model} has no GPU path yet: it computes with NumPy on the CPU "
                     "(--device gpu only binds the rank to a GPU)")
        report = {"command": "train", "model": args.model, "data": args.data, "out": args.out}
        report.update(mod.train_from_args(args.model, args, ctx))
        if args.report is None:
            args.report = (args.out[:-3] if args.out.endswith(".h5") else args.out) + ".json"
        return report
    if cmd in ("predict", "evaluate"):
        from .data import read_shard
        from .persist import load_model

        est_name, error = None, None
        if ctx.rank == 0:
            try:
                est_name = load_model(args.model)[0]
                if est_name not in MODELS:
                    error = f"{args.model}: unknown estimator {est_name!r}"
            except ShardlearnError as exc:
                error = str(exc)
        ctx.agree(error)
        est_name = ctx.mpi_comm.bcast(est_name, root=0)
        est = _model_module(est_name).load_estimator(args.model, ctx)
        shard = read_shard(args.data, ctx, need_y=(cmd == "evaluate" and getattr(est, "needs_y", True)),
                           **est.read_options)
        if cmd == "predict":
            from .persist import write_rows

            cols = est.predict_columns(shard)
            write_rows(args.out, cols, shard.start, shard.n_total, ctx)
            ctx.log(f"predictions for {shard.n_total} rows: {args.out}")
            return {"command": "predict", "model": args.model, "data": args.data, "out": args.out}
        metrics = est.evaluate(shard)
        ctx.log(" ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
        return {"command": "evaluate", "model": args.model, "data": args.data, "metrics": metrics}
    raise ShardlearnError(f"unknown command {cmd!r}")  # pragma: no cover - argparse checks


def main(argv=None) -> int:
    """Entry point: parse, build the SPMD context, run, report; errors end every rank."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .runtime import init

    ctx = None
    try:
        ctx = init(device=args.device, topology=args.topology, threads=args.threads,
                   verbose=not args.quiet)
        report = run(args, ctx)
        if report is not None:
            _write_report(ctx, args.report, report)
    except ShardlearnError as exc:
        from mpi4py import MPI

        world = MPI.COMM_WORLD
        if getattr(exc, "agreed", False):
            # raised on every rank alike (collective agreement): print once, exit on all
            if world.Get_rank() == 0:
                sys.stderr.write(f"shardlearn: error: {exc}\n")
                sys.stderr.flush()
            return 2
        # raised on this rank alone: the others may be waiting in a collective
        sys.stderr.write(f"shardlearn: error: {exc}\n")
        sys.stderr.flush()
        if world.Get_size() > 1:
            world.Abort(2)
        return 2
    return 0
