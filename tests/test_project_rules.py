"""Rules of the code base that no single feature test would notice breaking: nothing outside tests/ imports tests/,
no test module imports another (shared helpers live in helper modules, shared fixtures in conftest.py), and every
command line takes whole flag names only (argparse's prefix matching would take --layer for --layers)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from jobs import cli, extract, finalize, inspect, report

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for folder in ("analysis", "jobs", "reports", "benchmarks") for p in (ROOT / folder).rglob("*.py"))


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_nothing_outside_tests_imports_tests():
    assert len(SOURCES) > 50
    offenders = [
        f"{p.relative_to(ROOT)}: {name}"
        for p in SOURCES
        for name in _imports(ast.parse(p.read_text(encoding="utf-8")))
        if name == "tests" or name.startswith("tests.")
    ]
    assert offenders == []


def _imported_test_modules(source: str) -> list[str]:
    """The test modules (test_*) and conftest a source imports, absolute (tests.test_x) or relative (.test_x)."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            if node.module in (None, "tests"):  # `from tests import test_x`, `from . import test_x`
                names += [f"{base}{'' if base.endswith('.') else '.'}{alias.name}" for alias in node.names]
            else:
                names.append(base)
    return [n for n in names if n.lstrip(".").removeprefix("tests.").startswith(("test_", "conftest"))]


def test_no_module_of_tests_imports_a_test_module_or_conftest():
    """Under `--dist loadfile` a fixture imported from another test module is a second copy, built again; a test
    module imported for its helpers is collected code run twice. Helpers go in helper modules, fixtures in conftest."""
    sources = sorted((ROOT / "tests").glob("*.py"))
    assert len(sources) > 40
    offenders = [f"{p.name}: {name}" for p in sources for name in _imported_test_modules(p.read_text(encoding="utf-8"))]
    assert offenders == []


@pytest.mark.parametrize(
    "source, found",
    [
        ("from tests.test_extract import run", ["tests.test_extract"]),
        ("import tests.test_model as m", ["tests.test_model"]),
        ("from tests.conftest import write_image", ["tests.conftest"]),
        ("from .test_discovery import JPEG", [".test_discovery"]),
        ("from . import test_discovery, helpers", [".test_discovery"]),
        ("from tests import test_model", ["tests.test_model"]),
        ("from tests.helpers import JPEG\nfrom tests import faults", []),
    ],
)
def test_the_test_module_rule_sees_each_form_of_import(source, found):
    assert _imported_test_modules(source) == found


def test_every_argument_parser_refuses_abbreviations():
    """argparse.ArgumentParser(...) anywhere takes allow_abbrev=False; the jobs' cli.ArgumentParser sets it."""
    made = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", None)) == "ArgumentParser"
                and not (isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", None) == "cli")
            ):
                keywords = {k.arg: k.value for k in node.keywords}
                ok = isinstance(keywords.get("allow_abbrev"), ast.Constant) and keywords["allow_abbrev"].value is False
                made.append((f"{path.relative_to(ROOT)}:{node.lineno}", ok))
    assert len(made) >= 8  # every benchmark's main
    assert [where for where, ok in made if not ok] == []
    assert cli.ArgumentParser().allow_abbrev is False  # every job's


@pytest.mark.parametrize(
    "parse, argv, prefix",
    [
        (extract.parse, ["--data", "x", "--layer", "conv5_3"], "--layer"),
        (extract.parse, ["--data", "x", "--overwr"], "--overwr"),
        (report.parse, ["--run", "x", "--layer", "conv5_3"], "--layer"),
        (inspect.parse, ["--image", "x.jpg", "--layer", "conv5_3"], "--layer"),
        (finalize.parse, ["--ru", "x"], "--ru"),
    ],
)
def test_a_flag_prefix_is_refused_in_one_line(parse, argv, prefix, capsys):
    with pytest.raises(SystemExit) as e:
        parse(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unrecognized arguments" in err and prefix in err, err
