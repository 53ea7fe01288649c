"""The A/B SQL on a hand-made warehouse: every figure recomputed by hand."""

import math
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from components import ab, schema
from components.experiments import ab_analysis, stats
from components.warehouse.duckdb_warehouse import WarehouseWriter


def impressions(rows):
    ts = datetime(2026, 1, 1, tzinfo=timezone.utc)
    cols = list(zip(*rows))
    return pa.table(
        {
            "request_id": cols[0],
            "user_id": cols[1],
            "item_id": ["i1"] * len(rows),
            "position": list(range(len(rows))),
            "propensity": [0.5] * len(rows),
            "policy": ["p"] * len(rows),
            "event_ts": [ts] * len(rows),
            "clicked": cols[2],
            "purchased": cols[3],
        },
        schema=pa.schema([f for f in schema.IMPRESSIONS if f.name != "muted"]),  # written before mutes were logged
    )


@pytest.fixture()
def warehouse(tmp_path):
    # control: users a, b; 4 impressions, 2 clicks, 1 purchase.  treatment: user c; 4 impressions, 3 clicks, 0 purchases.
    rows = [
        ("r1", "a", True, True),
        ("r1", "a", False, False),
        ("r2", "b", True, False),
        ("r2", "b", False, False),
        ("r3", "c", True, False),
        ("r3", "c", True, False),
        ("r4", "c", True, False),
        ("r4", "c", False, False),
    ]
    path = tmp_path / "shop.duckdb"
    with WarehouseWriter(path, ("events", "items", "impressions")) as writer:
        writer.append("impressions", impressions(rows))
        writer.commit()
    return path


ASSIGNED = pa.table({"user_id": ["a", "b", "c"], "variant": ["control", "control", "treatment"]})


def test_outcomes_by_hand(warehouse):
    out = ab_analysis.analyse(warehouse, treatment_ratio=0.5, assignments=ASSIGNED)
    control, treatment = out["control"], out["treatment"]
    assert (control["users"], control["requests"], control["impressions"], control["clicks"], control["purchases"]) == (
        2,
        2,
        4,
        2,
        1,
    )
    assert (treatment["users"], treatment["impressions"], treatment["clicks"], treatment["purchases"]) == (1, 4, 3, 0)
    assert control["ctr"] == pytest.approx(0.5) and treatment["ctr"] == pytest.approx(0.75)
    assert control["cvr"] == pytest.approx(0.5) and treatment["cvr"] == pytest.approx(0.0)
    z95 = 1.959963985
    assert control["ctr_low"] == pytest.approx(0.5 - z95 * math.sqrt(0.25 / 4), abs=1e-8)
    pooled = 5 / 8
    z = 0.25 / math.sqrt(pooled * (1 - pooled) * (1 / 4 + 1 / 4))
    assert out["ctr_z"] == pytest.approx(z)
    assert out["ctr_p"] == pytest.approx(2 * stats.normal_sf(z))
    assert out["chi2"] == pytest.approx((2 - 1.5) ** 2 / 1.5 * 2)  # users 2 vs 1 against 50/50
    assert out["chi2_p"] == pytest.approx(stats.chi2_sf(1 / 3, 1))


def test_default_assignment_buckets_users_like_the_export(warehouse):
    out = ab_analysis.analyse(warehouse, experiment="exp-x", treatment_ratio=0.5)
    assert list(ab.assign_many(["a", "b", "c"], "exp-x", 0.5)) == ["treatment", "control", "control"]
    assert out["treatment"]["users"] == 1 and out["treatment"]["impressions"] == 2  # user a
    assert out["control"]["users"] == 2 and out["control"]["impressions"] == 6


def test_one_arm_only_raises(warehouse):
    only_control = pa.table({"user_id": ["a", "b", "c"], "variant": ["control"] * 3})
    with pytest.raises(ValueError, match="both arms"):
        ab_analysis.analyse(warehouse, assignments=only_control)


def test_impression_count(warehouse, tmp_path):
    assert ab_analysis.impression_count(warehouse) == 8
    bare = tmp_path / "bare.duckdb"
    with WarehouseWriter(bare, ("events", "items")) as writer:
        writer.commit()
    assert ab_analysis.impression_count(bare) == 0


def test_assignments_from_a_recommendations_table_count_each_user_once(warehouse):
    """The export writes one row per user and rank; the SQL must not multiply impressions by the list length."""
    import duckdb

    con = duckdb.connect(str(warehouse))
    con.execute(
        "CREATE TABLE recommendations AS SELECT * FROM (VALUES ('a', 1, 'control'), ('a', 2, 'control'), "
        "('b', 1, 'control'), ('c', 1, 'treatment'), ('c', 2, 'treatment'), ('c', 3, 'treatment')) "
        "AS t(user_id, rank, variant)"
    )
    con.close()
    out = ab_analysis.analyse(warehouse, assignments_table="recommendations")
    assert out["control"]["impressions"] == 4 and out["treatment"]["impressions"] == 4


def test_missing_impressions_table_raises(tmp_path):
    bare = tmp_path / "bare.duckdb"
    with WarehouseWriter(bare, ("events", "items")) as writer:
        writer.commit()
    with pytest.raises(ValueError, match="no impressions table"):
        ab_analysis.analyse(bare)
