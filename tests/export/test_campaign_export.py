"""The export's campaign tables: complementary items and audiences written beside the recommendations, in the same
day's transaction, so a failure mid-write leaves no half table."""

import datetime as dt

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components import schema
from components.export import export, writers

from .conftest import GENERATED_AT, ITEMS, UNAVAILABLE
from .test_export import params, table

# baskets (cart and purchase): i00 goes with i01 in three sessions, with i02 in one
BASKETS = [["i00", "i01"], ["i00", "i01", "i02"], ["i01", "i00"], ["i04", "i05"]]


@pytest.fixture
def extracted_dir(tmp_path):
    rows, n = [], 0
    for b, basket in enumerate(BASKETS):
        for item in basket:
            when = GENERATED_AT - dt.timedelta(days=2, minutes=-n)
            rows.append(
                {"user_id": f"u{b}", "item_id": item, "event_type": "cart", "event_ts": when, "event_seq": n,
                 "session_id": f"s{b}"}
            )  # fmt: skip
            n += 1
    rows.append(
        {"user_id": "u1", "item_id": "i06", "event_type": "purchase", "event_ts": GENERATED_AT, "event_seq": n,
         "session_id": None}
    )  # fmt: skip
    directory = tmp_path / "extract"
    directory.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema.EVENTS), directory / export.EVENTS_FILE)
    items = [
        {"item_id": i, "category": f"c{ITEMS.index(i) % 3}", "brand": None, "price": None, "title": None,
         "available": i not in UNAVAILABLE}
        for i in ITEMS
    ]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(items, schema=schema.ITEMS), directory / "items.parquet")
    return directory


def campaign_params(**overrides):
    return params(campaign_outputs=("complementary_items", "audiences"), audience_size=4, **overrides)


def run(tmp_path, features_dir, extracted_dir, p):
    return export.run_export(
        features_dir,
        tmp_path / "new",
        tmp_path / "new",
        f"duckdb://{tmp_path / 'recs.duckdb'}",
        tmp_path / "out",
        p,
        extracted_dir=extracted_dir,
    )


def test_campaign_tables_are_written_beside_the_recommendations(tmp_path, features_dir, models, extracted_dir):
    manifest = run(tmp_path, features_dir, extracted_dir, campaign_params())
    complementary = table(tmp_path, "complementary_items").to_pylist()
    first = [r for r in complementary if r["item_id"] == "i00"]
    assert [(r["complementary_item_id"], r["source"]) for r in first[:2]] == [
        ("i01", "cooccurrence"),
        ("i02", "cooccurrence"),
    ]
    assert first[2]["source"] == "embedding" and len(first) == 3  # similar_k = 3
    assert not {r["complementary_item_id"] for r in complementary} & UNAVAILABLE
    assert {r["generated_at"] for r in complementary} == {GENERATED_AT}
    audiences = table(tmp_path, "audiences").to_pylist()
    # c1 sold once (i06 is i-index 6 -> c0); the default targets are the top-selling categories, here only c0
    assert {(r["target_type"], r["target_id"]) for r in audiences} == {("category", "c0")}
    assert sorted(r["rank"] for r in audiences) == [1, 2, 3, 4]
    assert manifest["rows"]["complementary_items"] == len(complementary)
    assert manifest["rows"]["audiences"] == 4 == pq.read_table(tmp_path / "out" / export.AUDIENCES_FILE).num_rows
    with duckdb.connect(str(tmp_path / "recs.duckdb"), read_only=True) as con:
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert {"latest_complementary_items", "latest_audiences"} <= views


def test_audiences_score_the_ranker_with_each_users_behaviour(
    tmp_path, features_dir, models, extracted_dir, monkeypatch
):
    from components.export import audiences
    from components.export.inputs import read_serving_inputs

    calls, score_targets = [], audiences.score_targets

    def recording(retriever, ranker, hist, targets, batch_size=1024, behaviour=None):
        calls.append((hist, behaviour))
        return score_targets(retriever, ranker, hist, targets, batch_size, behaviour)

    monkeypatch.setattr(audiences, "score_targets", recording)
    run(tmp_path, features_dir, extracted_dir, campaign_params())
    ((hist, behaviour),), inputs = calls, read_serving_inputs(features_dir)
    # the users' stored steps (one view a day) and the request at the lists' time, row for row with the histories
    assert np.array_equal(hist, inputs.hist_items) and behaviour is not None
    expected = inputs.behaviour(np.arange(len(inputs.user_ids)))
    assert np.array_equal(behaviour.types, expected.types) and np.array_equal(behaviour.gaps, expected.gaps)
    assert np.array_equal(behaviour.request_gap, expected.request_gap)
    assert (behaviour.types[hist >= schema.NUM_RESERVED] > 0).all()


def test_explicit_targets_and_no_campaign_outputs(tmp_path, features_dir, models, extracted_dir):
    run(tmp_path, features_dir, extracted_dir, campaign_params(audience_targets="item:i04,category:c2"))
    targets = {(r["target_type"], r["target_id"]) for r in table(tmp_path, "audiences").to_pylist()}
    assert targets == {("item", "i04"), ("category", "c2")}
    plain = tmp_path / "plain"
    plain.mkdir()
    manifest = run(plain, features_dir, None, params())
    assert "campaign_outputs" not in manifest and set(manifest["rows"]) == {"recommendations", "similar_items"}
    with pytest.raises(ValueError, match="unknown"):
        export.parse_campaign_outputs("audiences,outfits")
    with pytest.raises(ValueError, match="needs the extract"):
        run(plain, features_dir, None, params(campaign_outputs=("complementary_items",)))


def test_a_failure_mid_write_leaves_no_half_table(tmp_path, features_dir, models, extracted_dir, monkeypatch):
    run(tmp_path, features_dir, extracted_dir, campaign_params(run_id="run-1"))
    before = {name: table(tmp_path, name) for name in writers.TABLE_SCHEMAS}
    replace = writers._replace_partition

    def fail_at_audiences(con, name, day):
        if name == "audiences":
            raise OSError("disk full")
        replace(con, name, day)  # the other tables' partitions are already replaced inside the transaction

    monkeypatch.setattr(writers, "_replace_partition", fail_at_audiences)
    with pytest.raises(OSError, match="disk full"):
        run(tmp_path, features_dir, extracted_dir, campaign_params(run_id="run-2"))
    for name, rows in before.items():
        after = table(tmp_path, name)
        assert after.equals(rows), name  # the first run's rows, whole: nothing of run-2
        assert set(after.column("run_id").to_pylist()) == {"run-1"}
    assert export.MANIFEST_FILE in {p.name for p in (tmp_path / "out").iterdir()}  # run-1's artifact stays
    monkeypatch.setattr(writers, "_replace_partition", replace)
    run(tmp_path, features_dir, extracted_dir, campaign_params(run_id="run-2"))  # the retry replaces the day whole
    for name in writers.TABLE_SCHEMAS:
        assert set(table(tmp_path, name).column("run_id").to_pylist()) == {"run-2"}
