"""Corpora, features, normalisation and the split of speakers into clients."""

from fedaudit.data.clients import ClientData, FederatedSplit, speaker_folds, split_clients
from fedaudit.data.demo import DEMO_CORPORA, load_demo
from fedaudit.data.features import FEATURE_SETS, extract_features
from fedaudit.data.loaders import LAYOUTS, LOADERS, load_corpus
from fedaudit.data.normalize import normalize_features, speaker_znorm
from fedaudit.data.sources import load_features
from fedaudit.data.table import CORPUS_COLUMNS, EMOTIONS, GENDERS, FeatureTable

__all__ = [
    "CORPUS_COLUMNS",
    "ClientData",
    "DEMO_CORPORA",
    "EMOTIONS",
    "FEATURE_SETS",
    "FeatureTable",
    "FederatedSplit",
    "GENDERS",
    "LAYOUTS",
    "LOADERS",
    "extract_features",
    "load_corpus",
    "load_demo",
    "load_features",
    "normalize_features",
    "speaker_folds",
    "speaker_znorm",
    "split_clients",
]
