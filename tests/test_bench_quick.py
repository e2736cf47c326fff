"""`make bench-quick` in the test suite: every bench/bench_*.py runs end to end on tiny sizes.

``python bench/run_all.py --quick`` runs each benchmark (data, fits, predictions, the peers
scikit-learn and LightGBM of the test extra, the report) with its outputs in a temporary
directory, so a benchmark that stops working fails here instead of at its next manual run.
About a minute on 2 cores.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_quick(tmp_path):
    env = dict(os.environ, UCX_NET_DEVICES="lo", HYDRA_IFACE="lo", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(ROOT / "src") + (os.pathsep + os.environ["PYTHONPATH"]
                                               if os.environ.get("PYTHONPATH") else ""))
    tracked = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                             capture_output=True, text=True)
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "run_all.py"), "--quick",
                             "--work-dir", str(tmp_path)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # run_all, its scripts, their mpiexec and ranks
        out, _ = proc.communicate()
        pytest.fail("bench/run_all.py --quick did not finish in 600 s:\n" + out[-6000:])
    assert proc.returncode == 0, "bench/run_all.py --quick failed:\n" + out[-6000:]
    assert "quick run: " in out
    if tracked.returncode == 0:  # a git checkout: the committed reports are untouched
        after = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout
        assert after == tracked.stdout, "the quick run changed tracked files:\n" + after
