"""Runs every task of a compiled pipeline spec inside the component image, as Vertex or KFP would.

kfp.local's own orchestrator walks the compiled spec (DAG order, conditions, executor input,
placeholders), exactly as for `make pipeline-run`; only the container engine differs: each task
runs its own container command and arguments from the spec in a fresh `buildah run --isolation
chroot` container of the pinned image, with the run folder mounted at the same path, because no
Docker daemon answers here. Then every output artifact and the recommendations table are checked.

    python -m tools.image_test --spec runs/image-test/pipeline.yaml --image recsys-pipeline:TAG
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import yaml

from components import run_time
from pipelines.run import local_job_time

BUILDAH = ("buildah", "--storage-driver", "vfs")


def load_pipeline_spec(spec_path: str | Path):
    """The PipelineSpec proto of a compiled YAML (its first document; a second one is the platform spec)."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    documents = list(yaml.safe_load_all(Path(spec_path).read_text()))
    return json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec())


def executor_images(spec) -> dict[str, str]:
    """executor label -> image, for every container executor of the spec."""
    executors = spec.deployment_spec["executors"]
    return {label: executors[label]["container"]["image"] for label in executors if "container" in executors[label]}


def check_pinned(spec, image: str) -> None:
    """Refuses a spec whose container executors do not all pin `image`, so the test runs the image it names."""
    images = executor_images(spec)
    if not images:
        raise ValueError("the spec has no container executors")
    wrong = {label: img for label, img in images.items() if img != image}
    if wrong:
        raise ValueError(f"executors not pinned to {image}: {wrong}")


def local_image_name(image: str) -> str:
    """buildah stores an unqualified name under localhost/; answer the name it knows."""
    for candidate in (image, f"localhost/{image}"):
        found = subprocess.run([*BUILDAH, "inspect", "--type", "image", candidate], capture_output=True)
        if found.returncode == 0:
            return candidate
    raise FileNotFoundError(f"image {image} is not in buildah's storage: run `make images BUILDER=buildah`")


class BuildahTaskHandler:
    """kfp.local task handler that runs the task's command in a fresh chroot container of its image."""

    mounts: tuple[str, ...] = ()
    timings: dict[str, float] = {}

    def __init__(self, image, full_command, pipeline_root, runner, env_vars=None):
        self.image = image
        self.full_command = list(full_command)
        self.pipeline_root = pipeline_root
        self.env_vars = env_vars or {}

    def run(self):
        """Runs the task's command in a fresh container of the image, the run folder mounted; returns kfp.local's
        status."""
        from kfp.local import status

        started = time.perf_counter()
        container = subprocess.run(
            [*BUILDAH, "from", "--quiet", local_image_name(self.image)], check=True, capture_output=True, text=True
        ).stdout.strip()
        try:
            volumes = [
                arg for path in _outermost({self.pipeline_root, *self.mounts}) for arg in ("-v", f"{path}:{path}")
            ]
            env = [arg for key, value in self.env_vars.items() for arg in ("--env", f"{key}={value}")]
            code = subprocess.run(
                [*BUILDAH, "run", "--isolation", "chroot", *volumes, *env, container, "--", *self.full_command]
            ).returncode
        finally:
            subprocess.run([*BUILDAH, "rm", container], check=False, capture_output=True)
        task = _task_name(self.full_command)
        BuildahTaskHandler.timings[task] = round(time.perf_counter() - started, 1)
        return status.Status.SUCCESS if code == 0 else status.Status.FAILURE


def _outermost(paths: set[str]) -> list[str]:
    """The paths to mount: each once, none inside another (created first: buildah mounts only what exists)."""
    resolved = sorted({Path(p).resolve() for p in paths})
    for path in resolved:
        path.mkdir(parents=True, exist_ok=True)
    return [str(p) for p in resolved if not any(p != q and p.is_relative_to(q) for q in resolved)]


