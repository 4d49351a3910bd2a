"""The folders say how data flows, and the imports keep to it: a test, so that the layering cannot erode unseen.

analysis.config <- analysis.data <- analysis.model <- analysis.store <- analysis.stats <- analysis.concepts
<- analysis.walkthrough
analysis <- reports <- jobs        (benchmarks and tests may import anything)
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = [
    "analysis.config",
    "analysis.data",
    "analysis.model",
    "analysis.store",
    "analysis.stats",
    "analysis.concepts",
    "analysis.walkthrough",
    "reports",
    "jobs",
]


def _layer(module: str) -> int | None:
    for i, prefix in reversed(list(enumerate(ORDER))):
        if module == prefix or module.startswith(prefix + "."):
            return i
    return None


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def find_wrong_imports(modules: dict[str, Path]) -> list[str]:
    """`A imports B` for every import of a later layer than the importing module's own."""
    wrong = []
    for me, path in modules.items():
        for target in sorted(_imports(path)):
            theirs = _layer(target)
            if theirs is not None and theirs > _layer(me):
                wrong.append(f"{me} imports {target}")
    return wrong


def test_every_module_imports_only_along_the_flow():
    modules = {
        _module(p): p for folder in ("analysis", "reports", "jobs") for p in sorted((ROOT / folder).rglob("*.py"))
    }
    assert len(modules) > 50
    assert find_wrong_imports(modules) == []


def test_the_rule_sees_a_wrong_import(tmp_path):
    """The control: a data module that reaches forward into the report or the store is flagged; a backward one is
    not."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from reports.run import html\nfrom analysis.store.contract import IMAGE_ID\n"
        "from analysis.config import ConfigError\n",
        encoding="utf-8",
    )
    assert find_wrong_imports({"analysis.data.probe": probe}) == [
        "analysis.data.probe imports analysis.store.contract",
        "analysis.data.probe imports analysis.store.contract.IMAGE_ID",
        "analysis.data.probe imports reports.run",
        "analysis.data.probe imports reports.run.html",
    ]


def test_no_module_passes_three_hundred_lines():
    long = [
        f"{p.relative_to(ROOT)}: {n}"
        for p in sorted(ROOT.glob("*/**/*.py"))
        if ".venv" not in p.parts and (n := len(p.read_text(encoding="utf-8").splitlines())) > 300
    ]
    assert long == []
