"""A failure on one rank of three never hangs the others, in library use too.

Faults are injected with SHARDLEARN_FAULT (shardlearn.util.faults). The script is a plain
mpi4py program: no abort hook is installed, so only the library's own agreement keeps
the ranks together. Each case must end with the same ShardlearnError on every rank (I/O
paths) and leave no output file behind.
"""

import pytest

from mpirun import json_lines, run_script

SCRIPT = """
import os
import numpy as np
from mpi4py import MPI
from shardlearn.errors import ShardlearnError
from shardlearn.data import read_shard
from shardlearn.models.io import load_estimator, save_estimator
from shardlearn.models.linear import Ridge
from shardlearn.persist import write_json, write_rows
from shardlearn.runtime import init
ctx = init(topology="native", verbose=False)
t = {tmp!r}
if ctx.rank == 0 and not os.path.exists(t + "/d.h5"):
    import h5py
    rng = np.random.default_rng(0)
    with h5py.File(t + "/d.h5", "w") as h:
        h["X"] = rng.normal(size=(90, 3)); h["y"] = rng.normal(size=90)
ctx.mpi_comm.Barrier()

def report_on_rank0():   # as the CLI writes its run report
    with ctx.collective_errors():
        if ctx.rank == 0:
            write_json(t + "/r.json", {{"a": 1}})

try:
    {case}
    emit("ok")
except ShardlearnError as exc:
    emit(str(exc))
ctx.coll.allreduce(np.ones(2))   # every rank is still in step
emit(sorted(n for n in os.listdir(t) if not n.startswith("script")))
"""

CASES = {
    "read": ("read@1", "read_shard(t + '/d.h5', ctx, need_y=True)", "rank 1 could not read its rows"),
    "save": ("save@0", "save_estimator(Ridge(comm=ctx).fit(*(lambda s: (s.X, s.y))(read_shard(t + '/d.h5', "
                       "ctx, need_y=True))), t + '/m.h5', ctx)", "No space left on device"),
    "write-rows": ("write-rows@2", "write_rows(t + '/p.h5', {'a': np.zeros(30)}, 30 * ctx.rank, 90, ctx)",
                   "rank 2 could not write its rows"),
    "json": ("save@0", "report_on_rank0()", "No space left on device"),
    "load": ("read@1", "load_estimator(t + '/missing.h5', ctx)", "no such model file"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fault_on_one_rank_ends_every_rank_with_one_error(tmp_path, case):
    fault, code, want = CASES[case]
    res = json_lines(run_script(3, SCRIPT.format(tmp=str(tmp_path), case=code), tmp_path, timeout=60,
                                env={"SHARDLEARN_FAULT": fault}).stdout)
    errors = [r for r in res if isinstance(r, str)]
    assert len(errors) == 3 and len(set(errors)) == 1 and want in errors[0], res
    listings = [r for r in res if isinstance(r, list)]
    assert len(listings) == 3 and all(r == ["d.h5"] for r in listings), listings


def test_fault_fires_at_the_nth_call_only(tmp_path):
    code = """
    import numpy as np
    from shardlearn.util import faults
    from mpi4py import MPI
    got = []
    for i in range(4):
        try:
            faults.check("step")
            got.append("ok")
        except OSError as exc:
            got.append("fail")
    emit([MPI.COMM_WORLD.Get_rank(), got])
    """
    res = sorted(json_lines(run_script(2, code, tmp_path, env={"SHARDLEARN_FAULT": "step@1#3"}).stdout))
    assert res == [[0, ["ok"] * 4], [1, ["ok", "ok", "fail", "ok"]]]