def _task_name(full_command: list[str]) -> str:
    """The task's name: the folder of its executor output (kfp.local writes each task's outputs under
    <run>/<task>/), so two tasks of one component (ranking, ranking-2) keep apart; else the command's function."""
    if "--executor_input" in full_command:
        executor_input = json.loads(full_command[full_command.index("--executor_input") + 1])
        output_file = executor_input.get("outputs", {}).get("outputFile")
        if output_file:
            return Path(output_file).parent.name
    if "--function_to_execute" in full_command:
        return full_command[full_command.index("--function_to_execute") + 1]
    return full_command[0]


@contextmanager
def buildah_runner(pipeline_root: Path, mounts: list[Path]):
    """kfp.local configured with its DockerRunner, whose container launch is swapped for buildah."""
    from kfp import local
    from kfp.local import task_dispatcher

    BuildahTaskHandler.mounts = tuple(str(m) for m in mounts)
    BuildahTaskHandler.timings = {}
    local.init(runner=local.DockerRunner(), pipeline_root=str(pipeline_root), raise_on_error=True)
    handler_module = mock.Mock(DockerTaskHandler=BuildahTaskHandler)
    with (
        mock.patch.object(task_dispatcher, "_DOCKER_AVAILABLE", True),
        mock.patch.object(task_dispatcher, "docker_task_handler", handler_module),
    ):
        yield


def pipeline_arguments(spec, workdir: Path) -> dict:
    """Local paths for the pipeline's warehouse, destination and registry parameters (those the spec has)."""
    wanted = {
        "warehouse_uri": f"duckdb://{workdir / 'warehouse.duckdb'}",
        "destination": f"duckdb://{workdir / 'recommendations.duckdb'}",
        "registry_uri": str(workdir / "registry"),
    }
    names = set(spec.root.input_definitions.parameters)
    return {name: value for name, value in wanted.items() if name in names}


METADATA_ONLY_ARTIFACTS = {"system.Metrics", "system.ClassificationMetrics", "system.SlicedClassificationMetrics"}


def check_outputs(spec, run_dir: Path) -> dict[str, list[str]]:
    """Every output artifact of every task that ran is there: a non-empty file or folder, or for metrics
    (which live in the executor output, not in a file) non-empty metadata. Returns task -> artifacts."""
    checked: dict[str, list[str]] = {}
    for task_name, component_name in _all_tasks(spec):
        task_dir = run_dir / task_name
        if not task_dir.exists():
            continue
        outputs = spec.components[component_name].output_definitions.artifacts
        for name, definition in outputs.items():
            if definition.artifact_type.schema_title in METADATA_ONLY_ARTIFACTS:
                # Values may be legitimately absent (a stage skips undefined figures); the entry may not.
                if _artifact_metadata(task_dir, name) is None:
                    raise AssertionError(f"task {task_name}: metrics artifact {name} is not in its executor output")
                continue
            path = task_dir / name
            if (
                not path.exists()
                or (path.is_dir() and not any(path.iterdir()))
                or (path.is_file() and path.stat().st_size == 0)
            ):
                raise AssertionError(f"task {task_name}: output artifact {name} is missing or empty at {path}")
        checked[task_name] = sorted(outputs)
    if not checked:
        raise AssertionError(f"no task wrote anything under {run_dir}")
    return checked


def check_all_tasks_ran(spec, checked: dict[str, list[str]]) -> None:
    """A blessed run takes every branch, so a task of the spec that left no outputs did not run in the image."""
    missing = sorted(name for name, _ in _all_tasks(spec) if name not in checked)
    if missing:
        raise AssertionError(f"tasks of the spec that did not run: {missing}")


def _artifact_metadata(task_dir: Path, name: str) -> dict | None:
    """The artifact's metadata in the task's executor output; None if the output does not name it."""
    executor_output = task_dir / "executor_output.json"
    if not executor_output.exists():
        return None
    artifacts = json.loads(executor_output.read_text()).get("artifacts", {}).get(name, {}).get("artifacts", [])
    return artifacts[0].get("metadata", {}) if artifacts else None


