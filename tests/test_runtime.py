"""The SPMD runtime: error agreement, abort on unexpected errors, threads, Slurm guard, persistence."""
import os

import h5py
import numpy as np
import pytest

from mpirun import json_lines, run_cli, run_script


def test_agreed_error_reaches_every_rank_once(tmp_path):
    code = """
    from shardlearn.runtime import init
    from shardlearn.errors import ShardlearnError
    ctx = init(topology="native", verbose=False)
    try:
        with ctx.collective_errors():
            if ctx.rank == ctx.size - 1:
                raise ShardlearnError(f"bad block on rank {ctx.rank}")
        emit("passed")
    except ShardlearnError as exc:
        emit(str(exc))
    # nobody hangs: a collective after the agreement completes on every rank
    ctx.coll.allreduce(__import__("numpy").ones(3))
    """
    res = json_lines(run_script(3, code, tmp_path).stdout)
    assert res == ["bad block on rank 2"] * 3


def test_unexpected_error_on_one_rank_aborts_the_job(tmp_path):
    code = """
    from shardlearn.runtime import install_abort_hook, init
    install_abort_hook()
    ctx = init(topology="native", verbose=False)
    import numpy as np
    if ctx.rank == 1:
        raise RuntimeError("disk on fire")
    ctx.coll.allreduce(np.ones(4))   # the others would wait here forever without the hook
    emit("unreachable")
    """
    proc = run_script(3, code, tmp_path, check=False, timeout=60)
    assert proc.returncode != 0
    assert "rank 1: unexpected error, aborting all 3 ranks" in proc.stderr
    assert "disk on fire" in proc.stderr
    assert "unreachable" not in proc.stdout


