"""The bottom layer: small pieces every other layer may use, importing nothing of shardlearn
but :mod:`shardlearn.errors`.

- :mod:`.blocks`  — which rows a rank owns (``block_bounds``)
- :mod:`.timers`  — wall-clock seconds per phase
- :mod:`.threads` — BLAS/OpenMP thread caps per rank
- :mod:`.files`   — atomic file writes (temporary name, fsync, rename) and output checks
- :mod:`.output`  — whole-line writes to stdout/stderr (one write, so ranks never interleave)
- :mod:`.fixed`   — exact, order-independent sums (int64 fixed point; ``exact_reduce``)
- :mod:`.signals` — SIGTERM/SIGUSR1/SIGINT as a stop request checked at step boundaries
"""
