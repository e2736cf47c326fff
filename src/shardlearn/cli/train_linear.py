"""``shardlearn train linear|ridge|lasso|logistic|svm``."""
from __future__ import annotations

import argparse
import json

MODELS = {
    "linear": "least-squares linear regression (normal equations, GD, SGD or L-BFGS)",
    "ridge": "L2-penalised least squares",
    "lasso": "L1-penalised least squares (proximal gradient)",
    "logistic": "logistic regression, binary or multinomial (L-BFGS, GD or SGD)",
    "svm": "linear support vector classifier, binary or one-vs-rest (scikit-learn's LinearSVC objective)",
}
#: solvers each model accepts, the default first (the estimators check the same lists)
SOLVERS = {
    "linear": ("normal", "lbfgs", "gd", "fista", "sgd"),
    "ridge": ("normal", "lbfgs", "gd", "fista", "sgd"),
    "lasso": ("fista", "gd", "sgd"),
    "logistic": ("lbfgs", "gd", "fista", "sgd"),
    "svm": ("lbfgs", "gd", "fista", "sgd"),
}
SCHEDULES = ("constant", "invscaling", "cosine")
SOLVER_HELP = {"normal": "allreduce X^T X and X^T y once and solve by Cholesky (exact, one pass)",
               "lbfgs": "quasi-Newton, one allreduce per loss+gradient evaluation",
               "gd": "gradient descent with backtracking (proximal for L1)",
               "fista": "accelerated proximal gradient with adaptive restart",
               "sgd": "synchronous mini-batch SGD; batches keyed by global row, the same for any rank count"}


def class_weight_arg(text: str):
    """``balanced``, ``none``, JSON ``{"0": 1, "1": 5}`` or ``0:1,1:5``."""
    if text is None or text.lower() == "none":
        return None
    if text == "balanced":
        return "balanced"
    try:
        if text.lstrip().startswith("{"):
            d = json.loads(text)
        else:
            d = dict(item.split(":") for item in text.split(","))
        return {float(k): float(v) for k, v in d.items()}
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(
            f"--class-weight {text!r}: expected 'balanced', 'none', LABEL:WEIGHT,... or a JSON object") from exc


def staleness_arg(text: str):
    """``inf`` (asynchronous) or a whole number >= 0."""
    if text.strip().lower() == "inf":
        return "inf"
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"--staleness {text!r}: expected a whole number >= 0 or 'inf'")
    return value


def add_arguments(parser, name: str) -> None:
    solvers = SOLVERS[name]
    g = parser.add_argument_group(f"{name} model")
    g.add_argument("--solver", choices=solvers, default=solvers[0],
                   help="; ".join(f"{s}: {SOLVER_HELP[s]}" for s in solvers))
    if name == "svm":
        g.add_argument("--C", type=float, default=1.0, dest="C",
                       help="inverse regularisation strength: minimise C * sum(loss) + penalty")
        g.add_argument("--loss", choices=["squared_hinge", "hinge"], default="squared_hinge",
                       help="squared_hinge: max(0, 1 - y z)^2 (smooth, any solver); hinge: max(0, 1 - y z) "
                            "(needs --solver sgd: subgradient steps)")
        g.add_argument("--penalty", choices=["l2", "l1"], default="l2",
                       help="l2: 1/2 ||w||^2; l1: ||w||_1 (needs --solver gd, fista or sgd); the intercept is "
                            "penalised too, as in scikit-learn's LinearSVC")
        g.add_argument("--intercept-scaling", type=float, default=1.0,
                       help="the intercept is the coefficient of a constant feature of this value (larger: "
                            "weaker penalty on the intercept)")
        g.add_argument("--class-weight", type=class_weight_arg, default=None, metavar="balanced|LABEL:W,...",
                       help="reweigh classes: 'balanced' uses n/(K n_k) from global class counts; "
                            "or explicit weights like 0:1,1:5")
    if name in ("ridge", "lasso"):
        g.add_argument("--alpha", type=float, default=1.0,
                       help="penalty strength, scikit-learn's scaling: minimise " +
                            ("||y - Xw - b||^2 + alpha ||w||^2" if name == "ridge"
                             else "1/(2n) ||y - Xw - b||^2 + alpha ||w||_1"))
    if name == "logistic":
        g.add_argument("--C", type=float, default=1.0, dest="C",
                       help="inverse regularisation strength: minimise C * sum(log-loss) + penalty")
        g.add_argument("--penalty", choices=["l2", "l1", "none"], default="l2",
                       help="l2: 1/2 ||w||^2; l1: ||w||_1 (needs --solver gd, fista or sgd); none")
        g.add_argument("--class-weight", type=class_weight_arg, default=None, metavar="balanced|LABEL:W,...",
                       help="reweigh classes: 'balanced' uses n/(K n_k) from global class counts; "
                            "or explicit weights like 0:1,1:5")
    g.add_argument("--fit-intercept", action=argparse.BooleanOptionalAction, default=True,
                   help="fit an unpenalised intercept")
    g.add_argument("--standardize", action="store_true",
                   help="scale features by their global standard deviation while solving (one allreduce); "
                        "coefficients are stored on the original scale; penalties then apply to the "
                        "standardised coefficients")
    if name != "svm":  # (LinearSVC's hinge losses have no exact objective)
        g.add_argument("--exact-reduce", action="store_true",
                       help="exact, order-independent sums (int64 fixed point): the model is bit-identical for "
                            "any number of ranks and topology; needs --solver lbfgs, gd or fista (cost: "
                            "bench/exact_reduce.md; CPU only)")
    it = parser.add_argument_group("iterative solvers (lbfgs, gd, fista, sgd)")
    it.add_argument("--max-iter", type=int, default=None,
                    help="maximum iterations; unset: 100 for lbfgs, 1000 for gd/fista (sgd uses --epochs)")
    it.add_argument("--tol", type=float, default=1e-4,
                    help="stop when the max-norm of the gradient (mapping) of the loss divided by the "
                         "total sample weight falls below this; sgd: minimum improvement per epoch")
    it.add_argument("--validation-fraction", type=float, default=0.0,
                    help="hold out this fraction of rows (chosen by global row index and --seed) and stop "
                         "when their loss stops improving; the best model on them is kept")
    it.add_argument("--n-iter-no-change", type=int, default=5,
                    help="iterations (sgd: epochs) without improvement before stopping")
    it.add_argument("--lbfgs-memory", type=int, default=10, help="L-BFGS correction pairs kept")
    sg = parser.add_argument_group("sgd")
    sg.add_argument("--batch-size", type=int, default=256, help="global mini-batch size (rows over all ranks)")
    sg.add_argument("--learning-rate", type=float, default=0.01,
                    help="initial step size eta0 (gd: a fixed step if --fixed-step)")
    sg.add_argument("--schedule", choices=SCHEDULES, default="invscaling",
                    help="step size: constant eta0; invscaling eta0/(t+1)^power_t; cosine decay to 0 over all steps")
    sg.add_argument("--power-t", type=float, default=0.5, help="exponent of the invscaling schedule")
    sg.add_argument("--momentum", type=float, default=0.0, help="heavy-ball momentum in [0, 1)")
    sg.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    sg.add_argument("--epochs", type=int, default=10, help="maximum passes over the training rows")
    sg.add_argument("--fixed-step", action="store_true",
                    help="gd: use --learning-rate as a fixed step instead of backtracking")
    ps = parser.add_argument_group("sgd aggregation: allreduce or a parameter server")
    ps.add_argument("--aggregation", choices=["allreduce", "ps"], default="allreduce",
                    help="allreduce: every step sums the gradients in one allreduce; ps: ranks 0..S-1 also "
                         "serve slices of the parameters (MPI one-sided windows) and every rank pulls "
                         "parameters and pushes updates at its own pace, within --staleness")
    ps.add_argument("--servers", type=int, default=1, help="ps: number of server ranks S (each owns 1/S of the parameters)")
    ps.add_argument("--staleness", type=staleness_arg, default=0, metavar="0|s|inf",
                    help="ps: 0 = bulk-synchronous (the allreduce result up to rounding); s > 0 = stale-"
                         "synchronous (a rank runs at most s steps ahead of the slowest); inf = asynchronous")
    ps.add_argument("--ps-average", choices=["weighted", "mean"], default="weighted",
                    help="ps: weighted = batch-size-weighted mean of the gradients (as allreduce); mean = "
                         "every rank's batch-mean gradient counts 1/P")
    ps.add_argument("--straggler", default=None, metavar="RANK:FACTOR",
                    help="testing: make RANK FACTOR times slower in its gradient computation (it sleeps "
                         "FACTOR-1 times its compute time), to study stragglers")


