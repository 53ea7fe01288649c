import json
import os

import pytest

from components import atomic
from components.atomic import staged_directory, write_text


def test_a_failed_block_leaves_the_old_folder_and_no_staging(tmp_path):
    target = tmp_path / "artifact"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_directory(target) as staging:
            (staging / "new.txt").write_text("half")
            raise RuntimeError("killed mid-write")
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]
    assert [p.name for p in target.iterdir()] == ["old.txt"]


def test_a_finished_block_replaces_the_folder_whole(tmp_path):
    target = tmp_path / "artifact"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with staged_directory(target) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]


def test_write_text_replaces_and_is_readable(tmp_path):
    path = tmp_path / "sub" / "summary.json"
    write_text(path, "{}")
    write_text(path, '{"a": 1}')
    assert path.read_text() == '{"a": 1}'
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]


def test_gcs_fuse_paths_are_recognised():
    assert atomic.on_gcs_fuse("/gcs/bucket/root/task/model")
    assert not atomic.on_gcs_fuse("/tmp/gcs/bucket/model")
    assert not atomic.on_gcs_fuse("/gcs")


def _as_if_on_gcs_fuse(monkeypatch) -> list[str]:
    """Treats every path as GCS FUSE and records what is renamed, in order."""
    monkeypatch.setattr(atomic, "on_gcs_fuse", lambda path: True)
    renamed, replace = [], os.replace

    def recording_replace(source, destination):
        assert not os.path.isdir(source), f"GCS FUSE cannot rename the folder {source}"
        renamed.append(os.path.basename(destination))
        replace(source, destination)

    monkeypatch.setattr(atomic.os, "replace", recording_replace)
    return renamed


def test_on_gcs_fuse_files_move_one_by_one_with_the_marker_last(tmp_path, monkeypatch):
    renamed = _as_if_on_gcs_fuse(monkeypatch)
    target = tmp_path / "artifact"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with staged_directory(target, last="manifest.json") as staging:
        (staging / "manifest.json").write_text("{}")
        (staging / "b.parquet").write_text("b")
        (staging / "model" / "variables").mkdir(parents=True)
        (staging / "model" / "variables" / "v.index").write_text("v")
    assert renamed == ["b.parquet", "v.index", "manifest.json"]
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) == [
        "b.parquet",
        "manifest.json",
        "model/variables/v.index",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]


def test_on_gcs_fuse_a_missing_marker_is_an_error_that_keeps_the_old_folder(tmp_path, monkeypatch):
    _as_if_on_gcs_fuse(monkeypatch)
    target = tmp_path / "artifact"
    target.mkdir()
    (target / "manifest.json").write_text("old")
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        with staged_directory(target, last="manifest.json") as staging:
            (staging / "data.parquet").write_text("x")
    assert [p.name for p in target.iterdir()] == ["manifest.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]


def test_write_json_writes_undefined_figures_as_null(tmp_path):
    path = tmp_path / "ranker.json"
    atomic.write_json(path, {"auc": 0.7, "gauc": float("nan"), "per_seed": [float("inf"), 1.0], "name": "dien"})
    assert path.read_text().count("null") == 2 and "NaN" not in path.read_text()
    assert json.loads(path.read_text()) == {"auc": 0.7, "gauc": None, "per_seed": [None, 1.0], "name": "dien"}


KILLED_WRITER = """
import sys, time
from components.atomic import staged_directory
with staged_directory(sys.argv[1]) as staging:
    (staging / "half.txt").write_text("half")
    print("writing", flush=True)
    time.sleep(60)
"""


def _killed_writer(target, signum) -> int:
    import subprocess
    import sys

    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signum)
    return writer.wait(timeout=60)


def test_case08_a_terminated_writer_leaves_no_staging(tmp_path):
    import signal

    assert _killed_writer(tmp_path / "artifact", signal.SIGTERM) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


def test_case08_a_killed_writers_staging_goes_with_the_next_write(tmp_path):
    import signal

    _killed_writer(tmp_path / "artifact", signal.SIGKILL)
    assert [p.name.startswith(".artifact.staging-") for p in tmp_path.iterdir()] == [True]
    with staged_directory(tmp_path / "artifact-2") as staging:  # another target's staging is left alone
        (staging / "f").write_text("f")
    assert len(list(tmp_path.glob(".artifact.staging-*"))) == 1
    with staged_directory(tmp_path / "artifact") as staging:
        (staging / "f").write_text("f")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact", "artifact-2"]
