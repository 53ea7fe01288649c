"""Adds the sha256 of every pinned file to lock files, so that `pip install --require-hashes` installs exactly the
files that were tested (the image, CI and `make venv` do).

    python tools/hash_locks.py requirements.lock requirements-test.lock requirements-dev.lock ...

Why this and not pip-compile or uv: neither is installed here. pip itself resolves each exact pin against the package
index as it would install it on this platform (`pip install --dry-run --report`, no download of the files when the
index serves their metadata), and the report carries the file's sha256. The hashes are those of the files for this
platform (Linux x86_64, CPython 3.11: the image's and CI's); a lock is regenerated from its pins, hashed or not, and
its header comment lines are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

INDEX = os.environ.get("HASH_LOCKS_INDEX", "https://pypi.org/simple")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def read_lock(path: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """(the header comment lines, the (name, version) pins in file order); hash lines are dropped."""
    header, pins = [], []
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins.append((match.group(1), match.group(2)))
        elif line.startswith("#") and not pins:
            header.append(line)
    return header, pins


def index_hashes(pins: list[tuple[str, str]], python: str = sys.executable) -> dict[str, str]:
    """normalized name -> sha256 of the file pip would install for each pin here."""
    with tempfile.TemporaryDirectory() as scratch:
        requirements = Path(scratch, "pins.txt")
        requirements.write_text("".join(f"{name}=={version}\n" for name, version in pins))
        report = Path(scratch, "report.json")
        # The files of the public index only: a machine's own wheel folders or mirrors (find-links, extra indexes,
        # constraints in its pip config) would put their files' hashes in a lock that CI and the image check.
        # So no pip configuration is read; only its CA bundle, if it names one, is kept.
        cert = subprocess.run(
            [python, "-m", "pip", "config", "get", "global.cert"], capture_output=True, text=True, check=False
        ).stdout.strip()
        env = {name: value for name, value in os.environ.items() if not name.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed", "--no-deps"]
            + (["--cert", cert] if cert else [])
            + ["--index-url", INDEX, "--report", str(report), "-r", str(requirements)],
            check=True,
            env=env,
        )
        installs = json.loads(report.read_text())["install"]
    hashes = {}
    for item in installs:
        name = normalize(item["metadata"]["name"])
        if item["download_info"]["url"].startswith("file:"):
            raise SystemExit(f"{name}: pip chose a local file ({item['download_info']['url']}), not the index's")
        archive = item["download_info"].get("archive_info", {})
        digest = archive.get("hashes", {}).get("sha256") or archive.get("hash", "").partition("sha256=")[2]
        if not digest:
            raise SystemExit(f"{name}: the index gave no sha256 for {item['download_info'].get('url')}")
        hashes[name] = digest
    return hashes


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def write_lock(path: Path, header: list[str], pins: list[tuple[str, str]], hashes: dict[str, str]) -> None:
    lines = list(header)
    for name, version in pins:
        lines += [f"{name}=={version} \\", f"    --hash=sha256:{hashes[normalize(name)]}"]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("locks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for path in args.locks:
        header, pins = read_lock(path)
        hashes = index_hashes(pins)
        missing = [name for name, _ in pins if normalize(name) not in hashes]
        if missing:
            raise SystemExit(f"{path}: no file on the index for {missing}")
        write_lock(path, header, pins, hashes)
        print(f"{path}: {len(pins)} pins hashed")


if __name__ == "__main__":
    main()
