"""Options and help formatting shared by every command."""
from __future__ import annotations

import argparse

TOPOLOGIES = ("native", "ring", "tree", "hierarchical", "auto")


def int_at_least(low: int):
    """An argparse ``type``: an integer >= ``low``; anything else is a usage error (printed once)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low} (got {value})")
        return value

    return parse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option, descriptions and examples kept as written."""


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    """``--topology --device --threads --report --quiet``: how the ranks run, for every command."""
    g = p.add_argument_group("runtime")
    g.add_argument("--topology", default="auto", choices=TOPOLOGIES,
                   help="collective algorithm: MPI's own, ring (bandwidth-optimal), "
                        "tree (latency-optimal), hierarchical (node-aware: reduce within "
                        "each node, allreduce among nodes, broadcast within each node) or "
                        "auto by message size (default: auto)")
    g.add_argument("--device", default=None, choices=["cpu", "gpu"],
                   help="compute with NumPy on CPU or CuPy on GPU; each rank binds to GPU "
                        "local_rank %% n_gpus (default: cpu, or SHARDLEARN_DEVICE)")
    g.add_argument("--threads", type=int_at_least(1), default=None,
                   help="BLAS/OpenMP threads per rank (default: the node's cores divided by "
                        "the ranks on the node, or OMP_NUM_THREADS if set)")
    g.add_argument("--report", default=None, metavar="FILE.json",
                   help="write a JSON run report here (train: default OUT with .json)")
    g.add_argument("--quiet", action="store_true", help="no progress lines")
    g.add_argument("--stall-timeout", type=float, default=None, metavar="S",
                   help="if no collective completes for S seconds, every rank prints its Python stack "
                        "and the job aborts naming the stalled rank (default: off, or "
                        "SHARDLEARN_STALL_TIMEOUT)")


def check_outputs(ctx, outputs: dict, inputs: dict) -> None:
    """Before any work, on every rank alike: no output may replace an input, and each output
    (option -> path or None) must be a file name in an existing, writable directory."""
    import os

    from ..errors import ShardlearnError
    from ..util.files import check_output_dir, refuse_inputs_as_outputs

    with ctx.collective_errors():
        if ctx.rank == 0:
            refuse_inputs_as_outputs(outputs, inputs)
            for path in filter(None, outputs.values()):
                check_output_dir(path)
                if os.path.isdir(path):
                    raise ShardlearnError(f"{path}: is a directory; give a file name")
