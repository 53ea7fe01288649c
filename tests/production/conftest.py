import pytest
import yaml


@pytest.fixture(scope="session")
def spec_path(tmp_path_factory):
    """The real DAG, compiled as `make compile` does."""
    from pipelines.compile import compile_pipeline

    return compile_pipeline(tmp_path_factory.mktemp("spec") / "pipeline.yaml")


@pytest.fixture(scope="session")
def spec(spec_path):
    return yaml.safe_load(spec_path.read_text())
