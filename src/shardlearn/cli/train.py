"""``shardlearn train MODEL``: what every model shares.

Each family module (:mod:`.train_kmeans`, :mod:`.train_linear`, :mod:`.train_trees`) defines

    MODELS = {name: help}                  # the ``train`` subcommands it serves
    add_arguments(parser, name)            # its own options (argparse only: imports no model)
    fit(name, args, ctx, checkpoint_for) -> (estimator, shard, facts)
        # read args.data, build the estimator from the options, fit it with
        # checkpoint=checkpoint_for(shard); facts are the run-report entries of this
        # family (iterations, metrics, seconds ...)

and this module does the rest alike for all: the options every model takes, checking
every output location before the first step, saving the model (atomically, rank 0),
the ``--json-dump`` of tree models and the run report.
"""
from __future__ import annotations

import importlib
import os

from .options import HelpFormatter, add_runtime_options, check_outputs, int_at_least

FAMILIES = ("shardlearn.cli.train_kmeans", "shardlearn.cli.train_linear", "shardlearn.cli.train_trees",
            "shardlearn.cli.train_tree", "shardlearn.cli.train_knn")
#: the classifiers that take ``--resample`` (gbdt, forest, tree and knn when classifying): their
#: family module passes :func:`resample_weights_for`'s weights to fit as sample_weight, except
#: knn, whose model refers to the training data: its estimator draws the same weights itself
#: (``resample=``, keyed by seed and global row) and its model file records the draw
RESAMPLE_MODELS = ("logistic", "svm", "gbdt", "forest", "tree", "knn")
#: models without ``--preprocess``: knn's model re-reads its training rows at predict time, untransformed
NO_PREPROCESS = ("knn",)


def _family(module: str):
    return importlib.import_module(module)


def add_parsers(sub) -> None:
    tr = sub.add_parser("train", help="train a model; 'train NAME --help' for its options",
                        description="Train a model on a sharded dataset and write it (HDF5, "
                                    "atomically) plus a JSON run report.")
    trs = tr.add_subparsers(dest="model", metavar="MODEL", required=True)
    for module in FAMILIES:
        fam = _family(module)
        for name, help_text in fam.MODELS.items():
            mp = trs.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
            mp.add_argument("--data", required=True, help="HDF5 file or directory of part files")
            mp.add_argument("--out", required=True, help="model file to write (.h5)")
            mp.add_argument("--seed", type=int_at_least(0), default=0,
                            help="random seed, non-negative (the estimators' random_state)")
            mp.add_argument("--dtype", default=None, choices=["float32", "float64"],
                            help="compute dtype (default: the data's)")
            if name not in NO_PREPROCESS:
                add_preprocess_option(mp)
            add_runtime_options(mp)
            add_checkpoint_options(mp)
            if name in RESAMPLE_MODELS:
                add_resample_option(mp)
            fam.add_arguments(mp, name)
            mp.set_defaults(run=run, family=module)


def add_preprocess_option(p) -> None:
    p.add_argument("--preprocess", default=None, metavar="STEPS|FILE.json",
                   help="transform X before training and store the chain in the model file "
                        "(predict/evaluate apply it): comma-separated steps in order, e.g. "
                        "standardize,impute:median,onehot:3,7; steps: standardize, minmax, maxabs, "
                        "impute[:mean|median|most_frequent|constant=V], onehot[:COLS], pca:K; or a "
                        'JSON file [{"transformer": "SimpleImputer", "params": {"strategy": "median"}}, ...]')


