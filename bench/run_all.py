"""Run every benchmark in bench/ (``bench_*.py``) one after another; see bench/README.md.

Each benchmark writes its own markdown report next to it (``bench/<topic>.md``) with the
measured figures and the ratios against the peer named in its issue.
"""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    only = set(sys.argv[1:])
    failed = []
    for script in scripts:
        name = script.stem[len("bench_"):]
        if only and name not in only:
            continue
        print(f"== {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script)]).returncode != 0:
            failed.append(script.name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
