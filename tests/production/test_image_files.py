"""The image installs exactly the venv's lock, stays lean, and its tag follows the code."""

import json
import re
import shutil
from importlib.metadata import version
from pathlib import Path

import pytest

from components import image

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()


def lock_pins(path: Path) -> dict[str, str]:
    """name -> version of every pin; each pin must carry its sha256 (the installs use --require-hashes)."""
    pins = {}
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("--hash="):
            continue
        assert line.endswith(" \\") and lines[number + 1].strip().startswith("--hash=sha256:"), (
            f"{path.name}: no hash for {line!r}"
        )
        name, sep, pinned = line.removesuffix(" \\").partition("==")
        assert sep and pinned and not re.search(r"[<>~!;\s]", pinned), f"{path.name}: not an exact pin: {line!r}"
        pins[name.lower().replace("_", "-")] = pinned
    return pins


def dockerfile_stages(text: str) -> dict[str, str]:
    """Stage name -> its instructions, split at each FROM ... AS name."""
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def make_dry_run(*args: str) -> str:
    """What `make -n ARGS` would run, in the repository."""
    import subprocess

    return subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_dockerfile_installs_the_lock_file_then_the_project_without_deps():
    build = dockerfile_stages(DOCKERFILE)["build"]
    assert "COPY requirements.lock ./" in build
    install = re.search(r"/opt/venv/bin/pip install (.*?);", build)
    assert install and install.group(1).startswith("--require-hashes -r requirements.lock"), (
        "the venv must be installed from the lock, every file checked against its hash"
    )
    assert "--upgrade" not in build and " -U " not in build
    assert re.search(r"pip install --no-deps \.", build), "the project goes in without re-resolving dependencies"
    assert "pip check" in build


def test_dockerfile_pip_matches_the_makefile_venv():
    makefile_pip = re.search(r"pip==([\d.]+)", (ROOT / "Makefile").read_text()).group(1)
    assert re.search(rf"ARG PIP_VERSION={re.escape(makefile_pip)}\n", DOCKERFILE)


def test_lock_is_fully_pinned_and_hashed_and_is_what_the_venv_has():
    pins = lock_pins(ROOT / "requirements.lock")
    mismatched = {name: (pinned, version(name)) for name, pinned in pins.items() if version(name) != pinned}
    assert not mismatched, f"venv differs from requirements.lock: {mismatched}"


def test_gpu_lock_only_adds_pinned_cuda_libraries():
    gpu = lock_pins(ROOT / "docker" / "requirements-gpu.lock")
    assert gpu and all(name.startswith("nvidia-") for name in gpu)
    assert not set(gpu) & set(lock_pins(ROOT / "requirements.lock"))


def test_runtime_stage_holds_only_the_venv_and_no_build_secrets():
    runtime = dockerfile_stages(DOCKERFILE)["runtime"]
    copies = re.findall(r"^COPY .*$", runtime, flags=re.M)
    assert copies == ["COPY --from=build /opt/venv /opt/venv"]
    assert not re.search(r"^(ENV|COPY|ADD).*(PIP_CERT|ca-certificates)", DOCKERFILE, flags=re.M), (
        "the CA bundle is mounted at build time, never baked in"
    )
    assert "/opt/venv/bin" in runtime and "TF_USE_LEGACY_KERAS=1" in runtime


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins, `!` re-includes, a directory pattern covers its files."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        if re.fullmatch(rf"{regex}(/.*)?", path):
            ignored = not negate
    return ignored


@pytest.mark.parametrize(
    "path, kept",
    [
        ("requirements.lock", True),
        ("pyproject.toml", True),
        ("README.md", True),
        ("requirements-test.lock", False),
        ("components/image.py", True),
        ("pipelines/pipeline.py", True),
        ("docker/Dockerfile", True),
        (".venv/bin/python", False),
        ("tests/production/test_image_files.py", False),
        ("runs/local/x.duckdb", False),
        ("bench/results/bench.json", False),
        ("components/__pycache__/image.cpython-311.pyc", False),
        ("components/features/out.tfrecord", False),
        (".git/HEAD", False),
        ("data/beauty.csv", False),
    ],
)
def test_dockerignore_keeps_code_and_lock_only(path, kept):
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert dockerignored(path, patterns) is not kept


