"""``shardlearn``: the parser, dispatch, error handling and run reports.

Each command module adds its parsers (``add_parsers(sub)``) and sets ``run(args, ctx)`` as
the parsed command's handler; ``main`` builds the SPMD context, runs it, writes the report.
"""
from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..errors import EXIT_INTERRUPTED, ShardlearnError, TrainingInterrupted
from . import apply, bench_comm, data, import_data, search, train
from . import report as report_cmd

EPILOG = """\
Run every command under MPI, the same on every rank:
  mpiexec -n 4 shardlearn make-data blobs --rows 1000000 --features 32 --centers 16 --out data/blobs
  mpiexec -n 4 shardlearn train kmeans --data data/blobs --k 16 --out runs/km.h5
  mpiexec -n 4 shardlearn predict --model runs/km.h5 --data data/blobs --out runs/labels.h5
  mpiexec -n 4 shardlearn evaluate --model runs/km.h5 --data data/blobs
Under Slurm use 'srun --mpi=pmi2 shardlearn ...' (see jobs/README.md).
On one workstation with the pip MPICH, export UCX_NET_DEVICES=lo to keep traffic on loopback.
'shardlearn COMMAND --help' explains each command's options."""


def _launch_rank() -> int:
    """This process's rank: from MPI if it already runs, else from the launcher's environment
    (parsing happens before MPI starts), else 0."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        return mpi.COMM_WORLD.Get_rank()
    for var in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "SLURM_PROCID"):
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 0


class Parser(argparse.ArgumentParser):
    """argparse for SPMD: every rank parses the same command line, so only rank 0 prints.

    Help, usage and version appear once; a command-line error is one line
    ``shardlearn: error: ...`` (as every other error) and every rank exits with status 2.
    Subcommand parsers inherit this class.
    """

    def _print_message(self, message, file=None):
        if _launch_rank() == 0:
            super()._print_message(message, file)

    def error(self, message):
        command = self.prog.partition(" ")[2]
        self.exit(2, f"shardlearn: error: {command + ': ' if command else ''}{message} "
                     f"(see '{self.prog} --help')\n")


def one_line(text: str) -> str:
    """A message as one line (HDF5's own messages span several)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="shardlearn",
        description="Train classic ML models on HDF5 data sharded across MPI ranks: each rank "
                    "reads only its block of rows; the ranks agree on the model with "
                    "allreduce and broadcast.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"shardlearn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data.add_parsers(sub)
    import_data.add_parsers(sub)
    bench_comm.add_parsers(sub)
    train.add_parsers(sub)
    search.add_parsers(sub)
    apply.add_parsers(sub)
    report_cmd.add_parsers(sub)
    return p


def write_report(ctx, path: str | None, report: dict) -> None:
    """Add the runtime facts, the slowest rank's seconds per phase and each rank's times;
    rank 0 writes it.

    ``seconds``: per phase, the slowest rank's. ``ranks``: one entry per rank. Both come from
    one allgather of every rank's timings here at the end, never per step: ``io`` (reading data), ``communication`` (inside collectives),
    ``compute`` (the rest of the rank's wall time: total - io - communication), ``total``
    (wall time since the context started) and ``waiting`` = this rank's communication time
    minus the smallest communication time of any rank: an estimate of the time it sat in
    collectives waiting for slower ranks (the fastest-communicating rank counts as 0).
    """
    from ..persist import write_json

    report = dict(report)
    report["runtime"] = ctx.describe()
    # every rank's timings (ranks may have timed different phases): the slowest per phase
    # and the per-rank table both come from this one gather
    every = ctx.mpi_comm.allgather(ctx.timings())
    keys = sorted(set().union(*every))
    report["seconds"] = {k: round(float(max(t.get(k, 0.0) for t in every)), 4) for k in keys}
    report["ranks"] = rank_times(every)
    if path:
        with ctx.collective_errors():
            if ctx.rank == 0:
                write_json(path, report)
        ctx.log(f"report: {path}")


def rank_times(every: list) -> list:
    """Per-rank ``{rank, compute, io, communication, waiting, total}`` from each rank's
    ``ctx.timings()`` (see :func:`write_report` for what each means)."""
    fastest_comm = min((t.get("communication", 0.0) for t in every), default=0.0)
    out = []
    for rank, t in enumerate(every):
        io, comm, total = t.get("io", 0.0), t.get("communication", 0.0), t.get("total", 0.0)
        out.append({"rank": rank, "compute": round(max(0.0, total - io - comm), 4), "io": round(io, 4),
                    "communication": round(comm, 4), "waiting": round(comm - fastest_comm, 4),
                    "total": round(total, 4)})
    return out


def requeue_slurm_job() -> None:
    """``scontrol requeue $SLURM_JOB_ID`` (rank 0, after a checkpointed stop); says what happened."""
    import subprocess

    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        sys.stderr.write("shardlearn: warning: --requeue: not inside a Slurm job; nothing requeued\n")
        return
    try:
        proc = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
        ok, why = proc.returncode == 0, proc.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        ok, why = False, str(exc)
    sys.stderr.write(f"shardlearn: requeued Slurm job {job}: it resumes from the checkpoint when it starts "
                     "again\n" if ok else f"shardlearn: warning: could not requeue job {job} ({why})\n")
    sys.stderr.flush()


def main(argv=None) -> int:
    """Entry point: parse, build the SPMD context, run, report; errors end every rank."""
    args = build_parser().parse_args(argv)
    if not getattr(args, "needs_mpi", True):
        # a one-process command (report): no Context, no collectives; under mpiexec only
        # rank 0 runs it
        if _launch_rank() != 0:
            return 0
        return args.run(args)
    from ..runtime import abort_world, init

    try:
        ctx = init(device=args.device, topology=args.topology, threads=args.threads,
                   verbose=not args.quiet, stall_timeout=args.stall_timeout)
        report = args.run(args, ctx)
        if report is not None:
            write_report(ctx, args.report, report)
    except ShardlearnError as exc:
        from mpi4py import MPI

        world = MPI.COMM_WORLD
        if getattr(exc, "agreed", False):
            # raised on every rank alike (collective agreement): print once, exit on all
            if world.Get_rank() == 0:
                kind = "stopped" if isinstance(exc, TrainingInterrupted) else "error"
                sys.stderr.write(f"shardlearn: {kind}: {one_line(exc)}\n")
                sys.stderr.flush()
            if isinstance(exc, TrainingInterrupted) and getattr(args, "requeue", False):
                # every rank is here. Slurm answers the requeue by signalling the job at once:
                # ignore SIGTERM so that every rank still leaves MPI cleanly (a rank killed
                # inside MPI leaves shared memory that the restarted job would trip on)
                import signal

                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                if world.Get_rank() == 0:
                    requeue_slurm_job()
                world.Barrier()
                MPI.Finalize()
            return EXIT_INTERRUPTED if isinstance(exc, TrainingInterrupted) else 2
        # raised on this rank alone: the others may be waiting in a collective
        sys.stderr.write(f"shardlearn: error: {one_line(exc)}\n")
        sys.stderr.flush()
        if world.Get_size() > 1:
            abort_world(2)
        return 2
    return 0
