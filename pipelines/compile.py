"""Compiles the DAG to a KFP v2 YAML spec for Vertex AI Pipelines or Kubeflow (`make compile`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from kfp import compiler


def compile_pipeline(output: str | Path) -> Path:
    """Compiles the DAG into the spec that `make pipeline-run`, Vertex and KFP submit; returns its path."""
    from pipelines.pipeline import recommender_pipeline

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(recommender_pipeline, package_path=str(output))
    return output


def main() -> None:
    """`python -m pipelines.compile --output pipeline.yaml`: the spec for a pipeline run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default="pipeline.yaml")
    args = parser.parse_args()
    print(f"compiled pipeline spec: {compile_pipeline(args.output)}")


if __name__ == "__main__":
    main()
