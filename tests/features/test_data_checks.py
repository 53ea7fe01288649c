"""Data checks by injection: each fires on its injected fault and stays silent on a clean day."""

import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from components import registry, schema
from components.evaluation import gate
from components.features import data_checks as C

from .shop_data import random_shop, write_extract


def _extract(tmp_path, name, events=None, items=None, seed=1):
    shop_events, shop_items = random_shop(num_users=120, num_items=30, seed=seed)
    events = shop_events if events is None else events
    return write_extract(tmp_path / name, events, shop_items if items is None else items)


def _next_day(events: pa.Table) -> pa.Table:
    """A clean next day: the same shop less one user in twenty (the window moved, nothing broke)."""
    keep = [int(u[1:]) % 20 != 7 for u in events.column("user_id").to_pylist()]
    return events.filter(pa.array(keep))


def _blessed(tmp_path, stats) -> str:
    """A registry whose last blessed model carries `stats` in its metadata, as evaluation registers it."""
    models = tmp_path / "models"
    for part in ("retrieval", "ranking"):
        (models / part).mkdir(parents=True, exist_ok=True)
    root = tmp_path / "registry"
    registry.register(root, "v1", models / "retrieval", models / "ranking", {C.DATA_STATS: stats})
    registry.promote(root, "v1")
    return str(root)


def test_statistics_describe_the_extract(tmp_path):
    stats = C.extract_statistics(_extract(tmp_path, "a"))
    events, items = random_shop(num_users=120, num_items=30, seed=1)
    assert stats["rows"]["events"] == events.num_rows and stats["rows"]["items"] == items.num_rows
    assert stats["rows"]["users"] == len(set(events.column("user_id").to_pylist()))
    assert sum(stats["event_types"].values()) == events.num_rows
    assert sum(stats["categories"].values()) == events.num_rows
    assert sum(stats["history_length"].values()) == stats["rows"]["users"]
    assert stats["nulls"]["items"]["brand"] > 0 and stats["schema"]["events"]["event_ts"] == "timestamp[us, tz=UTC]"
    assert 0 <= stats["new_item_share"] < 1


def test_clean_day_is_silent_and_renamed_categories_drift(tmp_path):
    events, items = random_shop(num_users=120, num_items=30, seed=1)
    reference = C.extract_statistics(_extract(tmp_path, "day1"))
    clean = C.compare(C.extract_statistics(_extract(tmp_path, "day2", events=_next_day(events))), reference)
    assert clean["reference"] and clean["warnings"] == [], clean
    renamed = items.set_column(1, "category", pc.binary_join_element_wise("renamed-", items.column("category"), ""))
    broken = C.compare(C.extract_statistics(_extract(tmp_path, "day3", _next_day(events), renamed)), reference)
    assert broken["distributions"]["categories"]["drift"] and broken["distributions"]["categories"]["js"] > 0.9
    assert not broken["distributions"]["event_types"]["drift"]
    assert len(broken["warnings"]) == 1 and "categories" in broken["warnings"][0]


def test_lost_purchases_drift_in_the_event_type_mix(tmp_path):
    events, _ = random_shop(num_users=120, num_items=30, seed=1)
    reference = C.extract_statistics(_extract(tmp_path, "day1"))
    keep = pc.invert(pc.equal(events.column("event_type"), "purchase"))
    lost = C.compare(C.extract_statistics(_extract(tmp_path, "day2", events=events.filter(keep))), reference)
    assert lost["distributions"]["event_types"]["drift"]
    clean = C.compare(C.extract_statistics(_extract(tmp_path, "day3", events=_next_day(events))), reference)
    assert clean["warnings"] == []


def test_schema_change_and_empty_table_fail_naming_table_and_column(tmp_path):
    reference = C.extract_statistics(_extract(tmp_path, "day1"))
    blessed = _blessed(tmp_path, reference)
    events, items = random_shop(num_users=120, num_items=30, seed=1)
    C.run_checks(_extract(tmp_path, "clean", events=_next_day(events)), blessed)  # no error
    cheap = items.set_column(3, pa.field("price", pa.float32()), items.column("price").cast(pa.float32()))
    with pytest.raises(schema.SchemaError, match="'items' column 'price' is float, was double"):
        C.run_checks(_extract(tmp_path, "retyped", items=cheap), blessed)
    with pytest.raises(schema.SchemaError, match="'items' lost column 'title'"):
        C.run_checks(_extract(tmp_path, "dropped", items=items.drop(["title"])), blessed)
    with pytest.raises(schema.SchemaError, match="table 'events' is empty"):
        C.run_checks(_extract(tmp_path, "empty", events=events.slice(0, 0)), blessed)
    assert C.reference_statistics(blessed)[1] == "v1" and C.reference_statistics("")[0] is None


def test_the_gate_refuses_drift_only_with_gate_on_drift():
    args = ({"ndcg@20": 0.5}, {"popularity": {"ndcg@20": 0.1}, "item_to_item": {"ndcg@20": 0.2}}, None)
    warning = ["drift in categories: PSI 9.0"]
    quiet = gate.decide(*args, gate.GateConfig(), drift_warnings=warning)
    assert quiet.blessed and any(r.startswith("WARNING") and "categories" in r for r in quiet.reasons)
    strict = gate.decide(*args, gate.GateConfig(use_drift=True), drift_warnings=warning)
    assert not strict.blessed and any(r.startswith("FAIL (gate_on_drift)") for r in strict.reasons)
    assert gate.decide(*args, gate.GateConfig(use_drift=True), drift_warnings=[]).blessed
    json.dumps(strict.to_json())
