"""Small Conv1d and LSTM client models on synthetic frame sequences, recorded by a plain PyTorch loop.

Named as fedaudit's models name their layers (conv1, conv2, ..., lstm1, then fc layers; an
all-zero frame is padding), so attacks see the same parameter names and shapes as on the
registry's CNN and LSTM, without depending on them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedaudit.data.table import FeatureTable
from fedaudit.record.session import RecordingSession
from fedaudit.types import EMOTIONS

#: Frames per utterance and values per frame of the synthetic sequences.
N_FRAMES, N_COEFS = 12, 6


def make_frames(
    n_speakers: int = 12, per_speaker: int = 16, *, seed: int = 0, n_frames: int = N_FRAMES, n_coefs: int = N_COEFS,
    gender_offset: float = 1.5,
) -> FeatureTable:
    """Frame sequences whose coefficient 0 carries emotion and coefficient 1 gender (F higher), zero-padded."""
    rng = np.random.default_rng(seed)
    speakers = np.repeat([f"spk{seed}-{i:02d}" for i in range(n_speakers)], per_speaker)
    gender = np.repeat(["F" if i % 2 else "M" for i in range(n_speakers)], per_speaker)
    emotion = np.tile(np.repeat(EMOTIONS, per_speaker // 4), n_speakers)
    lengths = rng.integers(n_frames // 2, n_frames + 1, size=len(speakers))
    x = rng.normal(size=(len(speakers), n_frames, n_coefs)).astype(np.float32)
    x[:, :, 0] += 1.0 * np.array([EMOTIONS.index(e) for e in emotion], dtype=np.float32)[:, None]
    x[:, :, 1] += gender_offset * (gender == "F")[:, None]
    x[np.arange(n_frames)[None, :] >= lengths[:, None]] = 0.0
    return FeatureTable(
        x=x.reshape(len(speakers), -1), utterance_id=np.array([f"u{seed}-{i:04d}" for i in range(len(speakers))]),
        speaker_id=speakers, gender=gender, emotion=emotion, corpus=np.array(["synthetic-frames"] * len(speakers)),
        feature_set="synthetic-frames", frame_shape=(n_frames, n_coefs), lengths=lengths,
    )


def _masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid time steps of ``h`` (B, T, H)."""
    m = mask.to(h.dtype)[:, :, None]
    return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


