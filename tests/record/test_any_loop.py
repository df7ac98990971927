"""Any federated loop feeds the recorder: a plain PyTorch FedSGD loop records itself, and the
recording reads and attacks exactly like one of fedaudit's simulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedaudit.config import FLConfig
from fedaudit.hooks import ClientInfo, RoundEnd, RoundStart, RunEnd, RunStart
from fedaudit.record import Recorder, UpdateStore
from fedaudit.types import EMOTIONS, ClientUpdate
from tests.conftest import make_table


class Net(nn.Module):
    def __init__(self, n_in: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(n_in, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def plain_fedsgd(path: Path, table, *, rounds: int = 12, per_round: int = 4, seed: int = 0) -> list[ClientUpdate]:
    """A plain PyTorch FedSGD loop that records itself: 20 lines, no fedaudit simulator."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model, lr, sent = Net(table.n_features), 0.1, []
    speakers = list(table.speakers)
    x = torch.from_numpy((table.x - table.x.mean(0)) / table.x.std(0))
    y = torch.tensor([EMOTIONS.index(e) for e in table.emotion])
    rows = [np.flatnonzero(table.speaker_id == s) for s in speakers]
    clients = [ClientInfo(client_id=i, n_train=len(r), attributes={"gender": table.gender[r[0]]})
               for i, r in enumerate(rows)]
    with Recorder(path) as rec:
        rec.on_run_start(RunStart(config={"algorithm": "fedsgd", "lr": lr, "batch_size": 8}, clients=clients,
                                  parameter_shapes={n: tuple(p.shape) for n, p in model.named_parameters()}))
        for r in range(rounds):
            rec.on_round_start(RoundStart(server_round=r, client_ids=[]))
            grads = []
            for cid in sorted(rng.choice(len(rows), per_round, replace=False)):
                batch = rng.choice(rows[cid], 8, replace=False)
                model.zero_grad()
                nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
                g = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
                update = ClientUpdate(server_round=r, client_id=int(cid), kind="gradient", arrays=g,
                                      num_samples=8, local_steps=1, lr=lr)
                rec.on_client_update(update)
                sent.append(update)
                grads.append(g)
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p -= lr * torch.from_numpy(np.mean([g[n] for g in grads], axis=0))
            rec.on_round_end(RoundEnd(server_round=r, n_clients=per_round))
        rec.on_run_end(RunEnd())
    return sent


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    from fedaudit.audit import record_run

    root = tmp_path_factory.mktemp("anyloop")
    target = root / "plain.h5"
    sent = plain_fedsgd(target, make_table(n_speakers=12, per_speaker=24, n_features=10, seed=5))
    shadow_table = make_table(n_speakers=16, per_speaker=24, n_features=10, seed=1)
    shadows = []
    for k in range(2):
        path = root / f"shadow{k}.h5"
        record_run(FLConfig(rounds=12, client_fraction=0.3, hidden=(16,), dropout=(0.0,), batch_size=8, seed=10 + k,
                            fold=k), shadow_table, path)
        shadows.append(path)
    return {"target": target, "sent": sent, "shadows": shadows}


def test_plain_loop_recording_holds_exactly_what_was_sent(runs) -> None:
    sent = runs["sent"]
    with UpdateStore.open(runs["target"]) as store, UpdateStore.open(runs["shadows"][0]) as sim:
        assert store.complete and store.n_updates == len(sent) and store.rounds_completed == 12
        assert store.layers == sim.layers == ["fc1", "fc2"]
        assert store.parameter_names == sim.parameter_names
        assert set(store.index) == set(sim.index)
        for name in store.parameter_names:
            np.testing.assert_array_equal(store.param(name), np.stack([u.arrays[name] for u in sent]))
        np.testing.assert_array_equal(store.index["client_id"], [u.client_id for u in sent])
        assert set(store.ground_truth()["gender"]) == {"F", "M"}
        assert "speaker_id" not in store.ground_truth()  # only what the loop gave
        assert (store.index["bytes_sent"] == sum(a.size for a in sent[0].arrays.values()) * 4).all()


def test_plain_loop_recording_attacks_like_a_simulator_recording(runs) -> None:
    from fedaudit.audit.attack import fit_attack, score_attack

    attack, card = fit_attack("stats", shadows=runs["shadows"], seed=0)
    report = score_attack(attack, runs["target"], seed=0)
    result = report.results["1"]
    assert result.n_clients == len({u.client_id for u in runs["sent"]})
    # The attack read the very arrays the loop sent.
    stacked = {n: np.stack([u.arrays[n] for u in runs["sent"]]) for n in attack.required_parameters()}
    with UpdateStore.open(runs["target"]) as store:
        from_file = {n: store.param(n) for n in attack.required_parameters()}
    np.testing.assert_array_equal(attack.predict_proba(from_file), attack.predict_proba(stacked))
    # Gender leaks through the first layer of this plain loop as it does in the simulator's runs.
    assert result.auc > 0.5 and 0.0 <= result.asr <= 1.0
