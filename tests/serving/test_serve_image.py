"""`make serve-image-test`'s runner (tools.serve_image_test) without an image: a stand-in `buildah` on PATH
answers `inspect` with docker/Dockerfile.serving's ENTRYPOINT and runs `buildah run`'s command on this machine
with the container's variables and mounts, so the server the image would start answers real requests on loopback."""

import json
import os
import re
import stat
import sys
from pathlib import Path

import pytest

from components.serving import bundle
from tools import serve_image_test

ROOT = Path(__file__).resolve().parents[2]

FAKE_BUILDAH = """#!{python}
import json, os, re, sys
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps(args) + "\\n")
while args and args[0].startswith("--storage-driver"):
    args = args[2:]
if args[0] == "inspect":
    if "--format" in args:  # as Debian bookworm's buildah 1.28 answers a template with json in it
        sys.exit('Error: Template parsing error: template: format:1: function "json" not defined')
    print(json.dumps({{"Type": "buildah 0.0.1", "OCIv1": {{"config": {{"Entrypoint": {entrypoint!r}, "Cmd": None}}}}}}))
elif args[0] == "from":
    print("serving-container-1")
elif args[0] == "run":
    rest, env, mounts = args[1:], dict(os.environ), {{}}
    while rest[0] != "--":
        flag = rest.pop(0)
        if flag == "--env":
            key, _, value = rest.pop(0).partition("=")
            env[key] = value
        elif flag == "-v":
            source, target = rest.pop(0).split(":")[:2]
            mounts[target] = source
        elif flag == "--isolation":
            rest.pop(0)
        else:
            container = flag
    command = rest[1:]
    for key, value in env.items():  # the container's paths are this machine's mounted folders
        for target, source in mounts.items():
            if value == target or value.startswith(target + "/"):
                env[key] = source + value[len(target):]
    if command[0] == "python":
        command[0] = sys.executable  # the image's python is its venv's: here, the test's
    os.execvpe(command[0], command, env)
"""


@pytest.mark.slow
def test_the_serving_image_entry_point_answers_on_vertex_variables(tiny_shop, tmp_path, monkeypatch):
    text = (ROOT / "docker" / "Dockerfile.serving").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, flags=re.MULTILINE).group(1))
    calls = tmp_path / "buildah-calls.jsonl"
    fake = tmp_path / "bin" / "buildah"
    fake.parent.mkdir()
    fake.write_text(FAKE_BUILDAH.format(python=sys.executable, log=str(calls), entrypoint=entrypoint))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    bundle.publish(tiny_shop.serving_model, tmp_path / "registry", "v1-dien")

    figures = serve_image_test.run_serve_image_test(
        "recsys-pipeline:test-serving", tmp_path / "registry" / bundle.SERVING, requests=20
    )

    assert figures["entrypoint"] == entrypoint and figures["model_version"] == "v1-dien"
    assert figures["c1"]["errors"] == figures["c8"]["errors"] == 0 and figures["c8"]["requests"] == 20
    run = next(call for call in map(json.loads, calls.read_text().splitlines()) if "run" in call)
    assert run[run.index("run") + 1 : run.index("run") + 3] == ["--isolation", "chroot"]
    assert f"{(tmp_path / 'registry' / bundle.SERVING).resolve()}:/models:ro" in run
    assert "AIP_STORAGE_URI=/models" in run and "AIP_PREDICT_ROUTE=/v1/models/shop-recsys:predict" in run
    assert run[run.index("--") + 1 :] == entrypoint
    assert any(call[-2:] == ["rm", "serving-container-1"] for call in map(json.loads, calls.read_text().splitlines()))
