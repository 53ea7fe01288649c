"""The container image every component runs in.

The tag is a content hash of the code and the lock file, so the compiled spec pins exactly the
image that holds this code. `RECSYS_IMAGE` overrides it (for example a pushed registry path).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE_REPOSITORY = os.environ.get("RECSYS_IMAGE_REPOSITORY", "recsys-pipeline")
HASHED_PATHS = (
    "requirements.lock",
    "pyproject.toml",
    "components",
    "pipelines",
    "docker/Dockerfile",
    "docker/Dockerfile.serving",
)


def content_hash() -> str:
    """A short hash over the files that go into the image; stable across machines and checkouts."""
    digest = hashlib.sha256()
    for top in HASHED_PATHS:
        path = ROOT / top
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if not file.exists() or "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            digest.update(str(file.relative_to(ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def image() -> str:
    """The component image every task runs in: RECSYS_IMAGE when set, else the repository tagged by the content hash."""
    return os.environ.get("RECSYS_IMAGE") or f"{IMAGE_REPOSITORY}:{content_hash()}"


def gpu_image(cpu_image: str | None = None) -> str:
    """The GPU variant (`make images VARIANT=gpu`) of `cpu_image` (default IMAGE): same code and lock plus
    CUDA libraries, tag suffix -gpu."""
    if os.environ.get("RECSYS_GPU_IMAGE"):
        return os.environ["RECSYS_GPU_IMAGE"]
    cpu = cpu_image or IMAGE
    if "@" in cpu:
        raise ValueError(f"cannot derive a GPU tag from the digest reference {cpu!r}; set RECSYS_GPU_IMAGE")
    return f"{cpu}-gpu"


def serving_image(cpu_image: str | None = None) -> str:
    """The serving image (docker/Dockerfile.serving): the component image with the prediction
    server as its entry point, tag suffix -serving."""
    if os.environ.get("RECSYS_SERVING_IMAGE"):
        return os.environ["RECSYS_SERVING_IMAGE"]
    cpu = cpu_image or IMAGE
    if "@" in cpu:
        raise ValueError(f"cannot derive a serving tag from the digest reference {cpu!r}; set RECSYS_SERVING_IMAGE")
    return f"{cpu}-serving"


IMAGE = image()

if __name__ == "__main__":
    print(IMAGE)
