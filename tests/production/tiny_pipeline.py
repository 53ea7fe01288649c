"""A two-stage pipeline with a condition, built like the real DAG, for tests that need a spec of their own."""

from kfp import compiler, dsl

from components.cloud.resources import apply_resources
from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(epochs: int, model: dsl.Output[dsl.Model], metrics: dsl.Output[dsl.Metrics]) -> bool:
    import os

    os.makedirs(model.path)
    metrics.log_metric("epochs", float(epochs))
    return epochs > 0


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def publish(model: dsl.Input[dsl.Model], table: dsl.Output[dsl.Dataset]):
    import os

    os.makedirs(table.path)


def build(accelerator: str | None = None):
    @dsl.pipeline(name="tiny-production")
    def tiny(epochs: int = 1, destination: str = "duckdb:///tmp/x.duckdb"):
        trained = apply_resources(train(epochs=epochs).set_display_name("ranking"), "ranking", accelerator=accelerator)
        with dsl.If(trained.outputs["Output"] == True, name="blessed"):  # noqa: E712 (KFP condition syntax)
            apply_resources(publish(model=trained.outputs["model"]), "export")

    return tiny


def compile_tiny(path, accelerator: str | None = None):
    compiler.Compiler().compile(build(accelerator), package_path=str(path))
    return path
