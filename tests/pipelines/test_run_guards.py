"""What a local run refuses before it starts: another source's warehouse in OUTPUT (case 9), a busy OUTPUT (case 10)."""

import json
import os
import subprocess
import sys

import pytest

from components.warehouse import duckdb_warehouse as dw
from pipelines import run

AMAZON = (
    "user_id,item_id,timestamp,cate_id,attr_ids\n1,10,1400000100,5,90 1 5\n1,11,1400000100,7,1 7\n"
    "2,11,1400000200,7,1 7\n"
)


def test_case09_warehouse_of_another_source_is_refused_and_a_changed_file_reloaded(tmp_path):
    warehouse = tmp_path / "out" / "warehouse.duckdb"
    assert dw.ensure_warehouse("synthetic:tiny", warehouse)["events"] > 0
    record = json.loads(dw.record_path(warehouse).read_text())
    assert record == {"source": "synthetic:tiny", "seed": 0}
    assert dw.ensure_warehouse("synthetic:tiny", warehouse) is None  # the same source: reused
    csv = tmp_path / "beauty.csv"
    csv.write_text(AMAZON)
    with pytest.raises(
        dw.SourceMismatch, match=f"holds the warehouse of synthetic:tiny \\(seed 0\\), not amazon:{csv}"
    ):
        dw.ensure_warehouse(f"amazon:{csv}", warehouse)
    with pytest.raises(dw.SourceMismatch, match="not synthetic:tiny \\(seed 1\\)"):
        dw.ensure_warehouse("synthetic:tiny", warehouse, seed=1)
    with pytest.raises(dw.SourceMismatch, match="not synthetic:default"):  # through the run's entry, before any task
        run.run_local(warehouse.parent, "synthetic:default")
    assert json.loads(dw.record_path(warehouse).read_text()) == record  # left as it was

    other = tmp_path / "other" / "warehouse.duckdb"
    assert dw.ensure_warehouse(f"amazon:{csv}", other) == {"events": 3, "items": 2}
    csv.write_text(AMAZON + "3,12,1400000300,7,1 7\n")
    os.utime(csv, ns=(1, 1))
    assert dw.ensure_warehouse(f"amazon:{csv}", other) == {"events": 4, "items": 3}  # the file changed: reloaded
    assert json.loads(dw.record_path(other).read_text())["size"] == csv.stat().st_size


def test_case09_warehouse_without_a_record_is_refused(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    dw.build_warehouse("synthetic:tiny", warehouse)
    with pytest.raises(dw.SourceMismatch, match="no readable record of its source"):
        dw.ensure_warehouse("synthetic:tiny", warehouse)


def test_case10_second_run_into_a_busy_output_is_refused(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, pathlib; from pipelines.run import output_lock\n"
            "with output_lock(pathlib.Path(sys.argv[1])):\n print('locked', flush=True); sys.stdin.read()",
            str(tmp_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(run.RunRefused, match=f"{tmp_path} is in use by another run \\(pid {holder.pid} since "):
            run.run_local(tmp_path, "synthetic:tiny")
        assert not (tmp_path / "warehouse.duckdb").exists()
    finally:
        holder.communicate("", timeout=60)
    with run.output_lock(tmp_path):  # released when its holder ended
        pass