def add_checkpoint_options(p) -> None:
    g = p.add_argument_group("checkpoints (survive time limits, pre-emption and crashes)")
    g.add_argument("--checkpoint", default=None, metavar="DIR",
                   help="write the training state to DIR (collectively, atomically, the last two kept); "
                        "SIGTERM, SIGUSR1 or SIGINT on any rank then stop every rank at the next step "
                        "with a checkpoint and exit status 3")
    g.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="save every N steps (k-means/solver iterations, SGD epochs, trees)")
    g.add_argument("--checkpoint-seconds", type=float, default=None, metavar="S",
                   help="save when S seconds have passed since the last save")
    g.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --checkpoint DIR (same options and data; "
                        "any number of ranks); without one, start afresh")
    g.add_argument("--requeue", action="store_true",
                   help="under Slurm: when a signal stopped the run after its checkpoint, requeue this job "
                        "(scontrol requeue $SLURM_JOB_ID); with --resume the next start continues from the "
                        "checkpoint (jobs/README.md: time limits and pre-emption)")


def add_resample_option(p) -> None:
    p.add_argument_group("imbalanced labels").add_argument(
        "--resample", default=None, metavar="under|over[:RATIO]",
        help="resample the classes by per-row integer weights drawn per global row (no row moves; the "
             "same for any number of ranks): 'under' keeps a class's rows with probability "
             "min(1, RATIO*n_min/n_c) (Bernoulli), 'over' adds Poisson(n_max/(RATIO*n_c) - 1) copies of "
             "each row of the smaller classes; RATIO (default 1: balanced) is the largest majority:minority "
             "ratio left. Beside --class-weight balanced, which reweighs without drawing")


def resample_weights_for(args, ctx, shard, classifier: bool = True):
    """The ``--resample`` row weights of this rank's rows (collective), or None without it."""
    import numpy as np

    from ..errors import ShardlearnError
    from ..models.resample import parse_resample, resample_weights

    spec = getattr(args, "resample", None)
    if spec is None:
        return None
    with ctx.collective_errors():
        if not classifier:
            raise ShardlearnError("--resample is for classifiers (a regression target has no classes)")
        kind, ratio = parse_resample(spec)
    w = resample_weights(ctx, shard.y, kind, ratio, seed=args.seed, row_offset=shard.start)
    kept = ctx.coll.allreduce(np.array([w.sum(), float(np.count_nonzero(w))]))
    ctx.log(f"resample {spec}: {int(kept[0])} weighted rows ({int(kept[1])} of {shard.n_total} rows kept)")
    return w


def read_training_shard(args, ctx, **options):
    """This rank's training rows: ``read_shard(args.data, ...)``, then, with
    ``--preprocess``, the transformer chain fitted on them (kept in ``args.fitted_steps``
    for :func:`run` to store with the model) and applied."""
    import dataclasses

    from ..data import read_shard

    args.fitted_steps = None
    if not getattr(args, "preprocess", None):
        return read_shard(args.data, ctx, **options)
    from ..errors import ShardlearnError
    from ..models.preprocessing import SimpleImputer
    from ..models.preprocessing.spec import parse_spec

    steps = None
    with ctx.collective_errors():
        steps = parse_spec(args.preprocess)
    if any(isinstance(t, SimpleImputer) for _, t in steps):
        options["allow_nan"] = True
    shard = read_shard(args.data, ctx, **options)
    X = shard.X
    for name, step in steps:
        step.comm = ctx
        X = step.fit_transform(X)
        ctx.log(f"preprocess: {name} ({type(step).__name__}) fitted: {X.shape[1]} features out")
    with ctx.collective_errors():
        if not options.get("allow_nan") and X.size and not (X == X).all():
            raise ShardlearnError("--preprocess left NaN in X that this model cannot use: add impute first")
    args.fitted_steps = steps
    return dataclasses.replace(shard, X=X, dataset=dataclasses.replace(shard.dataset, n_features=X.shape[1]))