def test_image_tag_is_a_content_hash_of_code_and_lock(tmp_path, monkeypatch):
    for top in ("components", "pipelines"):
        (tmp_path / top).mkdir()
        (tmp_path / top / "mod.py").write_text("x = 1\n")
    (tmp_path / "docker").mkdir()
    for name in ("requirements.lock", "pyproject.toml", "docker/Dockerfile"):
        (tmp_path / name).write_text(name)
    monkeypatch.setattr(image, "ROOT", tmp_path)
    first = image.content_hash()
    (tmp_path / "components" / "__pycache__").mkdir()
    (tmp_path / "components" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    assert image.content_hash() == first, "bytecode must not change the tag"
    (tmp_path / "requirements.lock").write_text("numpy==2.4.6\n")
    second = image.content_hash()
    assert second != first
    (tmp_path / "components" / "mod.py").write_text("x = 2\n")
    assert image.content_hash() not in (first, second)


def test_image_names_follow_the_environment(monkeypatch):
    monkeypatch.setenv("RECSYS_IMAGE", "europe-docker.pkg.dev/p/r/recsys-pipeline:abc")
    monkeypatch.delenv("RECSYS_GPU_IMAGE", raising=False)
    assert image.image() == "europe-docker.pkg.dev/p/r/recsys-pipeline:abc"
    assert image.gpu_image(image.image()) == "europe-docker.pkg.dev/p/r/recsys-pipeline:abc-gpu"
    with pytest.raises(ValueError, match="RECSYS_GPU_IMAGE"):
        image.gpu_image("europe-docker.pkg.dev/p/r/recsys-pipeline@sha256:" + "0" * 64)
    monkeypatch.setenv("RECSYS_GPU_IMAGE", "europe-docker.pkg.dev/p/r/recsys-trainer:cuda")
    assert image.gpu_image() == "europe-docker.pkg.dev/p/r/recsys-trainer:cuda"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_images_dry_run_uses_the_lock_dockerfile_and_mounted_ca():
    out = make_dry_run("images", "BUILDER=buildah", "HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt")
    assert "bud --isolation chroot" in out and "-f docker/Dockerfile" in out and "--target runtime" in out
    assert "-v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro --build-arg PIP_CERT=/run/host-ca.crt" in out
    assert 'if [ -n "" ]; then buildah --storage-driver vfs push' in out, "no registry, no push"
    pushed = make_dry_run("images", "BUILDER=docker", "REGISTRY=europe-docker.pkg.dev/p/r")
    assert "--target production" in pushed and "--build-arg BASE_IMAGE=python:3.11-slim-bookworm" in pushed
    assert re.search(
        r'if \[ -n "europe-docker.pkg.dev/p/r" \]; then docker push europe-docker.pkg.dev/p/r/recsys-pipeline:\w+',
        pushed,
    )


def test_cloud_build_builds_the_same_dockerfile_and_pushes_the_tagged_image():
    import yaml

    config = yaml.safe_load((ROOT / "docker" / "cloudbuild.yaml").read_text())
    build = " ".join(config["steps"][0]["args"])
    assert "docker build -f docker/Dockerfile" in build and '--target "${_TARGET}"' in build
    assert '--build-arg BASE_IMAGE="${_BASE_IMAGE}"' in build and '-t "${_IMAGE}"' in build
    assert config["images"] == ["${_IMAGE}"]
    assert config["substitutions"]["_TARGET"] == "production"
    assert config["steps"][1]["name"] == "${_IMAGE}", "the pushed image is smoke-tested first"


SERVING_DOCKERFILE = (ROOT / "docker" / "Dockerfile.serving").read_text()


def test_serving_image_is_the_component_image_with_the_server_as_entry_point():
    from components.serving import server

    assert re.search(r"^ARG COMPONENT_IMAGE\nFROM \$\{COMPONENT_IMAGE\}$", SERVING_DOCKERFILE, flags=re.MULTILINE)
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", SERVING_DOCKERFILE, flags=re.MULTILINE).group(1))
    assert entrypoint == ["python", "-m", server.__name__], "Vertex AI starts the image's entry point"
    assert re.search(rf"^EXPOSE {server.HTTP_PORT}$", SERVING_DOCKERFILE, flags=re.MULTILINE)
    assert not re.search(r"^(COPY|ADD|RUN) ", SERVING_DOCKERFILE, flags=re.MULTILINE), (
        "no second install: the same code"
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_serve_image_builds_the_tag_the_registry_step_registers(monkeypatch):
    monkeypatch.delenv("RECSYS_SERVING_IMAGE", raising=False)
    out = make_dry_run("serve-image-test", "BUILDER=buildah")
    serving = image.serving_image(f"recsys-pipeline:{image.content_hash()}")
    assert f"-f docker/Dockerfile.serving --build-arg COMPONENT_IMAGE={serving.removesuffix('-serving')}" in out
    assert f"-t {serving} ." in out
    assert f"-m tools.serve_image_test --image '{serving}' --model 'runs/local/registry/serving'" in out
    pushed = make_dry_run("serve-image", "BUILDER=docker", "REGISTRY=europe-docker.pkg.dev/p/r")
    assert re.search(r"docker push europe-docker.pkg.dev/p/r/recsys-pipeline:\w+-serving", pushed)
