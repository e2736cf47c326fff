import sys
from pathlib import Path

# the package under test is this checkout's src/, also without an editable install
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