def make_checkpoint(args, shard):
    """The Checkpoint the options ask for (None without --checkpoint)."""
    from ..checkpoint import Checkpoint
    from ..errors import ShardlearnError

    if args.checkpoint is None:
        if args.resume or args.checkpoint_every or args.checkpoint_seconds or args.requeue:
            raise ShardlearnError("--resume, --requeue, --checkpoint-every and --checkpoint-seconds need "
                                  "--checkpoint DIR")
        return None
    ds = shard.dataset
    data = {"paths": [os.path.abspath(p.path) for p in ds.parts], "part_rows": [p.rows for p in ds.parts],
            "dtype_stored": str(ds.dtype), "compute_dtype": str(shard.X.dtype)}
    if getattr(args, "preprocess", None):  # the model's input depends on the chain: resume only with the same
        data["preprocess"] = args.preprocess
    return Checkpoint(args.checkpoint, every=args.checkpoint_every, seconds=args.checkpoint_seconds,
                      resume=args.resume, data=data)


def compact_history(records) -> list:
    """Per-iteration (or per-tree) records for the run report: only the numbers of each
    record (bool as 0/1; lists, strings and None left out), floats to 6 significant digits."""
    import math
    import numbers

    out = []
    for rec in records or ():
        row = {}
        for k, v in rec.items():
            if isinstance(v, bool):
                row[k] = int(v)
            elif isinstance(v, numbers.Integral):
                row[k] = int(v)
            elif isinstance(v, numbers.Real) and math.isfinite(float(v)):
                row[k] = float(f"{float(v):.6g}")
        out.append(row)
    return out


def report_path(args) -> str:
    """``--report``, or the model path with ``.json`` instead of ``.h5``."""
    if args.report is not None:
        return args.report
    return (args.out[:-3] if args.out.endswith(".h5") else args.out) + ".json"


def run(args, ctx) -> dict:
    """Check outputs, fit, save the model (and JSON dump), return the run report."""
    from ..models.io import save_estimator
    from ..persist import write_json

    args.report = report_path(args)
    # before the first step, not after hours of training
    check_outputs(ctx, {"--out": args.out, "--report": args.report, "--json-dump": getattr(args, "json_dump", None)},
                  {"--data": args.data, "--init-file": getattr(args, "init_file", None)})
    checkpoints = []

    def checkpoint_for(shard):
        ckpt = None
        with ctx.collective_errors():
            ckpt = make_checkpoint(args, shard)
        checkpoints.append(ckpt)
        return ckpt

    try:
        est, shard, facts = _family(args.family).fit(args.model, args, ctx, checkpoint_for)
    finally:
        for ckpt in filter(None, checkpoints):
            ckpt.finish()
    ckpt = checkpoints[0] if checkpoints else None
    if ckpt is not None:
        facts = {**facts, "checkpoint": {"directory": ckpt.directory, "resumed_from_step": ckpt.resumed_from,
                                         "saved": len(ckpt.saved)}}
    if getattr(args, "fitted_steps", None):
        from ..models.pipeline import Pipeline

        est = Pipeline(args.fitted_steps + [(args.model, est)], comm=ctx)
        facts = {**facts, "preprocess": [[n, type(t).__name__] for n, t in args.fitted_steps]}
    names = None
    with ctx.collective_errors():
        if ctx.rank == 0 and getattr(est, "classes_", None) is not None:  # classifiers: labels are codes
            from ..data.importer import label_categories

            names = label_categories(args.data)  # an imported text label: predict maps codes back
    names = ctx.coll.bcast_obj(names, root=0)
    if names is not None:
        facts = {**facts, "label_categories": names}
    info = {"data": args.data, "rows": shard.n_total, "features": shard.dataset.n_features,
            **ctx.describe(), **{k: v for k, v in facts.items() if k not in ("params",)}}
    save_estimator(est, args.out, ctx, info=info)
    if getattr(args, "json_dump", None):
        with ctx.collective_errors():
            if ctx.rank == 0:
                write_json(args.json_dump, est.to_json())
    ctx.log(f"model: {args.out}")
    return {"command": "train", "model": args.model, "data": args.data, "out": args.out,
            "params": est.model_params(), **facts}
