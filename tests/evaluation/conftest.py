"""Session fixtures: one tiny features output shared by the evaluation tests."""

from pathlib import Path

import numpy as np
import pytest
from evaluation_doubles import make_sequences, write_features

from components import schema


@pytest.fixture(scope="session")
def tiny_features(tmp_path_factory) -> Path:
    return write_features(tmp_path_factory.mktemp("features"), make_sequences())


@pytest.fixture(scope="session")
def today_item_ids(tiny_features) -> np.ndarray:
    return np.asarray(["", ""] + schema.read_vocab(tiny_features, schema.ITEM_VOCAB), dtype=object)