class TinyCNN(nn.Module):
    """conv1 -> ReLU -> conv2 -> ReLU -> masked mean over time -> fc1 (Conv1d over time, 'same' padding)."""

    def __init__(self, n_coefs: int = N_COEFS, *, channels: int = 8, kernel: int = 3, n_classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(n_coefs, channels, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.fc1 = nn.Linear(channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, C)
        mask = x.abs().sum(-1) > 0
        h = torch.relu(self.conv2(torch.relu(self.conv1(x.transpose(1, 2)))))
        return self.fc1(_masked_mean(h.transpose(1, 2), mask))


class TinyLSTM(nn.Module):
    """lstm1 (one layer, batch first) -> masked mean of its outputs -> fc1."""

    def __init__(self, n_coefs: int = N_COEFS, *, hidden: int = 8, n_classes: int = 4) -> None:
        super().__init__()
        self.lstm1 = nn.LSTM(n_coefs, hidden, num_layers=1, batch_first=True)
        self.fc1 = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = x.abs().sum(-1) > 0
        out, _ = self.lstm1(x)
        return self.fc1(_masked_mean(out, mask))


def record_loop(
    path: Path, table: FeatureTable, model_fn: Callable[[], nn.Module], *, algorithm: str = "fedsgd",
    rounds: int = 12, per_round: int = 4, batch: int = 8, lr: float = 0.1, seed: int = 0,
) -> Path:
    """A plain FedSGD or FedAvg (one local epoch of SGD) loop, one client per speaker, that records itself.

    Frame tables feed the model ``(B, T, C)`` sequences; utterance-level tables their feature rows.
    Torch runs on one thread meanwhile (small models on a shared machine), then as before.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _record_loop(path, table, model_fn, algorithm=algorithm, rounds=rounds, per_round=per_round,
                            batch=batch, lr=lr, seed=seed)
    finally:
        torch.set_num_threads(threads)


def _record_loop(
    path: Path, table: FeatureTable, model_fn: Callable[[], nn.Module], *, algorithm: str, rounds: int,
    per_round: int, batch: int, lr: float, seed: int,
) -> Path:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = model_fn()
    x = torch.from_numpy(table.frames().copy() if table.frame_shape is not None else table.x.copy())
    y = torch.tensor([EMOTIONS.index(e) for e in table.emotion])
    speakers = table.speakers
    rows = [np.flatnonzero(table.speaker_id == s) for s in speakers]
    truth = {i: {"gender": str(table.gender[r[0]]), "speaker_id": speakers[i]} for i, r in enumerate(rows)}
    config = {"algorithm": algorithm, "lr": lr, "batch_size": batch, "rounds": rounds, "local_epochs": 1,
              "optimizer": "sgd", "normalization": "none", "client_fraction": per_round / len(rows)}
    data = {"feature_set": table.feature_set, "n_features": table.n_features}
    if table.frame_shape is not None:
        data["frame_shape"] = list(table.frame_shape)
    with RecordingSession(path, model, config=config, clients=len(rows), attributes=truth, data=data,
                          background=False) as session:
        for r in range(rounds):
            states = []
            sent = {n: p.detach().clone() for n, p in model.named_parameters()}
            for cid in sorted(int(c) for c in rng.choice(len(rows), per_round, replace=False)):
                if algorithm == "fedsgd":
                    b = rng.choice(rows[cid], batch, replace=False)
                    model.zero_grad()
                    nn.functional.cross_entropy(model(x[b]), y[b]).backward()
                    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
                    session.record_gradient(cid, r, grads, num_samples=batch)
                    states.append(grads)
                else:
                    local = model_fn()
                    local.load_state_dict(model.state_dict())
                    opt, steps, order = torch.optim.SGD(local.parameters(), lr=lr), 0, rng.permutation(rows[cid])
                    for start in range(0, len(order), batch):
                        b = order[start : start + batch]
                        opt.zero_grad()
                        nn.functional.cross_entropy(local(x[b]), y[b]).backward()
                        opt.step()
                        steps += 1
                    session.record_weights(cid, r, sent, dict(local.named_parameters()), lr=lr, local_steps=steps,
                                           num_samples=len(rows[cid]))
                    states.append({n: p.detach().clone() for n, p in local.named_parameters()})
            with torch.no_grad():
                for n, p in model.named_parameters():
                    mean = torch.stack([s[n] for s in states]).mean(0)
                    if algorithm == "fedsgd":
                        p -= lr * mean
                    else:
                        p.copy_(mean)
            session.end_round(r)
    return path


#: The two small models by the name the registry gives their kind.
MODELS: dict[str, Callable[[], nn.Module]] = {"cnn": TinyCNN, "lstm": TinyLSTM}


def record_runs(root: Path, model: str, *, algorithm: str = "fedsgd", shadows: int = 2) -> dict[str, list[Path]]:
    """Shadow runs on 16 speakers (seeds 10, 11, ...) and a target on 12 other speakers (seed 0) of one model."""
    fn = MODELS[model]
    shadow_table = make_frames(16, 16, seed=1)
    runs = [record_loop(root / f"{model}_{algorithm}_shadow{k}.h5", shadow_table, fn, algorithm=algorithm, seed=10 + k)
            for k in range(shadows)]
    target = record_loop(root / f"{model}_{algorithm}_target.h5", make_frames(12, 16, seed=2), fn,
                         algorithm=algorithm, seed=0)
    return {"shadows": runs, "target": [target]}
