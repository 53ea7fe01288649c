"""Mutes in the impressions table: the synthetic shop logs them, extract carries them (and reads a table written
before the column as unknown), and the off-policy estimators compute LINE's score from the logged rows."""

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components import schema
from components.experiments import ope, rewards
from components.extract import stage as extract_stage
from components.features import data_checks
from components.warehouse import duckdb_warehouse, synthetic


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """The tiny shop's warehouse, the same tables with impressions written before `muted`, and both extracts."""
    root = tmp_path_factory.mktemp("mutes")
    duckdb_warehouse.build_warehouse("synthetic:tiny", root / "new.duckdb", seed=0)
    con = duckdb_warehouse.connect(root / "new.duckdb")
    tables = {t: con.execute(f"SELECT * FROM {t}").to_arrow_table() for t in ("events", "items", "impressions")}
    con.close()
    old = duckdb.connect(str(root / "old.duckdb"))
    old.execute("SET TimeZone = 'UTC'")
    for name, table in tables.items():
        old.register("frame", table.drop_columns(["muted"]) if name == "impressions" else table)
        old.execute(f"CREATE TABLE {name} AS SELECT * FROM frame")
        old.unregister("frame")
    old.close()
    out = {}
    for name in ("new", "old"):
        manifest = extract_stage.run(f"duckdb://{root / name}.duckdb", root / f"{name}-out")
        out[name] = (manifest, pq.read_table(root / f"{name}-out" / "impressions.parquet"), root / f"{name}-out")
    return tables, out


def item_index(table: pa.Table) -> dict[str, int]:
    return {item: i for i, item in enumerate(sorted(set(table.column("item_id").to_pylist())))}


def test_the_shop_logs_mutes_never_on_a_click(extracted):
    tables, out = extracted
    muted = np.asarray(tables["impressions"].column("muted").to_pylist())
    clicked = np.asarray(tables["impressions"].column("clicked").to_pylist())
    assert 0.01 < muted.mean() < 0.15 and not np.any(muted & clicked)
    assert out["new"][1].schema == schema.IMPRESSIONS
    assert out["new"][1].column("muted").null_count == 0 and out["new"][0]["dropped"]["impressions"] == {}


def test_mute_draws_leave_every_other_draw_of_the_log_unchanged(monkeypatch):
    world = synthetic.make_world("tiny", 3)
    first = next(iter(synthetic.iter_chunks(world)))
    monkeypatch.setattr(synthetic.ShopWorld, "simulate_mutes", lambda self, u, slates, clicked, rng: clicked & False)
    second = next(iter(synthetic.iter_chunks(synthetic.make_world("tiny", 3))))
    assert first.events.equals(second.events)
    assert first.impressions.drop_columns(["muted"]).equals(second.impressions.drop_columns(["muted"]))
    assert sum(first.impressions.column("muted").to_pylist()) > 0
    assert sum(second.impressions.column("muted").to_pylist()) == 0


def test_the_score_is_estimated_from_the_logged_rows(extracted):
    """On-policy (target = the logging policy's own marginals, every weight 1) IPS of the score is the logged mean
    score per slot: impression 0.5, click 1, mute 0, counted by hand from the table."""
    _, out = extracted
    table = out["new"][1]
    log, _, _ = ope.from_impressions(table, item_index(table))
    clicked = np.asarray(table.column("clicked").to_pylist())
    muted = np.asarray(table.column("muted").to_pylist())
    by_hand = (1.0 * clicked.sum() + 0.5 * (~clicked & ~muted).sum()) / len(clicked)
    scored = log.weighted(rewards.SCORE)
    assert ope.ips(scored, log.propensity) == pytest.approx(by_hand)
    assert ope.ips(log, log.propensity) == pytest.approx(clicked.mean())  # click-only stays the default estimand
    assert by_hand < 0.5 * (1 - clicked.mean()) + clicked.mean()  # mutes cost the score


def test_a_warehouse_written_before_mutes_reads_them_as_unknown(extracted):
    _, out = extracted
    (new_manifest, new, new_dir), (old_manifest, old, old_dir) = out["new"], out["old"]
    assert old.schema == schema.IMPRESSIONS and old.column("muted").null_count == old.num_rows
    assert old.drop_columns(["muted"]).equals(new.drop_columns(["muted"]))
    assert old_manifest["rows"] == new_manifest["rows"]
    log, _, _ = ope.from_impressions(old, item_index(old))
    assert log.mute is None
    with pytest.raises(ope.LogError, match="needs mutes"):
        log.weighted(rewards.SCORE)
    # a table built in memory without the column validates the same way
    assert schema.validate_table(old.drop_columns(["muted"]), schema.IMPRESSIONS, "impressions").equals(old)
    # the data checks of a run whose blessed reference predates the column see no schema change
    reference = data_checks.extract_statistics(old_dir)
    reference["schema"]["impressions"].pop("muted")
    data_checks.check_tables(data_checks.extract_statistics(new_dir), reference)
    reference["schema"]["impressions"].pop("purchased")
    with pytest.raises(schema.SchemaError, match="new column 'purchased'"):
        data_checks.check_tables(data_checks.extract_statistics(new_dir), reference)


def test_mutes_logged_for_some_rows_only_or_on_a_click_are_refused(extracted, tmp_path):
    tables, out = extracted
    table = out["new"][1]
    partial = table.set_column(
        table.schema.get_field_index("muted"), "muted", pa.array([None] + table.column("muted").to_pylist()[1:])
    )
    with pytest.raises(ope.LogError, match="no `muted` value"):
        ope.from_impressions(partial, item_index(table))
    # extract leaves out (and counts) a slot both clicked and muted, which the contract rules out
    impressions = tables["impressions"]
    clicked = impressions.column("clicked").to_pylist()
    broken = impressions.set_column(impressions.schema.get_field_index("muted"), "muted", pa.array(clicked))
    con = duckdb.connect(str(tmp_path / "broken.duckdb"))
    con.execute("SET TimeZone = 'UTC'")
    for name, frame in (("events", tables["events"]), ("items", tables["items"]), ("impressions", broken)):
        con.register("frame", frame)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM frame")
        con.unregister("frame")
    con.close()
    manifest = extract_stage.run(f"duckdb://{tmp_path / 'broken.duckdb'}", tmp_path / "out")
    assert manifest["dropped"]["impressions"] == {"clicked_and_muted": sum(clicked)}
    assert manifest["rows"]["impressions"] == len(clicked) - sum(clicked)
