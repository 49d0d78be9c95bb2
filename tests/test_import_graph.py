"""The package's import graph has no cycles: no module imports (even lazily, inside a function) a module
that imports it back, directly or through others."""

from __future__ import annotations

import ast
import pathlib

import nalaformer

ROOT = pathlib.Path(nalaformer.__file__).parent


def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = ("nalaformer",) + path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: pathlib.Path = ROOT) -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its source (a package means its ``__init__``)."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import sub` imports the submodule when there is one, else a name of pkg
                targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycles_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "nalaformer"
    (pkg / "train").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "train" / "a.py").write_text("from .b import thing\n")
    (pkg / "train" / "b.py").write_text("def f():\n    from . import a\n")
    assert find_cycle(import_graph(pkg)) == ["nalaformer.train.a", "nalaformer.train.b", "nalaformer.train.a"]
    (pkg / "train" / "b.py").write_text("def f():\n    return 1\n")
    assert find_cycle(import_graph(pkg)) is None


def test_training_domains_share_only_the_core():
    graph = import_graph()
    for module, targets in graph.items():
        for domain, others in (("nalaformer.train.core", ("nalaformer.train.vision", "nalaformer.train.lm")),
                               ("nalaformer.train.vision", ("nalaformer.train.lm",)),
                               ("nalaformer.train.lm", ("nalaformer.train.vision",))):
            if module.startswith(domain):
                assert not [t for t in targets if t.startswith(others)], f"{module} imports {targets}"
