"""jobs/multinode.sbatch on a real two-node Slurm: one slurmd per network namespace, each
with its own host name and address, under one slurmctld (tests/slurm/multinode.py).

``srun --mpi=pmi2`` joins the ranks of both nodes into one MPI world; MPI's messages
between the nodes cross the namespaces' link. The model the job trains with
``--topology hierarchical`` is compared bit for bit with the same training under the hydra
emulation of the same layout (2 nodes x 2 ranks). Skipped where namespaces, Slurm or munge
are not available (root, and the packages that tests/slurm/start_local_slurm.sh installs).
"""
from __future__ import annotations

import json

import pytest

from cluster import run_cli_nodes
from slurm.jobkit import JOBS, check_model, write_datasets
from slurm.multinode import NetnsSlurm, Unavailable, install_packages
from test_cluster import compare, h5_arrays

pytestmark = [pytest.mark.slurm, pytest.mark.netns, pytest.mark.slow]

PROBE = r"""#!/usr/bin/env bash
#SBATCH --output=%x-%j.out
set -euo pipefail
srun --mpi=pmi2 --kill-on-bad-exit=1 python -c '
import json, os, socket
from shardlearn.runtime import Context
from mpi4py import MPI
import numpy as np
ctx = Context(MPI.COMM_WORLD, topology="hierarchical", verbose=False)
total = ctx.coll.allreduce(np.full(100000, ctx.rank + 1.0))
print("PROBE " + json.dumps({"rank": ctx.rank, "local": [ctx.local_rank, ctx.local_size],
      "host": socket.gethostname(), "netns": os.readlink("/proc/self/ns/net"),
      "slurm_node": os.environ["SLURMD_NODENAME"], "sum": float(total[0])}), flush=True)
'
"""


@pytest.fixture(scope="module")
def slurm():
    # decided here, not when the module is collected: on a fresh machine the packages are
    # installed now (as test_slurm.py's single-node Slurm does), not found missing and skipped
    install_packages()
    try:
        with NetnsSlurm(2, cpus=2) as s:
            yield s
    except Unavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_datasets(tmp_path_factory.mktemp("mn-data"))


def test_srun_pmi2_spans_two_slurm_nodes(slurm, tmp_path):
    (tmp_path / "probe.sbatch").write_text(PROBE)
    proc = slurm.sbatch("probe.sbatch", options=["--nodes=2", "--ntasks-per-node=2"], cwd=tmp_path)
    out = "\n".join(f.read_text() for f in tmp_path.glob("*.out"))
    assert proc.returncode == 0, f"{proc.stderr}\n{out}\n{slurm.logs()}"
    rows = sorted((json.loads(ln[6:]) for ln in out.splitlines() if ln.startswith("PROBE ")), key=lambda r: r["rank"])
    assert [(r["rank"], *r["local"]) for r in rows] == [(0, 0, 2), (1, 1, 2), (2, 0, 2), (3, 1, 2)], out
    assert [r["host"] for r in rows] == ["node0", "node0", "node1", "node1"]
    assert [r["slurm_node"] for r in rows] == ["node0", "node0", "node1", "node1"]
    assert rows[0]["netns"] == rows[1]["netns"] != rows[2]["netns"] == rows[3]["netns"]
    assert all(r["sum"] == 10.0 for r in rows)


def test_multinode_sbatch_on_two_nodes_equals_the_hydra_emulation(slurm, data, tmp_path):
    env = {"DATA": data["classification"], "TREES": "3", "LEAVES": "4", "TOPOLOGY": "hierarchical",
           "OUT": str(tmp_path / "m.h5")}
    proc = slurm.sbatch(JOBS / "multinode.sbatch", options=["--nodes=2", "--ntasks-per-node=2", "--cpus-per-task=1"],
                        env=env, cwd=tmp_path)
    out = "\n".join(f.read_text() for f in tmp_path.glob("*.out"))
    assert proc.returncode == 0, f"{proc.stderr}\n{out}\n{slurm.logs()}"
    assert "4 ranks on 2 node(s) (node[0-1])" in out, out
    check_model(tmp_path / "m.h5", "gbdt", ranks=4)
    # the same training on the hydra emulation's two nodes of two: the same bits
    ref = tmp_path / "ref.h5"
    run_cli_nodes((2, 2), "train", "gbdt", "--data", data["classification"], "--objective", "binary",
                  "--n-estimators", "3", "--num-leaves", "4", "--topology", "hierarchical", "--out", ref,
                  "--quiet", timeout=120)
    diff = compare(h5_arrays(tmp_path / "m.h5"), h5_arrays(ref))
    assert diff and all(v == 0.0 for v in diff.values()), diff
