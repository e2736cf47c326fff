"""The package layout's rules, checked: imports point one way, the CLI starts light.

Layers, bottom to top (a module may import its own layer and the layers below):

    0  shardlearn (version), errors, rng, util/       low-level pieces
    1  backend, comm/                                  array module, collectives
    2  runtime                                         Context: comm + backend + threads
    3  data/, persist, checkpoint, metrics             datasets, files, checkpoints, metrics
    4  models/                                         the estimators
    5  cli/, __main__                                  the command line

Every import counts, also those inside functions. Module-level imports must not form a
cycle. Only cli/ may import argparse.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "shardlearn"

LAYERS = [
    (0, ("shardlearn", "shardlearn.errors", "shardlearn.rng", "shardlearn.util")),
    (1, ("shardlearn.backend", "shardlearn.comm")),
    (2, ("shardlearn.runtime",)),
    (3, ("shardlearn.data", "shardlearn.persist", "shardlearn.checkpoint", "shardlearn.metrics")),
    (4, ("shardlearn.models",)),
    (5, ("shardlearn.cli", "shardlearn.__main__")),
]


def layer_of(module: str) -> int:
    best, depth = None, -1
    for layer, prefixes in LAYERS:
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and p.count(".") > depth:
                best, depth = layer, p.count(".")
    assert best is not None, f"{module} is in no layer: add it to LAYERS and to the README"
    return best


def modules():
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path, parts[-1] == "__init__"


def imports(name, path, is_pkg, top_level_only=False):
    """(line, imported shardlearn module or other top-level name) for each import."""
    tree = ast.parse(path.read_text())
    package = name if is_pkg else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            # "from . import x" may name a submodule
            for a in node.names:
                sub = f"{target}.{a.name}"
                yield node.lineno, sub if (SRC / (sub.replace(".", "/") + ".py")).exists() or \
                    (SRC / sub.replace(".", "/")).is_dir() else target


def test_imports_point_down_the_layers():
    upward = []
    for name, path, is_pkg in modules():
        for line, target in imports(name, path, is_pkg):
            if target.split(".")[0] == "shardlearn" and layer_of(target) > layer_of(name):
                upward.append(f"{path.relative_to(SRC)}:{line}: {name} (layer {layer_of(name)}) imports "
                              f"{target} (layer {layer_of(target)})")
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_no_import_cycles_at_module_level():
    graph = {name: {t for _, t in imports(name, path, is_pkg, top_level_only=True)
                    if t.split(".")[0] == "shardlearn" and t != name}
             for name, path, is_pkg in modules()}
    state, cycle = {}, []

    def visit(n, stack):
        state[n] = "open"
        for m in sorted(graph.get(n, ())):
            if m not in graph or m == n.rpartition(".")[0]:
                continue  # a package importing its own parent __init__ is fine
            if state.get(m) == "open":
                cycle.append(stack[stack.index(m):] + [m] if m in stack else [n, m])
            elif m not in state:
                visit(m, stack + [m])
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycle, f"module-level import cycles: {cycle}"


def test_only_the_cli_uses_argparse():
    users = [name for name, path, is_pkg in modules()
             if any(t == "argparse" for _, t in imports(name, path, is_pkg)) and layer_of(name) < 5]
    assert not users, f"argparse outside cli/: {users}"


def test_every_module_has_a_docstring():
    missing = [str(path.relative_to(SRC)) for name, path, _ in modules()
               if not ast.get_docstring(ast.parse(path.read_text()))]
    assert not missing, f"modules without a docstring: {missing}"


LIGHT = """
import sys
from shardlearn.cli.main import main
try:
    main({argv!r})
except SystemExit:
    pass
heavy = sorted(m for m in sys.modules if m.startswith("shardlearn.models") or m.split(".")[0] == "scipy")
print("HEAVY", heavy)
"""


@pytest.mark.parametrize("argv", [["--help"], ["train", "gbdt", "--help"], ["info", "{data}"], ["report", "--help"]])
def test_help_and_info_import_no_model_and_no_scipy(tmp_path, argv):
    import h5py
    import numpy as np

    data = tmp_path / "d.h5"
    with h5py.File(data, "w") as h:
        h["X"] = np.zeros((5, 2))
    argv = [a.format(data=data) for a in argv]
    proc = subprocess.run([sys.executable, "-c", LIGHT.format(argv=argv)], capture_output=True, text=True,
                          timeout=60, env={"PYTHONPATH": str(SRC), "UCX_NET_DEVICES": "lo", "HYDRA_IFACE": "lo",
                                           "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout


def test_cli_choices_match_the_estimators():
    """The CLI keeps literal choice lists (so --help imports no model); they must not drift."""
    from shardlearn.cli import train_kmeans, train_trees
    from shardlearn.models.kmeans import _init as kmeans
    from shardlearn.models.trees import grower

    assert tuple(train_kmeans.INITS) == tuple(kmeans.INITS)
    assert tuple(train_trees.HIST_REDUCE) == tuple(grower.HIST_REDUCE)
    assert tuple(train_trees.GROWTH) == tuple(grower.GROWTH)
    from shardlearn.cli import search
    from shardlearn.models.io import ESTIMATORS
    from shardlearn.models.selection import _scoring

    assert tuple(search.SCORINGS) == tuple(_scoring.SCORERS)
    assert set(search.MODELS) <= set(ESTIMATORS)


def test_cli_choices_match_the_tree_and_knn_estimators():
    from shardlearn.cli import train_knn, train_tree
    from shardlearn.models.knn import _local, _search, estimator
    from shardlearn.models.trees import criterion, decision_tree

    assert tuple(train_tree.CRITERIA) == tuple(criterion.CRITERIA)
    assert tuple(train_tree.GROWTHS) == tuple(decision_tree.GROWTHS)
    assert tuple(train_knn.METRICS) == tuple(_local.METRICS)
    assert tuple(train_knn.STRATEGIES) == tuple(_search.STRATEGIES)
    assert tuple(train_knn.WEIGHTS) == tuple(estimator.WEIGHTS)
