"""The floor plan holds: no import circles between modules, scoring/ pure, no production module
importing the sandboxes, no CRM compared by name outside its provider, the sandboxes outside
the wheel."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from connectors import registry

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("app", "connectors", "scoring", "webhooks")


def _modules() -> dict[str, Path]:
    found = {}
    for package in (*SHIPPED, "sandbox"):
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The project modules a file imports, anywhere in it (a function-level import is an
    import too). ``from package import module`` names the module, not the package."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            for alias in node.names:
                child = f"{base}.{alias.name}"
                out.add(child if child in MODULES else base)
    return {m for m in out if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_module_imports_itself_back_through_others():
    assert _circles(GRAPH) == []


def test_the_circle_check_finds_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_scoring_imports_only_itself_and_the_standard_library():
    for name, path in MODULES.items():
        if not name.startswith("scoring"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module] if isinstance(node, ast.ImportFrom) else []
                names += [
                    a.name for a in getattr(node, "names", []) if isinstance(node, ast.Import)
                ]
                for imported in filter(None, names):
                    top = imported.split(".")[0]
                    assert top not in (
                        "app",
                        "connectors",
                        "webhooks",
                        "sandbox",
                        "flask",
                        "sqlalchemy",
                        "requests",
                        "urllib3",
                    ), (name, imported)


def test_no_shipped_module_imports_the_sandboxes_or_the_demo():
    for name, imported in GRAPH.items():
        if name.split(".")[0] in SHIPPED:
            assert not {m for m in imported if m.startswith("sandbox")}, name


def test_the_wheel_leaves_the_sandboxes_out():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not any(pattern.startswith("sandbox") for pattern in include)
    assert {p.split("*")[0] for p in include} >= set(SHIPPED)


def test_no_crm_is_compared_by_name_outside_its_provider():
    crm_names = set(registry.keys())
    assert crm_names == {"hubspot", "salesforce"}
    for name, path in MODULES.items():
        if name.startswith(("connectors.hubspot", "connectors.salesforce", "sandbox")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                constants = [
                    n.value
                    for n in ast.walk(node)
                    if isinstance(n, ast.Constant) and isinstance(n.value, str)
                ]
                assert not crm_names & set(constants), f"{name}:{node.lineno}"
