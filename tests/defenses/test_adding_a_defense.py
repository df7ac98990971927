"""The worked example of docs/adding-a-defense.md, run from the page itself so code and page never differ."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedaudit.config import FLConfig
from fedaudit.defenses import DEFENSES, DefenseContext, build_defenses, defenses_from_options, describe_options
from fedaudit.exceptions import InvalidParameterError
from fedaudit.types import ClientUpdate, DefensePieces

PAGE = Path(__file__).resolve().parents[2] / "docs" / "adding-a-defense.md"


def _code_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)


@pytest.fixture
def example() -> Iterator[dict[str, Any]]:
    """Execute the page's module block (registering ``"sign"``); unregister it afterwards."""
    assert "sign" not in DEFENSES
    module = types.ModuleType("docs_adding_a_defense_sign")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    try:
        exec(compile(_code_blocks()[0], f"{PAGE}:module", "exec"), module.__dict__)
        yield module.__dict__
    finally:
        DEFENSES.pop("sign", None)
        del sys.modules[module.__name__]


def test_the_page_has_the_module_and_its_usage() -> None:
    blocks = _code_blocks()
    assert len(blocks) == 2
    assert "@register_defense" in blocks[0] and "build_defenses" in blocks[1]


def test_the_page_usage_runs_as_written(example: dict[str, Any]) -> None:
    exec(compile(_code_blocks()[1], f"{PAGE}:usage", "exec"), example)


def test_sign_defense_registers_builds_and_compresses(example: dict[str, Any]) -> None:
    # Prepare
    sign_defense = example["SignDefense"]
    assert DEFENSES["sign"] is sign_defense
    context = DefenseContext(config=FLConfig(rounds=5), n_clients=10, n_train_typical=30)
    rng = np.random.default_rng(3)
    arrays = {"fc1.weight": rng.normal(size=(5, 7)).astype(np.float32),
              "fc1.bias": rng.normal(size=5).astype(np.float32)}
    update = ClientUpdate(server_round=2, client_id=4, kind="gradient", arrays=arrays, num_samples=20,
                          local_steps=1, lr=0.1)

    # Execute
    (defense,) = defenses_from_options(["sign"], {"sign_magnitude": "mean", "prune_percent": 50.0})
    pieces = build_defenses([defense], context)
    (transform,) = pieces.transforms
    out = transform(update, np.random.default_rng(0))
    plain = build_defenses(defenses_from_options(["sign"], {"sign_magnitude": "none"}), context)
    signs = plain.transforms[0](update, np.random.default_rng(0))

    # Assert
    assert isinstance(pieces, DefensePieces)
    assert pieces.settings == {"names": ["sign"], "sign": {"magnitude": "mean"}}
    for name, a in arrays.items():
        expected = np.sign(a) * np.mean(np.abs(a.astype(np.float64)))
        np.testing.assert_allclose(out.arrays[name], expected, rtol=1e-6)
        assert out.arrays[name].dtype == np.float32
        np.testing.assert_array_equal(signs.arrays[name], np.sign(a))
        np.testing.assert_array_equal(update.arrays[name], a)  # the input is left alone
    # One magnitude per layer remains: the sign carries one bit per value.
    assert len(np.unique(np.abs(out.arrays["fc1.weight"]))) == 1
    assert (out.client_id, out.server_round) == (4, 2)
    assert describe_options(["sign"], {})["sign_magnitude"] == "mean"


def test_sign_defense_refuses_a_bad_option(example: dict[str, Any]) -> None:
    with pytest.raises(InvalidParameterError,
                       match=r"^The 'magnitude' parameter of SignDefense must be one of \['mean', 'none'\]\. "
                             r"Got 'max' instead\.$"):
        defenses_from_options(["sign"], {"sign_magnitude": "max"})


def test_the_example_is_gone_from_the_registry_after_its_tests() -> None:
    assert "sign" not in DEFENSES
    with pytest.raises(InvalidParameterError, match="Unknown defense 'sign'"):
        defenses_from_options(["sign"], {})
