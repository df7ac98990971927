"""The layering of ARCHITECTURE.md, checked from the source (ast), so no change can break it silently."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "fedaudit"

#: package -> fedaudit packages it must never import (directly, at any depth of its modules).
FORBIDDEN: dict[str, set[str]] = {
    "record": {"fl", "attacks", "defenses", "audit", "report", "integrations", "cli", "data", "metrics"},
    "fl": {"record", "attacks", "defenses", "audit", "report", "integrations", "cli"},
    "attacks": {"fl", "defenses", "audit", "report", "integrations", "cli"},
    "defenses": {"fl", "record", "attacks", "audit", "report", "integrations", "cli"},
    "metrics": {"data", "fl", "record", "attacks", "defenses", "audit", "report", "integrations", "cli"},
    "data": {"fl", "record", "attacks", "defenses", "audit", "metrics", "report", "integrations", "cli"},
    "audit": {"cli"},
    "models": {"data", "fl", "record", "attacks", "defenses", "audit", "metrics", "report", "integrations", "cli"},
}
GROUND = ("types", "config", "exceptions", "settings", "_version", "_lazy")
#: Leaves: nothing in the package imports them except these.
LEAVES: dict[str, set[str]] = {"report": {"cli", "audit"}, "integrations": {"cli", "audit"}}


def _imports(path: Path) -> set[str]:
    """Every ``fedaudit.X`` module a source file imports (at any place in the file, TYPE_CHECKING included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("fedaudit"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "fedaudit":
                out.update(f"fedaudit.{a.name}" for a in node.names)
            elif node.module.startswith("fedaudit."):
                out.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path} uses a relative import; fedaudit imports absolutely")
    return out


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _sources(package: str) -> list[Path]:
    base = ROOT / package
    return sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_never_imports_a_higher_layer(package: str) -> None:
    bad = []
    for path in _sources(package):
        for module in _imports(path):
            if _package_of(module) in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT.parent)} imports {module}")
    assert not bad, "layering broken:\n" + "\n".join(bad)


def test_ground_floor_and_hooks_import_only_the_ground_floor() -> None:
    bad = []
    for name in (*GROUND, "hooks"):
        for path in _sources(name):
            if not path.exists():
                continue
            for module in _imports(path):
                if _package_of(module) not in GROUND:
                    bad.append(f"{path.name} imports {module}")
    assert not bad, "\n".join(bad)


def test_leaves_are_imported_only_by_cli_and_audit() -> None:
    bad = []
    for path in ROOT.rglob("*.py"):
        owner = path.relative_to(ROOT).parts[0].removesuffix(".py")
        for module in _imports(path):
            leaf = _package_of(module)
            if leaf in LEAVES and owner != leaf and owner not in LEAVES[leaf]:
                bad.append(f"{path.relative_to(ROOT.parent)} imports {module}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The rule test must be able to fail: a planted upward import is found."""
    planted = tmp_path / "x.py"
    planted.write_text("from fedaudit.fl.simulate import simulate\nimport fedaudit.attacks.base\n")
    assert {_package_of(m) for m in _imports(planted)} == {"fl", "attacks"}
