"""The Makefile hands each variable to its command as one word, and its status is the command's (case 11)."""

import shlex
import subprocess
import sys
from pathlib import Path

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"


def make(cwd: Path, *arguments: str) -> subprocess.CompletedProcess:
    """make with the test's own Python as the venv's (-o venv: the venv is there already)."""
    command = ["make", "--no-print-directory", "-f", str(MAKEFILE), "-o", "venv", f"PY={sys.executable}", *arguments]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def words_of(dry_run: subprocess.CompletedProcess) -> list[str]:
    assert dry_run.returncode == 0, dry_run.stderr
    return shlex.split(dry_run.stdout.replace("\\\n", " "))


def test_case11_make_variables_are_quoted(tmp_path):
    words = words_of(
        make(
            tmp_path,
            "-n",
            "pipeline-run",
            "OUTPUT=/tmp/a b",
            "SOURCE=amazon:/data/it's.csv",
            "PARAMS=top_k=5 gate_on_ope=true",
        )
    )
    assert words[words.index("--output") + 1] == "/tmp/a b"
    assert words[words.index("--source") + 1] == "amazon:/data/it's.csv"
    assert words[words.index("--param") :] == ["--param", "top_k=5", "--param", "gate_on_ope=true"]


def test_case11_injected_command_runs_nothing_and_make_fails_with_the_program(tmp_path):
    injected = "x; echo INJECTED > injected.txt; #"
    result = make(tmp_path, "pipeline-run", "TARGET=kfp", f"WAREHOUSE_URI={injected}", "DESTINATION=y")
    assert not (tmp_path / "injected.txt").exists()
    direct = subprocess.run(
        [sys.executable, "-m", "pipelines.run", "--target", "kfp", "--warehouse-uri", injected, "--destination", "y"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert direct.returncode != 0 and result.returncode != 0
    assert direct.stderr.strip().splitlines()[-1] in result.stderr
    assert f"pipeline-run] Error {direct.returncode}" in result.stderr
