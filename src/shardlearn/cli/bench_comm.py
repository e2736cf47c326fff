"""``shardlearn bench-comm``: time allreduce per topology and message size."""
from __future__ import annotations

from .options import TOPOLOGIES, add_runtime_options


def add_parsers(sub) -> None:
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
    add_runtime_options(bc)
    bc.set_defaults(run=run)


def run(args, ctx) -> dict:
    """Run the benchmark (collective); returns the report dict on every rank."""
    from ..comm.auto import AutoCollectives
    from ..comm.bench import bench_sizes, format_table, parse_size
    from ..errors import ShardlearnError
    from ..persist import write_json

    with ctx.collective_errors():
        sizes = [parse_size(s) for s in str(args.sizes).split(",") if s.strip()]
        topologies = [t.strip() for t in str(args.topologies).split(",") if t.strip()]
        bad = [t for t in topologies if t not in TOPOLOGIES]
        if bad:
            raise ShardlearnError(f"bench-comm: unknown topology {bad[0]!r}: "
                                  f"choose from {', '.join(TOPOLOGIES)}")
        if not sizes or not topologies:
            raise ShardlearnError("bench-comm: give at least one size and one topology")
        if args.repeats is not None and args.repeats < 1:
            raise ShardlearnError("bench-comm: --repeats must be at least 1")
    rows = bench_sizes(ctx.mpi_comm, sizes, topologies, args.repeats)
    ctx.log(format_table(rows, topologies, ctx.size))
    report = {"command": "bench-comm", "ranks": ctx.size, "dtype": "float64", "op": "sum",
              "timing": "median over repeats of the slowest rank's mean time per call in a "
                        "barrier-started loop", "results": rows}
    if "auto" in topologies:
        report["auto_rule"] = AutoCollectives.describe_rule(ctx.size, AutoCollectives.spans_nodes(ctx.mpi_comm))
    if args.json_out:
        with ctx.collective_errors():  # a bad path fails on every rank, not only rank 0
            if ctx.rank == 0:
                write_json(args.json_out, report)
        ctx.log(f"results: {args.json_out}")
    return report
