"""The SPMD context: communicator, ranks, device, threads, errors, logging, timers.

Every rank builds one :class:`Context` with :func:`init`; models take it (or a bare
communicator, via :func:`context_from`) and never reach for ``COMM_WORLD`` themselves,
so a later model-selection layer can hand each candidate a ``Comm.Split`` group.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback

from .errors import ShardlearnError

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


class PhaseTimers:
    """Wall-clock seconds summed per named phase (``compute``, ``io``, ...).

    Communication time is counted by the collectives object itself, so a phase that
    contains collectives should not be named ``communication``.
    """

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


class Context:
    """Everything a rank needs to take part in a distributed fit.

    Attributes
    ----------
    mpi_comm : mpi4py.MPI.Comm
    coll : shardlearn.comm.Collectives
        ``allreduce``/``bcast``/``allgather``/``reduce_scatter`` for the chosen topology.
    rank, size : int
    local_rank, local_size : int
        Position among the ranks on this node (``Split_type(COMM_TYPE_SHARED)``).
    device : {"cpu", "gpu"}
    xp : module
        ``numpy`` or ``cupy``.
    threads : int
        BLAS/OpenMP threads this rank uses.
    timers : PhaseTimers
    """

    def __init__(self, mpi_comm, *, device="cpu", topology="auto", threads=None, verbose=True):
        from . import backend
        from .comm import make_collectives

        self.mpi_comm = mpi_comm
        self.rank = mpi_comm.Get_rank()
        self.size = mpi_comm.Get_size()
        self.verbose = verbose
        self.topology = topology
        self.timers = PhaseTimers()
        node = mpi_comm.Split_type(_shared_type(), key=self.rank)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self.threads = limit_threads(self.local_size, threads)
        self.coll = make_collectives(mpi_comm, topology)
        self.device = device
        self.xp, self.gpu_id, error = None, None, None
        try:  # a node without CuPy or GPUs: one agreed message, not an abort per rank
            self.xp = backend.get_xp(device)
            self.gpu_id = backend.bind_gpu(self.local_rank) if device == "gpu" else None
        except ShardlearnError as exc:
            error = str(exc)
        self.agree(error)

    # ------------------------------------------------------------------ logging
    def log(self, msg: str) -> None:
        """Print one whole line from rank 0 (one write, so job logs do not interleave)."""
        if self.rank == 0 and self.verbose:
            sys.stdout.write(msg + "\n")
            sys.stdout.flush()

    def warn(self, msg: str) -> None:
        """A warning line on stderr from rank 0."""
        if self.rank == 0:
            sys.stderr.write(f"shardlearn: warning: {msg}\n")
            sys.stderr.flush()

    # ------------------------------------------------------------------- errors
    def agree(self, error: str | None) -> None:
        """Collective error agreement: raise the same ShardlearnError on every rank.

        Each rank passes its own problem (or None). One allreduce finds the lowest
        failing rank; its message is broadcast and every rank raises it. Every rank
        must call this, so nobody is left waiting in a later collective.
        """
        from mpi4py import MPI

        flag = self.rank if error is not None else self.size
        first = self.mpi_comm.allreduce(flag, op=MPI.MIN)
        if first == self.size:
            return
        msg = self.mpi_comm.bcast(error, root=first)
        exc = ShardlearnError(msg)
        exc.agreed = True  # every rank raises it: the CLI exits cleanly, no abort needed
        raise exc

    @contextlib.contextmanager
    def collective_errors(self):
        """Run a block of local checks, then agree on the outcome across ranks.

        A :class:`ShardlearnError` raised inside the block on any rank is re-raised
        on every rank after the block; other exceptions propagate (and abort).
        """
        error = None
        try:
            yield
        except ShardlearnError as exc:
            error = str(exc)
        self.agree(error)

    # ------------------------------------------------------------------ timings
    def timings(self) -> dict:
        """Seconds per phase on this rank: the timers plus communication."""
        out = {k: round(v, 6) for k, v in self.timers.seconds.items()}
        out["communication"] = round(self.coll.comm_seconds, 6)
        out["total"] = round(self.timers.elapsed(), 6)
        return out

    def describe(self) -> dict:
        """Facts for run reports and model provenance."""
        return {"ranks": self.size, "topology": self.topology, "device": self.device,
                "threads_per_rank": self.threads, "ranks_on_node_0": self.local_size}


def _shared_type():
    from mpi4py import MPI

    return MPI.COMM_TYPE_SHARED


def limit_threads(ranks_on_node: int, threads: int | None = None) -> int:
    """Cap BLAS/OpenMP threads so ranks x threads does not exceed the node's cores.

    An explicit ``threads`` wins; otherwise a user-set ``OMP_NUM_THREADS`` (or
    ``OPENBLAS_NUM_THREADS``) is respected; otherwise each rank gets
    ``max(1, cores // ranks_on_node)``, where cores are those this process may run on.
    Returns the number of threads in force.
    """
    if threads is None:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            if os.environ.get(var, "").isdigit():
                return int(os.environ[var])
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            cores = os.cpu_count() or 1
        threads = max(1, min(cores, (os.cpu_count() or 1) // max(1, ranks_on_node)))
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        pass
    return threads


def init(comm=None, *, device: str = "cpu", topology: str = "auto", threads: int | None = None,
         verbose: bool = True) -> Context:
    """Build the SPMD context on ``comm`` (default ``MPI.COMM_WORLD``).

    Refuses a Slurm step that started several tasks which each see a world of size 1
    (``srun`` without ``--mpi=pmi2`` for the pip MPICH): that would silently train P
    separate models.
    """
    from mpi4py import MPI

    comm = MPI.COMM_WORLD if comm is None else comm
    step_tasks = os.environ.get("SLURM_STEP_NUM_TASKS", "")
    if comm is MPI.COMM_WORLD and comm.Get_size() == 1 and step_tasks.isdigit() and int(step_tasks) > 1:
        raise ShardlearnError(
            f"Slurm started {step_tasks} tasks but each sees an MPI world of size 1: the tasks "
            "are not connected. Launch with 'srun --mpi=pmi2' (or set MpiDefault=pmi2), or use "
            "mpiexec inside the allocation.")
    return Context(comm, device=device, topology=topology, threads=threads, verbose=verbose)


def context_from(comm_or_ctx=None, **kwargs) -> Context:
    """Accept a Context, an mpi4py communicator or None (COMM_WORLD) and return a Context."""
    if isinstance(comm_or_ctx, Context):
        return comm_or_ctx
    return init(comm_or_ctx, verbose=kwargs.pop("verbose", False), **kwargs)


def install_abort_hook() -> None:
    """Make an uncaught exception on any rank end the whole job.

    Without this, one rank's traceback leaves the others blocked in a collective
    forever (a "half-dead" job). The hook prints the traceback once, prefixed with
    the rank, then calls ``MPI.COMM_WORLD.Abort(1)``.
    """
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        try:
            from mpi4py import MPI

            rank = MPI.COMM_WORLD.Get_rank() if MPI.Is_initialized() else 0
            size = MPI.COMM_WORLD.Get_size() if MPI.Is_initialized() else 1
        except Exception:  # pragma: no cover - mpi4py broken
            previous(exc_type, exc, tb)
            return
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        sys.stderr.write(f"shardlearn: rank {rank}: unexpected error, aborting all {size} ranks\n"
                         + "".join(f"[rank {rank}] {line}\n" for line in text.splitlines()))
        sys.stderr.flush()
        if size > 1 and not MPI.Is_finalized():
            MPI.COMM_WORLD.Abort(1)
        sys.exit(1)

    sys.excepthook = hook
