"""Scores: UAR and accuracy (and, for attacks, attack success rate)."""

from fedaudit.metrics.basic import accuracy, uar

__all__ = ["accuracy", "uar"]
