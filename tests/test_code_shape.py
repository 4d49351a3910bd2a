"""The code's shape: no function of jobs/, analysis/ or reports/ takes more than 7 parameters, and the tree passes
ruff's linter and formatter as pyproject.toml configures them (make lint).

What counts (issue #19): every positional parameter but a method's self or cls; a keyword-only parameter without a
real default (none, or None standing for a required value); *args and **kwargs. Keyword-only options with real
defaults are free, up to 10 parameters in all."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted(p for folder in ("analysis", "jobs", "reports") for p in (ROOT / folder).rglob("*.py"))
MAX_COUNTED, MAX_ALL = 7, 10


def count_parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> tuple[int, int]:
    """(parameters that count, parameters in all), self and cls aside."""
    a = fn.args
    positional = [p.arg for p in a.posonlyargs + a.args]
    if method and positional and positional[0] in ("self", "cls"):
        positional = positional[1:]
    required_kw = sum(1 for d in a.kw_defaults if d is None or (isinstance(d, ast.Constant) and d.value is None))
    star = int(a.vararg is not None) + int(a.kwarg is not None)
    return len(positional) + required_kw + star, len(positional) + len(a.kwonlyargs) + star


def list_functions(tree: ast.AST):
    """(function, whether it is a method) of every def in the module, nested ones included."""
    methods = {id(node) for cls in ast.walk(tree) if isinstance(cls, ast.ClassDef) for node in cls.body}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node, id(node) in methods


def find_long_signatures(source: str) -> list[str]:
    found = []
    for fn, method in list_functions(ast.parse(source)):
        counted, total = count_parameters(fn, method)
        if counted > MAX_COUNTED or total > MAX_ALL:
            found.append(f"{fn.name}:{fn.lineno} ({counted} counted, {total} in all)")
    return found


@pytest.mark.parametrize(
    "source, offends",
    [
        ("def f(a, b, c, d, e, f, g): pass", False),
        ("def f(a, b, c, d, e, f, g, h): pass", True),
        ("class K:\n    def m(self, a, b, c, d, e, f, g): pass", False),
        ("def f(self, a, b, c, d, e, f, g): pass", True),  # not a method: self counts
        ("def f(a, b, c, d, e, f, *, g=1, h=2, i=3): pass", False),  # options with real defaults are free
        ("def f(a, b, c, d, e, f, *, g=None, h=2): pass", False),
        ("def f(a, b, c, d, e, f, g, *, h=None): pass", True),  # None standing for a required value counts
        ("def f(a, b, c, d, e, f, g, *, h): pass", True),
        ("def f(a, b, c, d, e, f, g, **kwargs): pass", True),
        ("def f(a, *, b=1, c=1, d=1, e=1, f=1, g=1, h=1, i=1, j=1, k=1): pass", True),  # 11 in all
        ("def outer():\n    def inner(a, b, c, d, e, f, g, h): pass", True),
    ],
)
def test_the_counter_counts_as_the_rule_says(source, offends):
    assert bool(find_long_signatures(source)) == offends


def test_no_function_takes_more_than_seven_parameters():
    assert len(LIBRARY) > 60
    offenders = [f"{p.relative_to(ROOT)}: {hit}" for p in LIBRARY for hit in find_long_signatures(p.read_text("utf-8"))]
    assert offenders == []


def test_the_tree_passes_ruff_lint_and_format():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: make setup installs requirements-dev.txt, which pins it")
    for args in (["check", "--no-cache", "."], ["format", "--no-cache", "--check", "."]):
        done = subprocess.run([ruff, *args], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, f"ruff {' '.join(args)}:\n{done.stdout[-4000:]}{done.stderr[-2000:]}"


def test_the_architecture_page_names_every_module():
    """docs/ARCHITECTURE.md is the map a newcomer reads first: every module of the library and the jobs is named
    there (as `name` in the table of its package), so a new module cannot land without its line."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    missing = [
        str(p.relative_to(ROOT))
        for p in LIBRARY
        if p.stem != "__init__" and f"`{p.stem}`" not in text and f"`{p.relative_to(ROOT).as_posix()}`" not in text
    ]
    assert missing == []
