"""The compiled spec: loads back, pins the image, has the expected DAG, resources, no secrets; matches golden."""

import difflib
import os
import re
from pathlib import Path

import yaml

from components.cloud.resources import STAGE_RESOURCES
from components.image import IMAGE
from tools.image_test import check_pinned, load_pipeline_spec

GOLDEN = Path(__file__).parent / "golden" / "pipeline.yaml"
# display name -> the resource table's stage
STAGES = {
    "extract": "extract",
    "features": "features",
    "retrieval": "retrieval",
    "ranking-dien": "ranking",
    "ranking-din-baseline": "ranking",
    "evaluation": "evaluation",
    "campaign-evaluation": "evaluation",
    "export": "export",
    "register-models": "register",
    "off-policy-evaluation": "experiments",
    "bandit-reranker": "experiments",
    "ab-analysis": "experiments",
    "serving-model": "serving",
    "deploy-model": "register",
}


def all_tasks(spec, dag=None, group="root"):
    """(group, task name, task) for every task, descending into condition sub-DAGs."""
    dag = dag or spec["root"]["dag"]
    for name, task in dag["tasks"].items():
        component = spec["components"][task["componentRef"]["name"]]
        if "dag" in component:
            yield group, name, task
            yield from all_tasks(spec, component["dag"], group=name)
        else:
            yield group, name, task


def upstream(task) -> set[str]:
    producers = set(task.get("dependentTasks", []))
    for kind in ("artifacts", "parameters"):
        for value in task.get("inputs", {}).get(kind, {}).values():
            for key in ("taskOutputArtifact", "taskOutputParameter"):
                if key in value:
                    producers.add(value[key]["producerTask"])
    return producers


def test_spec_loads_back_with_kfp(spec_path):
    from kfp import components

    pipeline = components.load_component_from_file(str(spec_path))
    assert pipeline.name == "shop-recommender"
    assert load_pipeline_spec(spec_path).pipeline_info.name == "shop-recommender"


def test_every_task_runs_the_pinned_image(spec_path, spec):
    check_pinned(load_pipeline_spec(spec_path), IMAGE)
    assert re.fullmatch(r"[\w./-]+:[0-9a-f]{12}", IMAGE) or os.environ.get("RECSYS_IMAGE")
    for executor in spec["deploymentSpec"]["executors"].values():
        command = " ".join(executor["container"]["command"])
        assert "pip install" not in command, "components must run from the image, not install at start"


def test_dag_edges_and_conditions(spec):
    tasks = {name: (group, task) for group, name, task in all_tasks(spec)}
    edges = {(producer, name) for name, (_, task) in tasks.items() for producer in upstream(task)}
    expected = {
        ("extract", "features"),
        ("features", "retrieval"),
        ("features", "ranking"),
        ("features", "ranking-2"),
        ("features", "evaluation"),
        ("retrieval", "evaluation"),
        ("ranking", "evaluation"),
        ("ranking-2", "evaluation"),
        ("extract", "evaluation"),
    }  # the DIN baseline reaches the report
    assert expected <= edges, f"missing edges: {expected - edges}"
    conditions = {
        task["taskInfo"]["name"]: (name, task) for name, (_, task) in tasks.items() if "triggerPolicy" in task
    }
    assert set(conditions) == {"blessed", "bandit-enabled"}

    def guarded(condition_name):
        group = conditions[condition_name][0]
        return {tasks[name][1]["taskInfo"]["name"] for name, (g, _) in tasks.items() if g == group}

    blessed = conditions["blessed"][1]
    assert (
        blessed["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--evaluation-Output'] == true"
    )
    assert "evaluation" in upstream(blessed)
    assert guarded("blessed") == {"export", "ab-analysis", "serving-model", "register-models", "deploy-model"}, (
        "only these wait for the blessing"
    )
    # the serving model is registered (and so served) only after its lists are in the table, then deployed
    assert {
        ("serving-model", "register-models"),
        ("export", "register-models"),
        ("register-models", "deploy-model"),
    } <= edges
    bandit = conditions["bandit-enabled"][1]
    assert bandit["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--enable_bandit'] == true"
    assert guarded("bandit-enabled") == {"bandit-reranker"}


def test_case07_extract_and_export_take_the_run_time_and_the_jobs_creation_time(spec):
    """run_time (set by pipelines.run for local and one-off runs) and, for a schedule's runs without it, the job's
    creation time, which Vertex AI and KFP resolve the same for every retry of the job (components.run_time.of_run)."""
    tasks = {task["taskInfo"]["name"]: task for _, _, task in all_tasks(spec)}
    for name in ("extract", "export"):
        inputs = tasks[name]["inputs"]["parameters"]
        assert inputs["run_time"] == {"componentInputParameter": "pipelinechannel--run_time"} or inputs["run_time"] == {
            "componentInputParameter": "run_time"
        }, name
        assert inputs["job_create_time"] == {"runtimeValue": {"constant": "{{$.pipeline_job_create_time_utc}}"}}, name


def test_every_task_has_its_stage_resources(spec):
    executors = spec["deploymentSpec"]["executors"]
    components = spec["components"]
    seen = set()
    for _, name, task in all_tasks(spec):
        component = components[task["componentRef"]["name"]]
        if "dag" in component:
            continue
        stage = STAGES[task["taskInfo"]["name"]]
        resources = executors[component["executorLabel"]]["container"]["resources"]
        want = STAGE_RESOURCES[stage]
        assert resources["resourceCpuLimit"] == resources["resourceCpuRequest"] == want.cpu, name
        assert resources["resourceMemoryLimit"] == resources["resourceMemoryRequest"] == want.memory, name
        seen.add(stage)
    assert seen == set(STAGES.values())


def test_no_credentials_or_secrets_in_the_spec(spec_path):
    text = spec_path.read_text()
    for pattern in (
        r"BEGIN [A-Z ]*PRIVATE KEY",
        r"private_key",
        r"GOOGLE_APPLICATION_CREDENTIALS",
        r"client_secret",
        r"\bpassword\s*[:=]",
        r"AIza[0-9A-Za-z_-]{35}",
        r"ya29\.",
    ):
        assert not re.search(pattern, text, flags=re.I), f"spec contains {pattern}"


def normalized(spec: dict) -> str:
    """The spec with what legitimately changes masked: the image tag, and each component's Python body
    (the body is code, tested by its stage; the golden guards the interface, wiring and resources)."""
    spec = yaml.safe_load(yaml.safe_dump(spec))
    for executor in spec["deploymentSpec"]["executors"].values():
        container = executor["container"]
        container["image"] = re.sub(r":[0-9a-f]{12}$", ":<TAG>", container["image"])
        container["command"] = [
            re.sub(r"(?s)\ndef .*", "\n<component source>", part) if "\ndef " in part else part
            for part in container["command"]
        ]
    return yaml.safe_dump(spec, sort_keys=True, width=120)


def test_golden_spec(spec):
    """A deliberate change: UPDATE_GOLDEN=1 pytest tests/production/test_spec.py, and commit the golden with it."""
    current = normalized(spec)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(current)
    golden = GOLDEN.read_text()
    diff = "".join(difflib.unified_diff(golden.splitlines(True), current.splitlines(True), "golden", "compiled", n=2))
    assert current == golden, f"compiled spec changed (UPDATE_GOLDEN=1 if deliberate):\n{diff[:6000]}"
