import pytest

from .synthetic import write_drifting_features


@pytest.fixture(scope="session")
def drifting_features(tmp_path_factory):
    """A tiny features output whose interests drift (shared by the slower model tests)."""
    return write_drifting_features(tmp_path_factory.mktemp("features"), users=200, seed=0)
