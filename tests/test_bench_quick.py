"""`make bench-quick` in the test suite: every bench/bench_*.py runs end to end on tiny sizes,
then bench/scaling_model.py and bench/report.py on their results.

``python bench/run_all.py --quick`` runs each benchmark (data, fits, predictions, the peers
scikit-learn and LightGBM of the test extra, the report) with its outputs in a temporary
directory, so a benchmark that stops working fails here instead of at its next manual run.
About a minute and a half on 2 cores. The fast tests below check the report on no results
(every gap stated, no crash) and that the alpha-beta fit recovers known parameters.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


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
    # every script wrote its result with the machine record; the model and the report used them
    names = {p.stem[len("bench_"):] for p in (ROOT / "bench").glob("bench_*.py")}
    for name in names:
        if f"skipped bench_{name}" in (tmp_path / name / "output.txt").read_text():
            continue            # e.g. bench_gpu without a GPU: it says so and writes nothing
        doc = json.loads((tmp_path / name / f"{name}.json").read_text())
        assert doc["benchmark"] == name and doc["machine"]["cpu_model"] and doc["machine"]["loadavg"], name
    model = json.loads((tmp_path / "scaling_model.json").read_text())
    assert {"kmeans", "logistic", "gbdt"} <= set(model["predictions"])
    assert {c["ranks"] for c in model["check"]} >= {1, 2} and all(abs(c["error"]) < 100 for c in model["check"])
    for by_rows in model["predictions"].values():
        for by_topo in by_rows.values():
            assert {"native", "ring", "tree", "hierarchical"} <= set(by_topo)
            assert max(x["ranks"] for x in by_topo["ring"]) == 1024
    report = (tmp_path / "report" / "REPORT.md").read_text()
    assert "could not be built" not in report, report
    for heading in ("## Headline", "## Allreduce: bus bandwidth", "## Strong and weak scaling", "## COST",
                    "## Logistic loss against wall time", "## Each result as a fraction", "## Scaling model"):
        assert heading in report, heading
    for png in ("bus_bandwidth", "peers", "scaling", "cost", "loss_vs_time", "scaling_model"):
        assert (tmp_path / "report" / "plots" / f"{png}.png").stat().st_size > 5000, png


def test_report_without_results_states_every_gap(tmp_path):
    """No result at all: the report is still written, naming each missing result."""
    import report

    assert report.main(["--results", str(tmp_path / "none"), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    for name in ("machine", "comm", "scaling", "scaling_model", "kmeans", "linear", "trees"):
        assert f"`{name}` result missing" in text, name
    assert "could not be built" not in text


def test_report_survives_a_malformed_result_and_lists_unknown_benchmarks(tmp_path):
    """A result in an unexpected shape fails its section only (named, exit 1); an unknown
    benchmark gets the generic section with its figures."""
    import machine
    import report

    machine.save(tmp_path / "kmeans.json", "kmeans", {"rows": "not a list"})
    machine.save(tmp_path / "newthing.json", "newthing", {"speed": machine.summary([1.0, 3.0, 2.0]), "n": 5})
    assert report.main(["--results", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    text = (tmp_path / "out" / "REPORT.md").read_text()
    assert "could not be built" in text and "sec_peers" in text
    assert "### newthing" in text and "| speed | 2 [1–3] |" in text and "| n | 5 |" in text


def test_summary_and_machine_record():
    import machine

    assert machine.summary([3.0, 1.0, None, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert machine.summary([])["median"] is None
    m = machine.machine()
    for key in ("cpu_model", "physical_cores", "blas", "mpi", "loadavg", "date"):
        assert key in m, key
    assert m["mpi"] and ("MPICH" in m["mpi"]["library"] or "Open MPI" in m["mpi"]["library"])


def test_alpha_beta_fit_recovers_known_parameters():
    """Times made by the model itself (with 3% noise) give back its alpha and beta, per topology."""
    import numpy as np
    import scaling_model as sm

    rng = np.random.default_rng(0)
    truth = {"native": (3e-6, 2e-10), "ring": (12e-6, 1e-10), "tree": (6e-6, 3e-10), "hierarchical": (5e-6, 4e-10)}
    by_ranks = {}
    for p in (2, 4):
        rows = []
        for topo, (a, b) in truth.items():
            for n in (8, 1024, 65536, 1 << 20, 8 << 20):
                t = sm.allreduce_time(topo, p, n, {topo: {"alpha": a, "beta": b}}, None, p)
                rows.append({"topology": topo, "bytes": n, "us": {"median": t * 1e6 * (1 + 0.03 * rng.standard_normal())}})
        by_ranks[str(p)] = rows
    fit = sm.fit_collectives({"by_ranks": by_ranks})
    for topo, (a, b) in truth.items():
        assert abs(fit[topo]["alpha"] / a - 1) < 0.15 and abs(fit[topo]["beta"] / b - 1) < 0.15, (topo, fit[topo])
        assert fit[topo]["error_median"] < 0.06
    # a ring on P ranks moves 2(P-1)/P n bytes per rank in 2(P-1) steps
    assert sm.flat_coeffs("ring", 8, 1e6) == (14, 14 / 8)
    # more ranks than the model can use: the time per unit stops falling (a finite fastest P)
    comp = {"m": {"c0": 1e-3, "c1": 1e-8, "collectives_per_unit": 1, "message_bytes": 1e6, "unit": "u", "cores": 2}}
    net = {"alpha": 2e-6, "beta": 8 / 100e9}
    _, stops = sm.predict(comp, {t: {"alpha": a, "beta": b} for t, (a, b) in truth.items()}, net, 8, [1e6], [8, 64, 1024])
    assert stops["m"]["1000000"]["ring"]["fastest_at"] < 1024
