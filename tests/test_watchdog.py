"""Stall watchdog (--stall-timeout / SHARDLEARN_STALL_TIMEOUT) and the collective check
(SHARDLEARN_CHECK_COLLECTIVES=1): a hang becomes stacks and one message naming the rank."""
import time

from mpirun import json_lines, run_script

STALL = """
import time
import numpy as np
from shardlearn.runtime import init
ctx = init(topology="native", verbose=False, stall_timeout=2)
ctx.coll.allreduce(np.ones(3))
if ctx.rank == 1:
    while True:          # a rank that never reaches the next collective
        time.sleep(0.1)
ctx.coll.allreduce(np.ones(3))
"""


def test_stalled_rank_is_named_and_the_job_ends(tmp_path):
    t0 = time.monotonic()
    p = run_script(3, STALL, tmp_path, check=False, timeout=60)
    took = time.monotonic() - t0
    assert p.returncode != 0 and took < 20, (p.returncode, took)
    err = p.stderr
    assert "shardlearn: stalled: rank 1 made no progress outside any collective" in err, err
    assert "the others wait in allreduce" in err
    assert err.count("Python stack") == 3 and "in <module>" in err  # faulthandler stacks of every rank


STUCK_ROOT = """
import numpy as np
from shardlearn.runtime import init
ctx = init(topology="native", verbose=False, stall_timeout=2)
ctx.coll.allreduce(np.ones(3))
if ctx.rank == 0:
    sum(range(10**15))   # compiled code that holds the GIL: rank 0's watchdog cannot run
ctx.coll.allreduce(np.ones(3))
"""


def test_the_job_ends_when_rank_0_cannot_give_the_verdict(tmp_path):
    """The others report to rank 0, get no acknowledgement and abort on their own."""
    t0 = time.monotonic()
    p = run_script(3, STUCK_ROOT, tmp_path, check=False, timeout=60)
    took = time.monotonic() - t0
    assert p.returncode != 0 and took < 25, (p.returncode, took)
    assert "shardlearn: rank 1: no progress" in p.stderr or "shardlearn: rank 2: no progress" in p.stderr, p.stderr
    assert "shardlearn: stalled: rank 0 did not answer" in p.stderr, p.stderr


MISMATCH = """
import numpy as np
from shardlearn.errors import ShardlearnError
from shardlearn.runtime import init
ctx = init(topology="ring", verbose=False)
try:
    ctx.coll.allreduce(np.ones(4 if ctx.rank != 2 else 5))   # rank 2 passes another length
    emit("no error")
except ShardlearnError as exc:
    emit(str(exc))
ctx.coll.allreduce(np.ones(2))
emit("in step")
"""


def test_check_collectives_names_the_rank_that_differs(tmp_path):
    res = json_lines(run_script(3, MISMATCH, tmp_path, timeout=60,
                                env={"SHARDLEARN_CHECK_COLLECTIVES": "1"}).stdout)
    errors = [r for r in res if r != "in step"]
    assert len(errors) == 3 and len(set(errors)) == 1, res
    assert "rank 2 called allreduce(sum) shape=(5,)" in errors[0] and "rank 0 called allreduce(sum) shape=(4,)" \
        in errors[0]
    assert res.count("in step") == 3
