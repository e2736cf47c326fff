"""The SPMD context: communicator, ranks, device, threads, errors, logging, timers.

Every rank builds one :class:`Context` with :func:`init`; models take it (or a bare
communicator, via :func:`context_from`) and never reach for ``COMM_WORLD`` themselves,
so a later model-selection layer can hand each candidate a ``Comm.Split`` group.

Layer: above :mod:`shardlearn.comm` and :mod:`shardlearn.backend` (a Context builds the
collectives and binds the GPU), below data, models and the CLI.
"""
from __future__ import annotations

import contextlib
import os
import sys

from .errors import ShardlearnError
from .util.output import line
from .util.threads import limit_threads
from .util.timers import PhaseTimers


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
    def log(self, msg: str, verbose: bool | None = None) -> None:
        """Print one whole line on stdout from rank 0: the only way progress is printed.

        ``verbose`` overrides the context's own setting (an estimator's ``verbose=``).
        """
        if self.rank == 0 and (self.verbose if verbose is None else verbose):
            line(msg)

    def warn(self, msg: str) -> None:
        """A warning line on stderr from rank 0."""
        if self.rank == 0:
            line(f"shardlearn: warning: {msg}", sys.stderr)

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
        """Run a block of local work, then agree on the outcome across ranks.

        Any exception raised inside the block on any rank (a :class:`ShardlearnError`
        for bad input, but also an ``OSError`` from a full disk or a ``MemoryError``) is
        re-raised on every rank after the block as the same :class:`ShardlearnError`,
        naming the rank and the error; nobody is left waiting in a later collective. The
        block must not itself call collectives.
        """
        error = None
        try:
            yield
        except ShardlearnError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - every local failure must reach every rank
            error = f"rank {self.rank}: {type(exc).__name__}: {exc}"
        self.agree(error)

    @contextlib.contextmanager
    def guard(self, what: str):
        """Abort the whole world with one clear message if the block fails on this rank alone.

        For computations that interleave with collectives (a fit, a prediction): an
        exception on one rank would leave the others blocked in the next collective
        forever, so it ends the job instead (``Abort``), after printing which rank failed,
        where and why. Agreed errors (:class:`ShardlearnError` raised on every rank) pass
        through unchanged.
        """
        try:
            yield
        except ShardlearnError:
            raise
        except BaseException as exc:
            if self.size == 1 or isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            import traceback

            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            line(f"shardlearn: rank {self.rank}: {type(exc).__name__} in {what}: {exc}; aborting all "
                 f"{self.size} ranks (the others would wait for it forever)\n"
                 + "".join(f"[rank {self.rank}] {ln}\n" for ln in text.splitlines()).rstrip("\n"),
                 sys.stderr)
            from mpi4py import MPI

            MPI.COMM_WORLD.Abort(1)

    # ------------------------------------------------------------------ timings
    def timings(self) -> dict:
        """Seconds per phase on this rank: the timers plus communication."""
        out = {k: round(v, 6) for k, v in self.timers.seconds.items()}
        out["communication"] = round(self.coll.comm_seconds, 6)
        out["total"] = round(self.timers.elapsed(), 6)
        return out

    def free(self) -> None:
        """Release the communicators the collectives duplicated (collective over the ranks)."""
        self.coll.free()

    def describe(self) -> dict:
        """Facts for run reports and model provenance."""
        return {"ranks": self.size, "topology": self.topology, "device": self.device,
                "threads_per_rank": self.threads, "ranks_on_node_0": self.local_size}


def _shared_type():
    from mpi4py import MPI

    return MPI.COMM_TYPE_SHARED


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


_CONTEXT_KEYVAL = None


def _free_contexts(comm, keyval, contexts) -> None:
    """Attribute delete callback: the communicator is being freed, so are its contexts."""
    for ctx in contexts.values():
        ctx.free()


def context_from(comm_or_ctx=None, **kwargs) -> Context:
    """Accept a Context, an mpi4py communicator or None (COMM_WORLD) and return a Context.

    A bare communicator gets one Context per set of options, cached on the communicator
    itself as an MPI attribute: every ``fit``/``score`` on it reuses that Context (and
    the communicators its collectives duplicated), and freeing the communicator frees
    them. Thousands of fits on one communicator create one Context, not thousands.
    Collective over ``comm`` the first time (it duplicates communicators).
    """
    global _CONTEXT_KEYVAL
    if isinstance(comm_or_ctx, Context):
        return comm_or_ctx
    from mpi4py import MPI

    comm = MPI.COMM_WORLD if comm_or_ctx is None else comm_or_ctx
    kwargs.setdefault("verbose", False)
    if _CONTEXT_KEYVAL is None:
        _CONTEXT_KEYVAL = MPI.Comm.Create_keyval(delete_fn=_free_contexts)
    cache = comm.Get_attr(_CONTEXT_KEYVAL)
    if cache is None:
        cache = {}
        comm.Set_attr(_CONTEXT_KEYVAL, cache)
    key = tuple(sorted(kwargs.items()))
    if key not in cache:
        cache[key] = init(comm, **kwargs)
    return cache[key]


def install_abort_hook() -> None:
    """Make an uncaught exception on any rank end the whole job.

    Without this, one rank's traceback leaves the others blocked in a collective
    forever (a "half-dead" job). The hook prints the traceback once, prefixed with
    the rank, then calls ``MPI.COMM_WORLD.Abort(1)``.
    """
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        import traceback

        try:
            from mpi4py import MPI

            rank = MPI.COMM_WORLD.Get_rank() if MPI.Is_initialized() else 0
            size = MPI.COMM_WORLD.Get_size() if MPI.Is_initialized() else 1
        except Exception:  # pragma: no cover - mpi4py broken
            previous(exc_type, exc, tb)
            return
        if issubclass(exc_type, KeyboardInterrupt):
            line(f"shardlearn: rank {rank}: interrupted (SIGINT / Ctrl-C); stopping all {size} ranks",
                 sys.stderr)
        elif issubclass(exc_type, MPI.Exception):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc_type.__name__
            line(f"shardlearn: rank {rank}: communication with the other ranks failed: another rank "
                 f"probably died (killed, out of memory, node failure); stopping all {size} ranks "
                 f"(MPI: {first[:200]})", sys.stderr)
        else:
            text = "".join(traceback.format_exception(exc_type, exc, tb))
            sys.stderr.write(f"shardlearn: rank {rank}: unexpected error, aborting all {size} ranks\n"
                             + "".join(f"[rank {rank}] {ln}\n" for ln in text.splitlines()))
            sys.stderr.flush()
        code = 130 if issubclass(exc_type, KeyboardInterrupt) else 1  # 128 + SIGINT, as shells do
        if size > 1 and not MPI.Is_finalized():
            MPI.COMM_WORLD.Abort(code)
        sys.exit(code)

    sys.excepthook = hook
