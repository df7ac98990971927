"""report/ is a leaf on the ground floor: it imports fedaudit.types, exceptions and _version only."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "fedaudit" / "report"
ALLOWED = ("fedaudit.types", "fedaudit.exceptions", "fedaudit._version", "fedaudit.report")


def _fedaudit_imports(source: str) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "fedaudit")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fedaudit":
            out.update(f"{node.module}.{a.name}" if node.module == "fedaudit" else node.module for a in node.names)
    return out


def _forbidden(modules: set[str]) -> set[str]:
    return {m for m in modules if not any(m == ok or m.startswith(ok + ".") for ok in ALLOWED)}


def test_report_imports_only_the_ground_floor() -> None:
    bad = {f"{p.relative_to(PACKAGE.parent)}: {m}" for p in PACKAGE.rglob("*.py")
           for m in _forbidden(_fedaudit_imports(p.read_text()))}
    assert not bad, "\n".join(sorted(bad))


def test_the_check_sees_an_upward_import() -> None:
    planted = "from fedaudit.audit.grid import run_audit\nimport fedaudit.attacks\nfrom fedaudit import record\n"
    assert _forbidden(_fedaudit_imports(planted)) == {"fedaudit.audit.grid", "fedaudit.attacks", "fedaudit.record"}
