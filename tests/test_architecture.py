"""The package floors of docs/ARCHITECTURE.md, read from the source: no module imports from a floor
above its own, no two modules import each other through any chain, and imports sit at the top
of a file except where a floor allows them inside functions (CLI start-up, optional heavy
dependencies)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "detkd"

# lowest first: a module may import its own floor and the floors below
FLOORS: list[set[str]] = [
    {"errors", "utils", "registry"},
    {"config"},
    {"models", "data"},
    {"evaluation"},
    {"engine"},
    {"distill", "bench"},
    {"doctor"},
    {"experiments"},
    {"cli", "__main__"},
]
# modules outside detkd that a function may import late: optional, heavy or slow to import
LATE_OK = {"onnx", "onnxruntime", "matplotlib", "pycocotools", "cv2", "albumentations", "scipy", "tensorboard",
           "torch.utils.tensorboard", "fcntl"}  # fcntl: POSIX only


def floor_of(module: str) -> int:
    """The floor of ``detkd.<part>...``."""
    part = module.split(".")[1] if module.count(".") else "__init__"
    for level, names in enumerate(FLOORS):
        if part in names:
            return level
    raise AssertionError(f"{module}: its package {part!r} is on no floor of tests/test_architecture.py")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    skipped = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
               for stmt in block.body for n in ast.walk(stmt)}
    return [n for n in ast.walk(tree) if id(n) not in skipped]


def detkd_imports(tree: ast.AST, name: str) -> set[str]:
    """The detkd modules a module imports at run time (relative imports resolved)."""
    found: set[str] = set()
    for node in runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("detkd")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(name.split(".")[: -node.level] + ([base] if base else []))
            if base.startswith("detkd"):
                found.add(base)
    return found


@functools.lru_cache(maxsize=1)
def sources() -> dict[str, ast.AST]:
    return {module_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.rglob("*.py"))}


def test_no_import_runs_up_a_floor() -> None:
    uphill = [f"{name} -> {dep}" for name, tree in sources().items() if name != "detkd"
              for dep in detkd_imports(tree, name) if dep != "detkd" and floor_of(dep) > floor_of(name)]
    assert not uphill, "imports running up a floor:\n" + "\n".join(sorted(uphill))


def test_no_import_circle() -> None:
    trees = sources()
    graph = {name: {d for d in detkd_imports(tree, name) if d in trees and d != name} for name, tree in trees.items()}
    # a package's __init__ importing its own modules is how packages expose names, not a circle
    graph = {n: {d for d in deps if not d.startswith(n + ".")} for n, deps in graph.items()}
    circles = [f"{a} <-> {b}" for a in graph for b in graph[a] if a < b and reaches(graph, b, a)]
    assert not circles, "modules that import each other (through any chain):\n" + "\n".join(circles)


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return False


def late_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, module)`` of every import inside a function."""
    late = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    late += [(node.lineno, a.name) for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    late.append((node.lineno, node.module or ""))
    return late


@pytest.mark.parametrize("name", sorted(n for n in sources() if n != "detkd" and floor_of(n) < len(FLOORS) - 1))
def test_imports_sit_at_the_top_outside_the_cli(name: str) -> None:
    late = [f"line {line}: {mod}" for line, mod in late_imports(sources()[name])
            if not any(mod == ok or mod.startswith(ok + ".") for ok in LATE_OK)]
    assert not late, f"{name}: imports inside functions (move them to the top, or say why in LATE_OK):\n" + "\n".join(late)
