"""The package's layout (issue 15): small modules and functions, and the library apart from the
recipes that use it."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pyro_avss"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80

# Modules still above MAX_MODULE_LINES, each to be split by concern and then struck off this list
# (the test fails on an entry that no longer needs to be here, so the list only shrinks).
OVERSIZED_MODULES: set[str] = set()

# Functions still above MAX_FUNCTION_LINES ("module:function"), likewise.
LONG_FUNCTIONS: set[str] = set()


def modules() -> dict[str, Path]:
    return {p.relative_to(PACKAGE).as_posix(): p for p in sorted(PACKAGE.rglob("*.py"))}


def line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_no_module_is_above_the_line_limit():
    sizes = {name: line_count(path) for name, path in modules().items()}
    too_long = {n: s for n, s in sizes.items() if s > MAX_MODULE_LINES and n not in OVERSIZED_MODULES}
    assert not too_long, f"modules above {MAX_MODULE_LINES} lines (split them by concern): {too_long}"
    stale = {n: sizes.get(n) for n in OVERSIZED_MODULES if sizes.get(n, 0) <= MAX_MODULE_LINES}
    assert not stale, f"strike these off OVERSIZED_MODULES, they fit now (or are gone): {stale}"


def long_functions() -> dict[str, int]:
    out = {}
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([d.lineno for d in node.decorator_list] + [node.lineno])
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    out[f"{name}:{node.name}"] = node.end_lineno - start + 1
    return out


def test_no_function_is_above_the_line_limit():
    found = long_functions()
    too_long = {k: v for k, v in found.items() if k not in LONG_FUNCTIONS}
    assert not too_long, f"functions above {MAX_FUNCTION_LINES} lines: {too_long}"
    stale = sorted(LONG_FUNCTIONS - set(found))
    assert not stale, f"strike these off LONG_FUNCTIONS, they fit now (or are gone): {stale}"


def recipe_imports(tree: ast.Module, package: str) -> list[tuple[int, str, bool]]:
    """``(line, module, at module level)`` of every import of :mod:`pyro_avss.recipes` in
    ``tree``, a module of ``package`` (for relative imports)."""
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        if any(n == "pyro_avss.recipes" or n.startswith("pyro_avss.recipes.") for n in names):
            out.append((node.lineno, names[0], id(node) in top))
    return out


def test_the_library_never_imports_a_recipe():
    """Recipes import the library, never the other way round. The one exception is the command
    line, which dispatches ``bench``, ``demo`` and ``results`` to the recipes by name, inside a
    function (so importing it loads none of them)."""
    found = {}
    for name, path in modules().items():
        if name.startswith("recipes/"):
            continue
        package = ".".join(("pyro_avss",) + Path(name).parent.parts)
        hits = recipe_imports(ast.parse(path.read_text(encoding="utf-8")), package)
        if name == "cli.py":
            hits = [h for h in hits if h[2]]          # only module-level imports would count
        if hits:
            found[name] = hits
    assert not found, f"library modules that import a recipe: {found}"


def test_importing_the_library_loads_no_recipe():
    code = ("import sys, pyro_avss, pyro_avss.api, pyro_avss.cli, pyro_avss.evaluation.harness, "
            "pyro_avss.data.prepare, pyro_avss.data.mixture_builder; "
            "print(sorted(m for m in sys.modules if m.startswith('pyro_avss.recipes')))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(PACKAGE.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PACKAGE.parent, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]", res.stdout
