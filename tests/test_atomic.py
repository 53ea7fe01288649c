import pytest

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
