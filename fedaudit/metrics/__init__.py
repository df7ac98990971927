"""Scores: UAR, accuracy, precision, recall and F1, the attack success rate (ASR) with its companions, and the permutation test."""

from fedaudit.metrics.asr import AttackResult, ClientPrediction, attack_success, predict_clients, row_probabilities
from fedaudit.metrics.basic import accuracy, class_scores, macro_f1, uar
from fedaudit.metrics.permutation import (
    Jackknife,
    Significance,
    balanced_relabellings,
    jackknife,
    permutation_p_value,
    significance,
)

__all__ = [
    "AttackResult",
    "ClientPrediction",
    "Jackknife",
    "Significance",
    "accuracy",
    "attack_success",
    "balanced_relabellings",
    "class_scores",
    "jackknife",
    "macro_f1",
    "permutation_p_value",
    "predict_clients",
    "row_probabilities",
    "significance",
    "uar",
]
