"""The shape of the package: the core never imports the widgets, and no module imports itself
back through others (no import cycles, including imports inside functions)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "stablestudio_widgets"
VIEWS = ("stablestudio_widgets.widgets", "stablestudio_widgets.cli", "stablestudio_widgets.__main__")
MAX_LINES = 450
LONG_ON_PURPOSE = {"stablestudio_widgets.sandbox.media"}  # media synthesis: PNG and H.264 writers


def _is_view(module: str) -> bool:
    return any(module == v or module.startswith(v + ".") for v in VIEWS)


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of this package that ``name`` imports anywhere (type-checking-only imports aside)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = {f"{base}.{a.name}" for a in node.names} & set(modules)  # `from . import catalog`
            found.update(names or {base})
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return {m for m in found if m in modules and m != name and m not in ancestors}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    # A module's parent packages run before it whatever it imports, so an edge to one is not a
    # dependency; a package's own imports are what it re-exports.
    return {n: _imports(n, p, modules) for n, p in modules.items()}


def test_core_never_imports_the_widgets_statically():
    for name, deps in _graph().items():
        if name == "stablestudio_widgets" or _is_view(name):
            continue
        assert not {d for d in deps if _is_view(d)}, f"{name} imports the views"


def test_importing_the_core_loads_no_widget_code():
    core = sorted(n for n in _modules() if n != "stablestudio_widgets" and not _is_view(n))
    code = "; ".join([*(f"import {m}" for m in core),
                      "import sys; print(sorted(m for m in sys.modules if m.startswith(('stablestudio_widgets.widgets',"
                      " 'anywidget', 'ipywidgets'))))"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_importing_the_package_loads_neither_the_widgets_nor_the_signing_stack():
    """``import stablestudio_widgets`` stays quick (bench/bench_import.py measures it): the widget stack
    and the signing stack (eth-account, eth-utils, rlp, solders) load on first use, and so does the
    HTTP stack below httpx (httpcore: httpx itself imports it lazily)."""
    code = ("import stablestudio_widgets, sys; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'anywidget', 'ipywidgets', 'eth_account', 'eth_utils', 'eth_keys', 'rlp', 'solders', 'httpcore'}), "
            "'stablestudio_widgets.widgets' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] False"


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " → ".join(cycle))
            if dep not in state:
                walk(dep)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)


def test_modules_stay_small():
    long = {n: len(p.read_text().splitlines()) for n, p in _modules().items()}
    assert {n: c for n, c in long.items() if c > MAX_LINES and n not in LONG_ON_PURPOSE} == {}


def test_the_cycle_check_can_fail(tmp_path, monkeypatch):
    """A planted cycle is caught (the check above is not vacuous)."""
    monkeypatch.setattr(sys.modules[__name__], "_graph", lambda: {"a": {"b"}, "b": {"c"}, "c": {"a"}})
    try:
        test_no_import_cycles()
    except AssertionError as e:
        assert "a → b → c → a" in str(e)
    else:
        raise AssertionError("the planted cycle was not found")
