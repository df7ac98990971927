"""Attack-model cards are validated before anything is built from them: every defect is one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedaudit.attacks import AttackerKnowledge, StatsAttack, load_attack
from fedaudit.exceptions import InvalidParameterError


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, recordings) -> Path:
    from fedaudit.record import UpdateStore

    stores = [UpdateStore.open(p) for p in recordings["shadows"]]
    try:
        attack = StatsAttack(seed=0).fit(AttackerKnowledge(shadows=stores))
    finally:
        for s in stores:
            s.close()
    return attack.save(tmp_path_factory.mktemp("cards") / "stats")


def _damaged(saved: Path, tmp_path: Path, change) -> Path:
    card = json.loads(saved.read_text())
    change(card)
    js = tmp_path / "m.json"
    js.write_text(json.dumps(card))
    (tmp_path / "m.pt").write_bytes(saved.with_suffix(".pt").read_bytes())
    return js


def test_a_sound_card_loads(saved: Path) -> None:
    assert load_attack(saved).name == "stats"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda c: c.pop("shapes"), "'shapes' is a required property"),
        (lambda c: c.update(parameters="fc1.weight"), "at parameters"),
        (lambda c: c.update(parameters=["weightonly"]), "at parameters/0"),
        (lambda c: c["shapes"].update({"fc1.weight": [0, 3]}), "at shapes/fc1.weight/0"),
        (lambda c: c.update(format_version="one"), "uses attack model format one"),
        (lambda c: c.update(params=[1, 2]), "at params"),
        (lambda c: c["params"].update(bogus=1), "parameters ['bogus'] it does not take"),
        (lambda c: c["shapes"].pop("fc1.weight"), "gives no shape"),
        (lambda c: c["state"].pop("layers"), "do not make a fitted stats attack"),
        (lambda c: c["state"].update(layers=["nosuch"]), "do not make a fitted stats attack"),
    ],
)
def test_a_damaged_card_is_one_sentence(saved: Path, tmp_path: Path, change, needle: str) -> None:
    with pytest.raises(InvalidParameterError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        load_attack(_damaged(saved, tmp_path, change))


def test_damaged_bytes_and_foreign_tensors_are_one_sentence(saved: Path, tmp_path: Path) -> None:
    js = tmp_path / "b.json"
    js.write_bytes(b"\xff\xfe not json")
    (tmp_path / "b.pt").write_bytes(saved.with_suffix(".pt").read_bytes())
    with pytest.raises(InvalidParameterError, match="not valid JSON"):
        load_attack(js)
    js.write_text("[1, 2]")
    with pytest.raises(InvalidParameterError, match="not a fedaudit attack model card"):
        load_attack(js)
    good = _damaged(saved, tmp_path, lambda c: None)
    torch.save([torch.zeros(2)], good.with_suffix(".pt"))
    with pytest.raises(InvalidParameterError, match="mapping of names to tensors"):
        load_attack(good)
