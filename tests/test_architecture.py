"""The folder tree is the architecture: dependencies point down, no cycles, one place prints.

Imports are read from the source (every ``import`` statement, module level or inside a function;
only ``if TYPE_CHECKING:`` blocks are left out, since they never run), so a cycle hidden in a
function-level import is found as surely as one at the top of a file.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "img_agent"

# Layers, bottom first. A module may import modules of lower layers and of its own unit; units that
# share a layer are independent of each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "locations", "textsafe", "version"),
    ("results",),
    ("config",),
    ("embed", "testing"),
    ("index", "agent"),
    ("tools",),
    ("web",),
    ("service",),
    ("bench",),
    ("cli",),
    ("__main__",),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}

# one concern each, though long; every other module stays under this many lines
MAX_LINES = 400
LONG_ONE_CONCERN = {
    "bench/report.py": "markdown tables and plots of every benchmark's result file",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _unit(module: str) -> str:
    """The layer unit of a module: ``img_agent.index.engine`` -> ``index``; the package itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports_in(source: str, package: str) -> Iterator[tuple[str, int]]:
    """(imported name, line) for every import in ``source`` that runs, wherever it stands."""

    def visit(node: ast.AST) -> Iterator[tuple[str, int]]:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                yield from visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if full in MODULES else base), node.lineno
        for child in ast.iter_child_nodes(node):
            yield from visit(child)

    yield from visit(ast.parse(source))


def _imports(module: str) -> Iterator[tuple[str, int]]:
    """(imported img_agent module, line) for every import of ``module`` that runs."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for name, line in _imports_in(path.read_text(), package):
        if name == "img_agent" or name.startswith("img_agent."):
            while name not in MODULES and "." in name:
                name = name.rpartition(".")[0]
            yield name, line


GRAPH = {m: sorted({name for name, _ in _imports(m) if name != m}) for m in MODULES}


def test_dependencies_point_down() -> None:
    wrong = []
    for module in MODULES:
        unit = _unit(module)
        for name, line in sorted(set(_imports(module))):
            target = _unit(name)
            if not unit or not target or target == unit:
                continue
            if unit not in RANK or target not in RANK:
                wrong.append(f"{module}:{line} -> {name}: unit not placed in LAYERS")
            elif RANK[target] >= RANK[unit]:
                wrong.append(f"{module}:{line} imports {name} ({unit} may not depend on {target})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components over the module graph: every one must be a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def strongconnect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            strongconnect(module)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_import_reader_sees_function_level_imports_and_skips_type_checking() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from img_agent.cli import main\n"
        "def f():\n    from img_agent.index import engine\n    from . import sandbox\n    return engine\n"
    )
    names = [name for name, _ in _imports_in(source, "img_agent.tools")]
    assert names == ["typing", "img_agent.index.engine", "img_agent.tools.sandbox"]


# Third-party libraries loaded once before the per-module imports; img_agent itself never is, so each
# module still imports with none of its own package loaded before it.
PRELOAD = ("numpy", "PIL.Image", "pydantic", "pydantic_settings", "anyio", "httpx", "starlette", "fastapi",
           "mcp", "openai", "faiss", "torch", "open_clip")

IMPORT_EACH = """
import importlib, json, os, sys, traceback
for name in sys.argv[2:]:
    try:
        importlib.import_module(name)
    except ImportError:
        pass
failures = {}
for module in json.loads(sys.argv[1]):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(module)
        except BaseException:
            os.write(write, traceback.format_exc()[-2000:].encode())
            os._exit(1)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        error = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failures[module] = error or f"exit status {status}"
print(json.dumps(failures))
"""


@pytest.fixture(scope="module")
def import_failures() -> dict[str, str]:
    """Each module imported in a fresh child process forked before any img_agent module was loaded."""
    modules = [m for m in sorted(MODULES) if not m.endswith("__main__")]
    proc = subprocess.run([sys.executable, "-c", IMPORT_EACH, json.dumps(modules), *PRELOAD],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_imports_alone(module: str, import_failures: dict[str, str]) -> None:
    """Each module imports with nothing of img_agent loaded before it (an import cycle that breaks at import
    time fails here)."""
    if module.endswith("__main__"):
        pytest.skip("runs the program when imported")
    assert module not in import_failures, import_failures[module]


def test_modules_stay_small() -> None:
    long = []
    for module, path in MODULES.items():
        rel = path.relative_to(PACKAGE).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES and rel not in LONG_ONE_CONCERN:
            long.append(f"{rel}: {lines} lines")
    assert not long, "split these modules (or name their one concern in LONG_ONE_CONCERN): " + ", ".join(long)


def _calls(path: Path) -> Iterator[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in {"print", "exit", "quit"}:
                yield func.id, node.lineno
            elif isinstance(func, ast.Attribute) and func.attr == "exit" and isinstance(func.value, ast.Name) \
                    and func.value.id == "sys":
                yield "sys.exit", node.lineno


def test_only_the_cli_prints_or_exits() -> None:
    found = [
        f"{path.relative_to(PACKAGE)}:{line} {what}"
        for module, path in MODULES.items()
        if _unit(module) not in {"cli", "__main__"}
        for what, line in _calls(path)
    ]
    assert not found, "library code must not print or exit: " + ", ".join(found)