def build(name: str, args, ctx):
    """The estimator the options describe (not fitted)."""
    from ..models.linear import Lasso, LinearRegression, LinearSVC, LogisticRegression, Ridge

    common = dict(fit_intercept=args.fit_intercept, standardize=args.standardize, solver=args.solver,
                  max_iter=args.max_iter, tol=args.tol, batch_size=args.batch_size,
                  learning_rate=args.learning_rate, schedule=args.schedule, power_t=args.power_t,
                  momentum=args.momentum, nesterov=args.nesterov, epochs=args.epochs,
                  validation_fraction=args.validation_fraction, n_iter_no_change=args.n_iter_no_change,
                  lbfgs_memory=args.lbfgs_memory, fixed_step=args.fixed_step, random_state=args.seed, comm=ctx,
                  aggregation=args.aggregation, servers=args.servers, staleness=args.staleness,
                  ps_average=args.ps_average, straggler=args.straggler)
    if name != "svm":
        common["exact_reduce"] = bool(args.exact_reduce)
    if name == "linear":
        return LinearRegression(**common)
    if name == "ridge":
        return Ridge(alpha=args.alpha, **common)
    if name == "lasso":
        return Lasso(alpha=args.alpha, **common)
    if name == "svm":
        return LinearSVC(C=args.C, loss=args.loss, penalty=args.penalty, intercept_scaling=args.intercept_scaling,
                         class_weight=args.class_weight, **{**common, "max_iter": args.max_iter or 1000})
    return LogisticRegression(C=args.C, penalty=None if args.penalty == "none" else args.penalty,
                              class_weight=args.class_weight, **common)


def fit(name: str, args, ctx, checkpoint_for):
    """Read the data, fit; return (estimator, shard, report facts)."""
    from .train import compact_history, read_training_shard, resample_weights_for

    shard = read_training_shard(args, ctx, dtype=args.dtype, need_y=True)
    est = build(name, args, ctx)
    sw = resample_weights_for(args, ctx, shard)   # --resample: logistic and svm (None otherwise)
    # steps: solver iterations (lbfgs, gd, fista), epochs (sgd); normal: one step
    checkpoint = checkpoint_for(shard)
    with ctx.timers.phase("fit"):
        est.fit(shard.X, shard.y, sw, row_offset=shard.start, checkpoint=checkpoint)
    metrics = est.evaluate(shard.X, shard.y)
    ctx.log(f"{name}: training " + " ".join(f"{k}={v:.6g}" for k, v in metrics.items()))
    return est, shard, {"n_iter": est.n_iter_, "loss": est.loss_, "converged": est.converged_,
                        "stop_reason": est.stop_reason_, "metrics": metrics, "fit_seconds": est.fit_seconds_,
                        "history": compact_history(est.history_)}
