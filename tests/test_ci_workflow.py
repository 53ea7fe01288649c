"""The GitHub workflow, which nothing here can run, is valid against the published workflow schema (the copy
bundled with check-jsonschema, so no network), and runs the same .ci/run as a local CI."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def test_workflow_matches_the_github_workflow_schema():
    pytest.importorskip("check_jsonschema", reason="check-jsonschema comes with requirements-dev.lock")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_runs_the_ci_script_and_the_ci_script_lints_first():
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["lint-and-test"]["steps"]
    assert steps[-1]["run"] == ".ci/run"
    commands = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("make ")]
    assert [c.split("#")[0].strip() for c in commands] == ["make lint", "make report-tools", "make test"]
