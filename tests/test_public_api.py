"""Every public name listed in an ``__all__`` exists, and the lists are sorted."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import fedaudit

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(fedaudit.__path__, prefix="fedaudit.") if not m.name.split(".")[-1].startswith("_")
)


@pytest.mark.parametrize("name", ["fedaudit", *MODULES])
def test_all_names_exist_and_are_sorted(name: str) -> None:
    module = importlib.import_module(name)
    names = getattr(module, "__all__", None)
    if names is None:
        return
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ lists missing names {missing}"
    assert list(names) == sorted(names), f"{name}.__all__ is not sorted"
    assert len(set(names)) == len(names)
