"""``shardlearn predict`` and ``evaluate``: apply a saved model to a dataset."""
from __future__ import annotations

from .options import add_runtime_options, check_outputs


def add_parsers(sub) -> None:
    pr = sub.add_parser("predict", help="apply a model to a dataset; outputs in global row order")
    pr.add_argument("--model", required=True)
    pr.add_argument("--data", required=True)
    pr.add_argument("--out", required=True, help="HDF5 file for the predictions")
    add_runtime_options(pr)
    pr.set_defaults(run=run_predict)

    ev = sub.add_parser("evaluate", help="score a model on a (labelled) dataset")
    ev.add_argument("--model", required=True)
    ev.add_argument("--data", required=True)
    add_runtime_options(ev)
    ev.set_defaults(run=run_evaluate)


def _load(args, ctx, need_y: bool):
    from ..data import read_shard
    from ..errors import ShardlearnError
    from ..models.io import load_estimator

    est = load_estimator(args.model, ctx)
    shard = read_shard(args.data, ctx, need_y=need_y and est.evaluate_needs_y, **est.data_options)
    with ctx.collective_errors():
        if shard.dataset.n_features != est.n_features_in_:
            raise ShardlearnError(f"{args.data} has {shard.dataset.n_features} features but the model "
                                  f"{args.model} was trained on {est.n_features_in_}")
    return est, shard


def run_predict(args, ctx) -> dict:
    from ..persist import write_rows
    check_outputs(ctx, {"--out": args.out, "--report": args.report},  # before reading anything
                  {"--data": args.data, "--model": args.model})
    est, shard = _load(args, ctx, need_y=False)
    with ctx.collective_errors():  # e.g. data of another feature count: one message, every rank
        columns = est.predict_columns(shard.X)
    _label_names(args, ctx, columns)
    write_rows(args.out, columns, shard.start, shard.n_total, ctx)
    ctx.log(f"predictions for {shard.n_total} rows: {args.out}")
    return {"command": "predict", "model": args.model, "data": args.data, "out": args.out}


def _label_names(args, ctx, columns) -> None:
    """A model trained on an imported text label (``import --categorical LABEL``): add the
    predicted labels' names as a ``label_name`` column (bytes, UTF-8)."""
    import numpy as np

    names = None
    with ctx.collective_errors():
        if ctx.rank == 0 and "label" in columns:
            from ..persist import load_model

            names = load_model(args.model)[3].get("label_categories")
    names = ctx.coll.bcast_obj(names, root=0)
    if names:
        table = np.array([str(n).encode() for n in names], dtype="S")
        codes = np.asarray(columns["label"]).astype(np.int64)
        columns["label_name"] = table[np.clip(codes, 0, len(table) - 1)]


def run_evaluate(args, ctx) -> dict:
    est, shard = _load(args, ctx, need_y=True)
    metrics = est.evaluate(shard.X, shard.y)
    ctx.log(" ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    return {"command": "evaluate", "model": args.model, "data": args.data, "metrics": metrics}