def _all_tasks(spec):
    """(task name, component name) of every container task, including those inside condition groups."""

    def walk(dag):
        for name, task in dag.tasks.items():
            component = spec.components[task.component_ref.name]
            if component.WhichOneof("implementation") == "dag":
                yield from walk(component.dag)
            else:
                yield name, task.component_ref.name

    yield from walk(spec.root.dag)


def check_recommendations(destination: Path, table: str = "recommendations") -> int:
    """Rows of the final recommendations table; an empty or missing table is a failure."""
    import duckdb

    if not destination.exists():
        raise AssertionError(f"no recommendations database at {destination}")
    with duckdb.connect(str(destination), read_only=True) as con:
        rows = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        users = con.execute(f"SELECT count(DISTINCT user_id) FROM {table}").fetchone()[0]
    if rows == 0 or users == 0:
        raise AssertionError(f"{table} in {destination} is empty")
    return rows


def run_image_test(
    spec_path: str | Path,
    image: str,
    workdir: str | Path,
    shop: str = "tiny",
    arguments: dict | None = None,
    expect_recommendations: bool = True,
) -> dict:
    """Builds the warehouse, runs the spec's tasks in the image, checks outputs; returns a summary."""
    from kfp.local import pipeline_orchestrator

    workdir = Path(workdir).resolve()
    spec = load_pipeline_spec(spec_path)
    check_pinned(spec, image)
    local_image_name(image)
    workdir.mkdir(parents=True, exist_ok=True)
    args = pipeline_arguments(spec, workdir)
    if "warehouse_uri" in args:
        from components.warehouse.duckdb_warehouse import ensure_warehouse

        ensure_warehouse(f"synthetic:{shop}", workdir / "warehouse.duckdb", seed=0)
    args.update(arguments or {})
    pipeline_root = workdir / "pipeline_root"
    started = time.perf_counter()
    with buildah_runner(pipeline_root, mounts=[workdir]), local_job_time(args.get("run_time") or run_time.now_iso()):
        pipeline_orchestrator.run_local_pipeline(spec, args)
    total = time.perf_counter() - started
    run_dir = max((p for p in pipeline_root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    artifacts = check_outputs(spec, run_dir)
    if expect_recommendations:
        check_all_tasks_ran(spec, artifacts)
    summary = {
        "image": image,
        "run_dir": str(run_dir),
        "artifacts": artifacts,
        "task_seconds": dict(BuildahTaskHandler.timings),
        "total_seconds": round(total, 1),
    }
    if expect_recommendations:
        summary["recommendation_rows"] = check_recommendations(workdir / "recommendations.duckdb")
    (workdir / "image-test.json").write_text(json.dumps(summary, indent=2))
    return summary


def parse_param(text: str) -> tuple[str, object]:
    """A --param NAME=VALUE as (name, value), the value read as JSON when it parses, else kept as text."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"--param {text!r} must be NAME=VALUE")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def main() -> None:
    """`make image-test`'s runner: the compiled spec run task by task in the image, then every output checked."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--image", required=True, help="the image every executor must pin")
    parser.add_argument("--workdir", default="runs/image-test")
    parser.add_argument("--shop", default="tiny")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="pipeline argument (VALUE parsed as JSON when it is JSON), e.g. margin_vs_baseline=-1.0",
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    summary = run_image_test(
        args.spec, args.image, args.workdir, shop=args.shop, arguments=dict(parse_param(p) for p in args.param)
    )
    print(json.dumps(summary, indent=2))
    print(
        f"image-test passed: all {len(summary['artifacts'])} tasks ran in {args.image}, every output artifact "
        f"checked, {summary.get('recommendation_rows', 0)} recommendation rows",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
