"""util/files.py: atomic writes, stale temporary files, outputs that would replace inputs."""
import os
import subprocess
import sys

import pytest

from shardlearn.errors import ShardlearnError
from shardlearn.util.files import atomic_path, refuse_inputs_as_outputs, remove_stale_temps, tmp_name


def test_atomic_path_writes_whole_or_nothing(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_path(str(target)) as tmp:
        with open(tmp, "w") as f:
            f.write("one")
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_path(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "one"
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    target = str(tmp_path / "m.h5")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_name(target).rsplit("-", 1)[0] + f"-{dead.pid}"
    live = tmp_name(target)  # this process: alive
    other_host = os.path.join(str(tmp_path), ".m.h5.tmp-otherhost-1")
    for p in (stale, live, other_host):
        open(p, "w").close()
    assert remove_stale_temps(target) == [stale]
    assert os.path.exists(live) and os.path.exists(other_host) and not os.path.exists(stale)


def test_outputs_that_are_inputs_are_refused(tmp_path):
    data = tmp_path / "d.h5"
    data.write_bytes(b"x")
    link = tmp_path / "link.h5"
    link.symlink_to(data)
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "part-00000.h5").write_bytes(b"x")
    with pytest.raises(ShardlearnError, match="--out .* is also the input --data"):
        refuse_inputs_as_outputs({"--out": str(link)}, {"--data": str(data)})
    with pytest.raises(ShardlearnError, match="--report .* is also the input --data"):
        refuse_inputs_as_outputs({"--report": str(parts / "part-00000.h5")}, {"--data": str(parts)})
    refuse_inputs_as_outputs({"--out": str(tmp_path / "m.h5"), "--report": None}, {"--data": str(parts)})


def test_sigterm_during_a_write_leaves_no_temporary_file(tmp_path):
    code = (
        "import os, signal, sys\n"
        "from shardlearn.util.files import atomic_path\n"
        f"with atomic_path({str(tmp_path / 'm.h5')!r}) as tmp:\n"
        "    open(tmp, 'w').write('half a model')\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    sys.exit('not reached')\n")
    src = os.path.join(os.path.dirname(__file__), "..", "src")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": src})
    assert proc.returncode == -15, proc.stderr
    assert os.listdir(tmp_path) == []


def test_two_writers_of_one_output_leave_one_whole_file(tmp_path):
    """Two jobs writing the same --out at once: one complete model, never a corrupt file."""
    import h5py
    import numpy as np

    from shardlearn.persist import load_model

    code = (
        "import sys, numpy as np\n"
        "from shardlearn.persist import save_model\n"
        "w = int(sys.argv[1])\n"
        "for i in range(30):\n"
        f"    save_model({str(tmp_path / 'm.h5')!r}, 'kmeans', "
        "{'cluster_centers': np.full((200, 50), float(w))}, {'n_clusters': 200, 'writer': w})\n")
    src = os.path.join(os.path.dirname(__file__), "..", "src")
    env = {**os.environ, "PYTHONPATH": src}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(w)], env=env) for w in (1, 2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    name, arrays, params, _ = load_model(str(tmp_path / "m.h5"))
    assert name == "kmeans" and np.all(arrays["cluster_centers"] == params["writer"])
    with h5py.File(tmp_path / "m.h5") as h:
        assert h["cluster_centers"].shape == (200, 50)
    assert os.listdir(tmp_path) == ["m.h5"]