def test_cli_error_is_printed_once_and_every_rank_fails(tmp_path):
    proc = run_cli(3, "evaluate", "--model", tmp_path / "missing.h5", "--data", tmp_path,
                   check=False, timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.count("shardlearn: error:") == 1
    assert "missing.h5: no such model file" in proc.stderr


def test_threads_are_limited_to_the_node_share(tmp_path):
    code = """
    import json, os
    from shardlearn.runtime import init
    ctx = init(topology="native", verbose=False)
    from threadpoolctl import threadpool_info
    blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    emit([ctx.threads, ctx.local_size, blas])
    """
    env = {"OMP_NUM_THREADS": "", "OPENBLAS_NUM_THREADS": "", "MKL_NUM_THREADS": ""}
    res = json_lines(run_script(2, code, tmp_path, env=env).stdout)
    cores = min(len(os.sched_getaffinity(0)), os.cpu_count())
    for threads, local, blas in res:
        assert local == 2
        assert threads == max(1, os.cpu_count() // 2)
        assert threads * local <= max(2, cores)
        assert all(b == threads for b in blas)
    # an explicit user setting wins
    res = json_lines(run_script(2, code, tmp_path, env={"OMP_NUM_THREADS": "1"}).stdout)
    assert all(r[0] == 1 for r in res)


def test_plain_srun_without_pmi_is_refused(tmp_path):
    proc = run_cli(1, "evaluate", "--model", "m.h5", "--data", tmp_path, check=False,
                   env={"SLURM_STEP_NUM_TASKS": "4"})
    assert proc.returncode == 2
    assert "--mpi=pmi2" in proc.stderr


def test_model_file_is_atomic_and_round_trips(tmp_path):
    from shardlearn.persist import load_model, save_model

    path = str(tmp_path / "m.h5")
    save_model(path, "kmeans", {"centers": np.eye(3), "trees": {"t0": np.arange(4)}},
               {"k": 3}, {"n_iter": 7})
    name, arrays, params, info = load_model(path)
    assert name == "kmeans" and params == {"k": 3} and info["n_iter"] == 7
    assert np.array_equal(arrays["centers"], np.eye(3)) and np.array_equal(arrays["trees"]["t0"], np.arange(4))
    assert "numpy" in info["provenance"]
    assert os.listdir(tmp_path) == ["m.h5"]  # no temporary left behind

    # a failure while writing leaves the old file untouched and no temporary behind
    bad = {"x": np.ones(2), "y": object()}
    with pytest.raises(Exception):
        save_model(path, "kmeans", bad, {}, {})
    assert load_model(path)[2] == {"k": 3}
    assert os.listdir(tmp_path) == ["m.h5"]


@pytest.mark.parametrize("nprocs", [1, 3, 5])
def test_write_rows_in_global_order(tmp_path, nprocs):
    out = tmp_path / "rows.h5"
    code = f"""
    import numpy as np
    from shardlearn.runtime import init
    from shardlearn.util.blocks import block_bounds
    from shardlearn.persist import write_rows
    ctx = init(topology="native", verbose=False)
    n = 4
    lo, hi = block_bounds(n, ctx.size, ctx.rank)   # with 5 ranks, one has no rows
    rows = np.arange(lo, hi)
    write_rows({str(out)!r}, {{"labels": rows * 10, "proba": np.c_[rows, -rows].astype(float)}}, lo, n, ctx)
    """
    run_script(nprocs, code, tmp_path)
    with h5py.File(out) as h:
        assert h["labels"][:].tolist() == [0, 10, 20, 30]
        assert h["proba"][:, 1].tolist() == [0, -1, -2, -3]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_gpu_without_cupy_is_one_clear_error(tmp_path):
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed here: the missing-CuPy path cannot be shown")
    except ImportError:
        pass
    proc = run_cli(2, "evaluate", "--model", "m.h5", "--data", tmp_path, "--device", "gpu", check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("shardlearn: error:") == 1 and "needs CuPy" in proc.stderr


def test_context_from_reuses_and_frees_its_context(tmp_path):
    """A bare communicator gets one cached Context; freeing the communicator frees the
    communicators its collectives duplicated (a sweep of fits leaks nothing)."""
    code = """
    import numpy as np
    from mpi4py import MPI
    from shardlearn.runtime import context_from
    from shardlearn.models.linear import Ridge
    world = MPI.COMM_WORLD
    X = np.random.default_rng(world.Get_rank()).normal(size=(50, 3)); y = X.sum(axis=1)
    sub = world.Split(0, world.Get_rank())
    ctx = context_from(sub)
    same = all(context_from(sub) is ctx for _ in range(3))
    for _ in range(200):   # each fit and score reuses the cached context
        Ridge(alpha=1.0, comm=sub).fit(X, y).score(X, y)
    still = context_from(sub) is ctx
    dups = [ctx.coll.ring.p2p, ctx.coll.tree.p2p]
    sub.Free()
    freed = ctx.coll.ring.p2p is None and ctx.coll.tree.p2p is None and all(d == MPI.COMM_NULL for d in dups)
    other = context_from(world) is not ctx
    emit([same, still, freed, other])
    """
    res = json_lines(run_script(2, code, tmp_path).stdout)
    assert res == [[True, True, True, True]] * 2


def test_newer_model_format_is_refused(tmp_path):
    from shardlearn.errors import ShardlearnError
    from shardlearn.persist import FORMAT_VERSION, load_model, save_model

    path = str(tmp_path / "m.h5")
    save_model(path, "kmeans", {"cluster_centers": np.zeros((2, 2))}, {"n_clusters": 2})
    assert load_model(path)[0] == "kmeans"
    with h5py.File(path, "r+") as h:
        assert h.attrs["shardlearn_format"] == FORMAT_VERSION
        h.attrs["shardlearn_format"] = FORMAT_VERSION + 1
    with pytest.raises(ShardlearnError, match="written by a newer shardlearn.*upgrade"):
        load_model(path)


def test_timeout_kills_every_rank(tmp_path):
    """tests/mpirun.py: a hung job fails its test and leaves no rank behind."""
    import subprocess
    import time

    marker = f"spin-{os.getpid()}-{time.time_ns()}"
    code = f"""
    import time
    MARK = {marker!r}
    while True:
        time.sleep(0.05)
    """
    with pytest.raises(subprocess.TimeoutExpired):
        run_script(2, code, tmp_path, timeout=3)
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", "script_"], capture_output=True, text=True).stdout.split()
    cmdlines = []
    for pid in left:
        try:
            cmdlines.append(open(f"/proc/{pid}/cmdline").read())
        except OSError:
            pass
    script = next(tmp_path.glob("script_*.py")).name
    assert not [c for c in cmdlines if script in c], cmdlines


def test_write_rows_failing_rank_leaves_nothing(tmp_path):
    """A rank that cannot write its rows: every rank gets the same error, no file is left."""
    code = f"""
    import os
    import numpy as np
    from shardlearn.errors import ShardlearnError
    from shardlearn.persist import write_rows
    from shardlearn.runtime import init
    ctx = init(topology="native", verbose=False)
    cols = {{"a": np.arange(4, dtype=np.int64) if ctx.rank != 1 else np.array(["x"] * 4, dtype=object)}}
    try:
        write_rows({str(tmp_path / "out.h5")!r}, cols, 4 * ctx.rank, 12, ctx)
        emit("written")
    except ShardlearnError as exc:
        emit(str(exc))
    ctx.coll.allreduce(np.ones(2))  # nobody hangs
    emit(sorted(os.listdir({str(tmp_path)!r})))
    """
    res = json_lines(run_script(3, code, tmp_path).stdout)
    errors = [r for r in res if isinstance(r, str)]
    assert len(errors) == 3 and len(set(errors)) == 1 and "rank 1 could not write its rows" in errors[0], res
    assert all(not any(n.startswith(".out.h5") or n == "out.h5" for n in r) for r in res if isinstance(r, list))


def test_phase_timers_sum_nest_and_survive_exceptions():
    import time

    from shardlearn.util.timers import PhaseTimers

    t = PhaseTimers()
    with t.phase("a"):
        with t.phase("a"):          # the same name nested: both blocks count
            time.sleep(0.01)
        with t.phase("b"):
            pass
    with pytest.raises(KeyError):
        with t.phase("b"):
            time.sleep(0.01)
            raise KeyError("x")     # the block still counts, the exception goes on
    assert t.seconds["a"] >= 0.02 and t.seconds["b"] >= 0.01
    assert set(t.seconds) == {"a", "b"}
