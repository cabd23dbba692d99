"""The shape of the code, checked from its source (issue 9): no import cycles, no imports hidden in functions on
the product's path, no function too long to read. Dev tooling (`devtools/`) imports lazily on purpose: each
`wabot` subcommand loads only what it needs."""
from __future__ import annotations

import ast
import socket
from pathlib import Path

import pytest
from pytest_socket import SocketConnectBlockedError

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("shared", "ingress", "workers")
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(packages=PRODUCT + ("devtools",)) -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(), str(p))
            for pkg in packages for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imported(node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """Our modules an import statement loads: `from pkg import mod` counts as pkg.mod, not as pkg."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    if not node.module:
        return set()
    found = {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known}
    names_only = any(f"{node.module}.{a.name}" not in known for a in node.names)
    if names_only and node.module in known:
        found.add(node.module)
    return found


def _graph(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    known = set(modules)
    return {name: set().union(*[_imported(n, known) for n in ast.walk(tree)
                                if isinstance(n, (ast.Import, ast.ImportFrom))] or [set()])
            for name, tree in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _functions(tree: ast.Module):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert _cycles(_graph(_modules())) == []


def test_no_lazy_imports_of_our_modules_on_the_product_path():
    modules = _modules(PRODUCT)
    known = set(_modules())
    lazy = [f"{name}.{fn.name} imports {sorted(_imported(node, known))}"
            for name, tree in modules.items() for fn in _functions(tree) for node in ast.walk(fn)
            if isinstance(node, (ast.Import, ast.ImportFrom)) and _imported(node, known)]
    assert lazy == []


def test_no_function_over_60_lines():
    long = [f"{name}.{fn.name}: {fn.end_lineno - fn.lineno + 1} lines"
            for name, tree in _modules(PRODUCT).items() for fn in _functions(tree)
            if fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def test_the_domain_imports_neither_the_ingress_nor_the_workers_nor_the_dev_tooling():
    graph = _graph(_modules())
    leaks = {name: sorted(d for d in deps if d.split(".")[0] in ("ingress", "workers", "devtools"))
             for name, deps in graph.items() if name.startswith("shared")}
    assert {k: v for k, v in leaks.items() if v} == {}


@pytest.mark.filterwarnings("ignore:A test tried to use socket")
def test_tests_reach_no_host_beyond_this_machine():
    """pytest-socket (pyproject addopts) refuses, before any packet, a connection to an address not on loopback;
    0.0.0.1 is never routable, so even without the guard nothing would leave the machine."""

    with socket.socket() as s, pytest.raises(SocketConnectBlockedError):
        s.connect(("0.0.0.1", 9))
