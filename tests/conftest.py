import sys
from pathlib import Path

# the package under test is this checkout's src/, also without an editable install
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402

from mpirun import remove_stale_mpich_shm  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _no_stale_mpich_segments():
    """Start and end the session without MPICH segments leaked by aborted worlds."""
    remove_stale_mpich_shm()
    yield
    remove_stale_mpich_shm(min_age=0)
