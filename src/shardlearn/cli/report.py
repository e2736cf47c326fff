"""``shardlearn report RUN.json [--plot OUT.png]``: read a train run report, print a summary
and (with matplotlib, the ``[plot]`` extra) draw the curve per iteration/tree and a bar per rank.

One process, no MPI: ``main`` builds no Context for it (``needs_mpi=False``); under
``mpiexec`` only rank 0 runs it. Parsing the command imports nothing heavy.
"""
from __future__ import annotations

import json

PLOT_HINT = "plots need matplotlib: pip install 'shardlearn[plot]'"
#: what a run report must hold (``shardlearn train`` writes them all)
REQUIRED = ("command", "model", "params", "seconds", "runtime")
#: the curve drawn, in order of preference: (history key, label); trees record their metrics
#: only when training logs them (not --quiet) or stops early: else their seconds are drawn
CURVES = (("valid_logloss", "validation log-loss"), ("valid_rmse", "validation RMSE"),
          ("valid_auc", "validation AUC"), ("val_loss", "validation loss"), ("loss", "loss"),
          ("train_logloss", "training log-loss"), ("train_rmse", "training RMSE"),
          ("inertia", "inertia"), ("seconds", "seconds"))


def add_parsers(sub) -> None:
    rp = sub.add_parser("report", help="summarise a run report (JSON) and plot it",
                        description="Print a readable summary of a 'shardlearn train' run report: "
                                    "parameters, convergence, final metrics, seconds per phase "
                                    "(slowest rank), the time of every rank (compute, I/O, "
                                    "communication, waiting) and bytes sent; with --plot draw the "
                                    "loss/metric per iteration or tree and a bar per rank. "
                                    "Runs on one process.")
    rp.add_argument("run_report", metavar="RUN.json", help="the report 'shardlearn train' wrote")
    rp.add_argument("--plot", default=None, metavar="OUT.png",
                    help="also write a PNG (needs matplotlib: pip install 'shardlearn[plot]')")
    rp.set_defaults(run=run, needs_mpi=False)


def load(path: str) -> dict:
    """The run report at ``path``; a ShardlearnError (one line) when it is not one."""
    from ..errors import ShardlearnError

    try:
        with open(path) as f:
            rep = json.load(f)
    except FileNotFoundError:
        raise ShardlearnError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ShardlearnError(f"{path}: is a directory, not a run report") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ShardlearnError(f"{path}: not JSON ({exc})") from None
    except OSError as exc:
        raise ShardlearnError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(rep, dict):
        raise ShardlearnError(f"{path}: not a shardlearn run report (a JSON object is expected)")
    missing = [k for k in REQUIRED if k not in rep]
    if missing:
        raise ShardlearnError(f"{path}: not a shardlearn run report (no {', '.join(missing)}); "
                              "give the .json that 'shardlearn train' writes beside the model")
    return rep


