"""``shardlearn make-data``, ``shard`` and ``info``: create, split and describe datasets."""
from __future__ import annotations

import argparse
import json

from .options import add_runtime_options

KINDS = ("blobs", "classification", "regression")

MAKE_DATA_EPILOG = """\
kinds (like scikit-learn's make_blobs / make_classification / make_regression):
  blobs           --centers centres in [-10,10]^d, N(0, cluster-std^2) around them; y = centre id
  classification  columns [informative | redundant | noise]; Gaussian clusters on hypercube
                  vertices, --noise = fraction of labels redrawn at random; y = class id
  regression      X ~ N(0,1); y = X[:, :informative] @ coef + N(0, noise^2)
examples:
  mpiexec -n 4 shardlearn make-data blobs --rows 10000000 --features 32 --centers 16 --out data/blobs
  shardlearn make-data classification --rows 100000 --features 20 --classes 3 --out data/c.h5
  shardlearn make-data regression --rows 100000 --features 10 --missing 0.05 --out data/r.h5"""


def add_parsers(sub) -> None:
    md = sub.add_parser("make-data", help="generate a deterministic synthetic dataset",
                        description="Write a synthetic dataset whose rows depend only on --seed and the\n"
                                    "options, never on the number of ranks or parts. Under mpiexec each\n"
                                    "rank writes its own part files in parallel, in 65536-row blocks.",
                        epilog=MAKE_DATA_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    md.add_argument("kind", choices=KINDS)
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
    add_runtime_options(md)
    md.set_defaults(run=run_make_data)

    sh = sub.add_parser("shard", help="split an HDF5 file into part files",
                        description="Split IN.h5 (X and optional y) into --parts files "
                                    "part-00000.h5 ... in --out, copying in row blocks.")
    sh.add_argument("input", metavar="IN.h5")
    sh.add_argument("--out", required=True, help="output directory")
    sh.add_argument("--parts", type=int, required=True)
    add_runtime_options(sh)
    sh.set_defaults(run=run_shard)

    inf = sub.add_parser("info", help="describe a dataset: rows, features, dtypes, parts")
    inf.add_argument("path", help="an HDF5 file or a directory of part files")
    inf.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_runtime_options(inf)
    inf.set_defaults(run=run_info)


def run_make_data(args, ctx) -> dict:
    from ..data.synth import make_data

    return make_data(args.kind, args.rows, args.features, args.out, ctx, parts=args.parts, seed=args.seed,
                     dtype=args.dtype, centers=args.centers, cluster_std=args.cluster_std,
                     classes=args.classes, informative=args.informative, noise=args.noise,
                     missing=args.missing)


def run_shard(args, ctx) -> dict:
    from ..data.tools import shard_dataset

    return shard_dataset(args.input, args.out, args.parts, ctx)


def run_info(args, ctx) -> dict:
    from ..data import tools

    info = tools.info(args.path, ctx)
    if ctx.rank == 0:
        print(json.dumps(info, indent=2) if args.json else tools.format_info(info))
    return {"command": "info", **info}  # written only with --report
