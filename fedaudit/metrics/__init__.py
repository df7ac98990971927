"""Scores: UAR and accuracy, and the attack success rate (ASR) with its companions."""

from fedaudit.metrics.asr import AttackResult, ClientPrediction, attack_success, predict_clients, row_probabilities
from fedaudit.metrics.basic import accuracy, uar

__all__ = [
    "AttackResult",
    "ClientPrediction",
    "accuracy",
    "attack_success",
    "predict_clients",
    "row_probabilities",
    "uar",
]
