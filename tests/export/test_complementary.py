"""Complementary items: co-occurrence scores against a hand-computed table, and the merge with the fallback."""

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components import schema
from components.export import complementary

DAY = dt.datetime(2025, 3, 1, 10, tzinfo=dt.UTC)

# (user, item, event type, hours after DAY, session): six baskets of cart and purchase events
#   {A,B,C} u1 s1, {A,B} u2 s2, {A,D} u3 day 1 (no session), {B} u3 day 2, {A} u4 s4 (its view of E is no basket
#   item), {C,D} u5 s5. Baskets holding each: A 4, B 3, C 2, D 2; N = 6.
EVENTS = [
    ("u1", "A", "cart", 0, "s1"),
    ("u1", "B", "purchase", 1, "s1"),
    ("u1", "C", "cart", 2, "s1"),
    ("u2", "A", "cart", 0, "s2"),
    ("u2", "B", "cart", 1, "s2"),
    ("u2", "B", "purchase", 2, "s2"),
    ("u3", "A", "cart", 0, None),
    ("u3", "D", "purchase", 1, None),
    ("u3", "B", "cart", 24, None),
    ("u4", "E", "view", 0, "s4"),
    ("u4", "A", "cart", 1, "s4"),
    ("u5", "C", "cart", 0, "s5"),
    ("u5", "D", "cart", 1, "s5"),
]
# together, expected = n_i n_j / N
HAND = {
    ("A", "B"): (2, 4 * 3 / 6),
    ("A", "C"): (1, 4 * 2 / 6),
    ("A", "D"): (1, 4 * 2 / 6),
    ("B", "C"): (1, 3 * 2 / 6),
    ("C", "D"): (1, 2 * 2 / 6),
}


@pytest.fixture
def events_path(tmp_path):
    rows = [
        {
            "user_id": u,
            "item_id": i,
            "event_type": t,
            "event_ts": DAY + dt.timedelta(hours=h),
            "event_seq": n,
            "session_id": s,
        }
        for n, (u, i, t, h, s) in enumerate(EVENTS)
    ]
    path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema.EVENTS), path)
    return path


def scores(events_path, method, **kwargs):
    params = complementary.CooccurrenceParams(method=method, **kwargs)
    table = complementary.cooccurrence(events_path, list("ABCDE"), params)
    return {(r["item_id"], r["other_id"]): r for r in table.to_pylist()}


@pytest.mark.parametrize(
    "method, formula",
    [
        ("count", lambda c, e: c),
        ("lift", lambda c, e: c / e),
        ("shrunk_lift", lambda c, e: c / (e + 1.0)),
    ],
)
def test_scores_match_the_hand_computed_table(events_path, method, formula):
    got = scores(events_path, method)
    expected = {}
    for (a, b), (together, exp) in HAND.items():
        expected[(a, b)] = expected[(b, a)] = (together, formula(together, exp))
    assert set(got) == set(expected)
    for pair, (together, value) in expected.items():
        assert got[pair]["together"] == together
        assert got[pair]["score"] == pytest.approx(value)
    assert got[("A", "B")]["item_baskets"] == 4 and got[("A", "B")]["other_baskets"] == 3


def test_ranks_follow_the_score_with_ties_by_id(events_path):
    def order(method, item):
        got = sorted((r["rank"], other) for (i, other), r in scores(events_path, method).items() if i == item)
        return [other for _, other in got]

    assert order("count", "C") == ["A", "B", "D"]  # all 1: by id
    assert order("lift", "C") == ["D", "B", "A"]  # 1.5, 1, 0.75
    assert order("shrunk_lift", "A") == ["B", "C", "D"]


def test_day_baskets_big_baskets_and_unavailable_partners(events_path):
    by_day = scores(events_path, "count", basket="day")
    assert by_day[("A", "B")]["together"] == 2  # the same baskets: every session here lies within one day
    small = scores(events_path, "count", max_basket_items=2)
    assert ("A", "C") not in small and small[("A", "B")]["together"] == 1  # {A,B,C} left out
    params = complementary.CooccurrenceParams(method="count")
    table = complementary.cooccurrence(events_path, ["A", "C", "D"], params)  # B unavailable
    assert "B" not in set(table.column("other_id").to_pylist())
    assert "B" in set(table.column("item_id").to_pylist())  # an unavailable item still gets its partners


def test_window_limits_the_events(events_path):
    params = complementary.CooccurrenceParams(method="count")
    table = complementary.cooccurrence(events_path, list("ABCD"), params, start=DAY + dt.timedelta(hours=12))
    assert table.num_rows == 0  # only u3's one-item day-2 basket is left


def test_lists_keep_supported_partners_and_fill_the_rest_from_the_fallback(events_path):
    item_ids = np.array(["", "", "A", "B", "C", "D", "E"], dtype=object)
    pairs = complementary.cooccurrence(events_path, list("ABCDE"), complementary.CooccurrenceParams(k=2))

    def fallback(rows):
        # every item's "next items": E then A then B (indices 6, 2, 3), scores 0.9, 0.8, 0.7
        return np.tile([6, 2, 3], (len(rows), 1)), np.tile(np.float32([0.9, 0.8, 0.7]), (len(rows), 1))

    lists = complementary.complementary_lists(pairs, item_ids, 3, min_support=3, fallback=fallback)
    # A (4 baskets) keeps B, C (k=2 in SQL) and gets E from the fallback; C and D (2 baskets < 3) get only fallback
    assert lists.items[2].tolist() == [3, 4, 6] and lists.from_embedding[2].tolist() == [False, False, True]
    assert lists.items[4].tolist() == [6, 2, 3] and lists.from_embedding[4].all()
    assert lists.items[:2].tolist() == [[0, 0, 0], [0, 0, 0]]
    table = complementary.complementary_table(lists, item_ids, model_version="v", run_id="r", generated_at=DAY)
    assert table.schema.equals(schema.COMPLEMENTARY_ITEMS)
    rows = [r for r in table.to_pylist() if r["item_id"] == "A"]
    assert [(r["rank"], r["complementary_item_id"], r["source"]) for r in rows] == [
        (1, "B", "cooccurrence"),
        (2, "C", "cooccurrence"),
        (3, "E", "embedding"),
    ]
    assert not {r["item_id"] for r in table.to_pylist()} & {""}