def _num(v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return str(v) if isinstance(v, int) else f"{v:.6g}"


def curve(rep: dict):
    """(key, label, xs, ys) of the curve to draw from ``history``, or None."""
    hist = rep.get("history") or []
    for key, label in CURVES:
        pts = [(r.get("iter", r.get("iteration", i + 1)), r[key]) for i, r in enumerate(hist) if key in r]
        if pts:
            return key, label, [p[0] for p in pts], [p[1] for p in pts]
    return None


def summary(rep: dict) -> str:
    """The text ``shardlearn report`` prints."""
    lines = []
    rt = rep.get("runtime", {})
    lines.append(f"run: train {rep['model']} on {rep.get('data', '?')} -> {rep.get('out', '?')} "
                 f"({rt.get('ranks', '?')} ranks, topology {rt.get('topology', '?')}, "
                 f"device {rt.get('device', '?')})")
    lines.append("")
    lines.append("parameters:")
    params = rep.get("params") or {}
    for k in sorted(params):
        if params[k] is not None and not isinstance(params[k], (dict, list)):
            lines.append(f"  {k} = {_num(params[k])}")
    lines.append("")
    lines.append("convergence:")
    if "n_iter" in rep:
        lines.append(f"  iterations: {rep['n_iter']}")
    for k in ("n_trees", "best_iteration", "converged", "stop_reason", "loss"):
        if rep.get(k) is not None:
            lines.append(f"  {k.replace('_', ' ')}: {_num(rep[k])}")
    c = curve(rep)
    if c is not None:
        key, label, xs, ys = c
        lines.append(f"  {label}{'' if key == label else f' ({key})'}: first {_num(ys[0])} at {xs[0]}, last {_num(ys[-1])} at {xs[-1]} "
                     f"({len(ys)} records)")
    lines.append("")
    metrics = rep.get("metrics") or {}
    if metrics:
        lines.append("final metrics:")
        for k, v in metrics.items():
            if isinstance(v, list):
                v = "[" + ", ".join(_num(x) for x in v[:16]) + (", ..." if len(v) > 16 else "") + "]"
            lines.append(f"  {k} = {_num(v)}")
        lines.append("")
    lines.append("seconds per phase (slowest rank):")
    for k, v in sorted(rep["seconds"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {k:<16} {v:10.4f}")
    ranks = rep.get("ranks") or []
    if ranks:
        lines.append("")
        lines.append("per rank (seconds; waiting = communication - the least communication of any rank):")
        lines.append(f"  {'rank':>4} {'compute':>10} {'io':>10} {'comm':>10} {'waiting':>10} {'total':>10}")
        for r in ranks:
            lines.append(f"  {r['rank']:>4} {r['compute']:10.4f} {r['io']:10.4f} {r['communication']:10.4f} "
                         f"{r['waiting']:10.4f} {r['total']:10.4f}")
        totals = [r["total"] for r in ranks]
        lo = min(totals)
        ratio = f"{max(totals) / lo:.2f}" if lo > 0 else "n/a"
        most = max(ranks, key=lambda r: r["waiting"])
        lines.append(f"  imbalance: max/min total = {ratio}; rank {most['rank']} waited most "
                     f"({most['waiting']:.4f} s)")
    sent = {k: rep[k] for k in ("bytes_sent_per_tree", "wire_bytes_per_tree", "collectives_per_tree")
            if k in rep}
    if sent:
        lines.append("")
        lines.append("bytes sent:")
        for k, v in sent.items():
            lines.append(f"  {k.replace('_', ' ')}: {_num(v)}")
    return "\n".join(lines)


def plot(rep: dict, out: str) -> None:
    """One PNG, two panels: the curve per iteration/tree and a stacked bar per rank; written
    atomically. Raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..util.files import atomic_path, check_output_dir

    check_output_dir(out)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    c = curve(rep)
    step = "tree" if rep["model"] in ("gbdt", "forest") else "iteration"
    if c is not None:
        key, label, xs, ys = c
        ax1.plot(xs, ys, marker="o" if len(xs) <= 40 else None, ms=3)
        ax1.set_xlabel(step)
        ax1.set_ylabel(label)
        ax1.set_title(f"{rep['model']}: {label} per {step}")
        ax1.grid(alpha=0.3)
    else:
        ax1.text(0.5, 0.5, "no per-iteration history in this report", ha="center", va="center")
        ax1.set_axis_off()
    ranks = rep.get("ranks") or []
    if ranks:
        idx = [r["rank"] for r in ranks]
        bottom = [0.0] * len(ranks)
        for key, label, color in (("compute", "compute", "tab:blue"),
                                  ("communication", "communication (of it: waiting, hatched)", "tab:orange"),
                                  ("io", "I/O", "tab:green")):
            vals = [r[key] for r in ranks]
            ax2.bar(idx, vals, bottom=bottom, label=label, color=color)
            if key == "communication":  # the waiting part on top of the communication bar
                wait = [r["waiting"] for r in ranks]
                ax2.bar(idx, wait, bottom=[b + v - w for b, v, w in zip(bottom, vals, wait)],
                        fill=False, hatch="//", edgecolor="black", linewidth=0)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax2.set_xticks(idx)
        ax2.set_xlabel("rank")
        ax2.set_ylabel("seconds")
        ax2.set_title("time per rank")
        ax2.set_ylim(0, max(bottom) * 1.4 or 1.0)  # room for the legend above the bars
        ax2.legend(fontsize=8, loc="upper right")
    else:
        ax2.text(0.5, 0.5, "no per-rank times in this report", ha="center", va="center")
        ax2.set_axis_off()
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _say(text: str) -> None:
    """print, but a reader that left (``shardlearn report R --plot P | head``) ends only the text:
    the rest goes to /dev/null and the plot is still drawn."""
    import os
    import sys

    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def run(args) -> int:
    """Print the summary; with --plot write the PNG (or say how to get matplotlib)."""
    import sys

    from ..errors import ShardlearnError

    try:
        rep = load(args.run_report)
        text = summary(rep)
    except ShardlearnError as exc:
        sys.stderr.write(f"shardlearn: error: report: {exc}\n")
        return 2
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        sys.stderr.write(f"shardlearn: error: report: {args.run_report}: not a shardlearn run report "
                         f"(malformed entry: {type(exc).__name__} {exc})\n")
        return 2
    _say(text)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            _say(PLOT_HINT)
            return 0
        try:
            plot(rep, args.plot)
        except (ShardlearnError, OSError) as exc:
            sys.stderr.write(f"shardlearn: error: report: --plot {args.plot}: {exc}\n")
            return 2
        _say(f"plot: {args.plot}")
    return 0
