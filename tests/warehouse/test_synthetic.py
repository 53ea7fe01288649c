"""Properties of the synthetic shop: determinism, Zipf-like popularity, funnel, sequential signal, drift, impressions."""

import dataclasses
import itertools

import numpy as np
import pyarrow as pa
import pytest

from components import schema
from components.warehouse import synthetic

SMALL = dataclasses.replace(
    synthetic.PRESETS["tiny"],
    n_users=600,
    n_items=300,
    n_categories=12,
    n_brands=24,
    mean_views_per_user=20,
    users_per_chunk=250,
)


def generate(config, seed=0):
    world = synthetic.make_world(config, seed)
    chunks = list(synthetic.iter_chunks(world))
    events = pa.concat_tables([c.events for c in chunks]).to_pandas()
    impressions = pa.concat_tables([c.impressions for c in chunks]).to_pandas()
    return world, events, impressions


@pytest.fixture(scope="module")
def small():
    return generate(SMALL)


def views_in_order(events):
    return events[events.event_type == "view"].sort_values(["user_id", "event_ts", "event_seq"])


def test_same_seed_same_logs_other_seed_other_logs():
    _, a_events, a_imps = generate("tiny", seed=3)
    _, b_events, b_imps = generate("tiny", seed=3)
    _, c_events, _ = generate("tiny", seed=4)
    assert a_events.equals(b_events) and a_imps.equals(b_imps)
    assert not a_events["item_id"].equals(c_events["item_id"].reindex(a_events.index))


def test_tables_follow_the_contracts(small):
    world, events, impressions = small
    schema.validate_table(pa.Table.from_pandas(events, preserve_index=False), schema.EVENTS, "events")
    schema.validate_table(pa.Table.from_pandas(impressions, preserve_index=False), schema.IMPRESSIONS, "impressions")
    items = schema.validate_table(synthetic.items_table(world), schema.ITEMS, "items").to_pandas()
    assert set(events.item_id) <= set(items.item_id)
    assert 0 < (~items.available).sum() < len(items) * 0.2
    assert items.brand.isna().any() and items.brand.notna().mean() > 0.7


def test_tiny_preset_is_small_and_fast():
    import time

    started = time.perf_counter()
    world, events, impressions = generate("tiny")
    assert time.perf_counter() - started < 5  # < 1 s alone; generous for the shared 2-core machine
    assert events.user_id.nunique() == 150 and len(world.item_ids) == 80
    assert 1000 <= len(impressions) <= 10_000


def test_popularity_is_zipf_like(small):
    _, events, _ = small
    counts = np.sort(events[events.event_type == "view"].item_id.value_counts().to_numpy())[::-1]
    top_share = counts[: len(counts) // 10].sum() / counts.sum()
    ranks = np.arange(1, len(counts) + 1)
    head = slice(0, len(counts) // 2)
    slope = np.polyfit(np.log(ranks[head]), np.log(counts[head]), 1)[0]
    assert top_share > 0.3
    assert -2.0 < slope < -0.4


def test_funnel_runs_view_then_cart_then_purchase(small):
    _, events, _ = small
    counts = events.event_type.value_counts()
    assert counts["view"] > 3 * counts["cart"] > 3 * 0.5 * counts["purchase"] > 0
    ordered = events.sort_values(["user_id", "event_ts", "event_seq"]).reset_index(drop=True)
    previous = ordered.groupby("user_id").event_type.shift()
    previous_item = ordered.groupby("user_id").item_id.shift()
    carts = ordered.event_type == "cart"
    buys = ordered.event_type == "purchase"
    assert (previous[carts] == "view").all() and (previous_item[carts] == ordered.item_id[carts]).all()
    assert (previous[buys] == "cart").all() and (previous_item[buys] == ordered.item_id[buys]).all()
    assert ordered.groupby("user_id").event_seq.apply(lambda s: s.is_monotonic_increasing).all()


def test_next_item_depends_on_the_last_item_beyond_popularity(small):
    world, events, _ = small
    views = views_in_order(events)
    index = {item: i for i, item in enumerate(world.item_ids)}
    items = views.item_id.map(index).to_numpy()
    same_user = views.user_id.to_numpy()[1:] == views.user_id.to_numpy()[:-1]
    prev, nxt = items[:-1][same_user], items[1:][same_user]
    follows = (world.successors[prev] == nxt[:, None]).any(axis=1).mean()
    by_popularity = world.item_popularity[world.successors[prev]].sum(axis=1).mean()
    assert follows > 0.3
    assert follows > 3 * by_popularity


def test_purchase_more_likely_when_item_fits_current_interest(small):
    world, events, _ = small
    views = views_in_order(events)
    cat = dict(zip(world.item_ids, world.item_category))
    cats = views.item_id.map(cat).to_numpy()
    same_user = views.user_id.to_numpy()[1:] == views.user_id.to_numpy()[:-1]
    fits = np.r_[False, (cats[1:] == cats[:-1]) & same_user]
    bought = events[events.event_type == "purchase"][["user_id", "item_id", "session_id"]].drop_duplicates()
    key = views.set_index(["user_id", "item_id", "session_id"]).index
    was_bought = key.isin(pd_index(bought))
    assert was_bought[fits].mean() > 1.5 * was_bought[~fits].mean()


def pd_index(frame):
    return frame.set_index(list(frame.columns)).index


def test_interests_drift_between_sessions(small):
    world, events, _ = small
    views = views_in_order(events)
    views = views.assign(category=views.item_id.map(dict(zip(world.item_ids, world.item_category))))
    dominant = views.groupby(["user_id", "session_id"], sort=False).category.agg(lambda s: s.mode().iloc[0])
    users = dominant.index.get_level_values("user_id").to_numpy()
    same_user = users[1:] == users[:-1]
    changed = (dominant.to_numpy()[1:] != dominant.to_numpy()[:-1])[same_user].mean()
    assert 0.3 < changed < 0.95

    still = dataclasses.replace(SMALL, p_session_drift=0.0, p_taste_return=0.0, p_successor=0.0, p_explore=0.0)
    world_still, events_still, _ = generate(still)
    views_still = views_in_order(events_still)
    cats = views_still.item_id.map(dict(zip(world_still.item_ids, world_still.item_category)))
    organic = views_still.assign(category=cats)
    assert organic.groupby("user_id").category.nunique().mean() < views.groupby("user_id").category.nunique().mean()


def brute_force_marginals(weights, slate_size):
    m = len(weights)
    marginals = np.zeros((m, slate_size))
    for order in itertools.permutations(range(m), slate_size):
        prob, left = 1.0, weights.sum()
        for j in order:
            prob *= weights[j] / left
            left -= weights[j]
        for k, j in enumerate(order):
            marginals[j, k] += prob
    return marginals


def test_plackett_luce_marginals_are_exact():
    rng = np.random.default_rng(0)
    weights = rng.gamma(1.0, 1.0, (3, 6))
    weights[1, 2] = 0.0
    got = synthetic.plackett_luce_marginals(weights, 3)
    for row in range(3):
        np.testing.assert_allclose(got[row], brute_force_marginals(weights[row], 3), atol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1), 1.0)
    assert np.all(got[1, 2] == 0.0)


def test_plackett_luce_sampling_matches_its_marginals():
    rng = np.random.default_rng(1)
    weights = np.tile(np.array([[5.0, 3.0, 1.0, 1.0, 0.5, 0.0]]), (40_000, 1))
    picks = synthetic.sample_plackett_luce(weights, 3, rng)
    freq = np.stack([np.bincount(picks[:, k], minlength=6) / len(picks) for k in range(3)], axis=1)
    np.testing.assert_allclose(freq, synthetic.plackett_luce_marginals(weights[:1], 3)[0], atol=0.01)
    assert not np.any(picks == 5)


def test_marginals_need_enough_positive_weights():
    with pytest.raises(ValueError, match="at least 3"):
        synthetic.plackett_luce_marginals(np.array([[1.0, 1.0, 0.0, 0.0]]), 3)


def test_logged_impressions_are_consistent_with_the_logging_policy_and_events(small):
    world, events, impressions = small
    size = world.config.slate_size
    assert ((impressions.propensity > 0) & (impressions.propensity <= 1)).all()
    per_request = impressions.groupby("request_id")
    assert (per_request.size() == size).all()
    assert (per_request.item_id.nunique() == size).all()
    assert per_request.position.apply(lambda p: sorted(p) == list(range(size))).all()
    assert not impressions[impressions.purchased & ~impressions.clicked].size
    ctr = impressions.groupby("position").clicked.mean().to_numpy()
    assert ctr[0] > ctr[-1]
    shown = set(impressions.item_id)
    assert not shown & set(world.item_ids[~world.item_available])
    clicked = impressions[impressions.clicked][["request_id", "user_id", "item_id", "event_ts"]]
    viewed = events[events.event_type == "view"][["user_id", "item_id", "event_ts"]]
    pairs = clicked.merge(viewed, on=["user_id", "item_id"], suffixes=("_shown", "_viewed"))
    after = pairs[
        (pairs.event_ts_viewed > pairs.event_ts_shown)
        & (pairs.event_ts_viewed < pairs.event_ts_shown + np.timedelta64(1, "h"))
    ]
    assert after.request_id.nunique() == clicked.request_id.nunique()
    assert len(after.drop_duplicates(["request_id", "item_id"])) == len(clicked)


def test_logging_policy_propensities_equal_plackett_luce_marginals():
    world = synthetic.make_world("tiny", 0)
    users = np.arange(50)
    items, propensity = world.logging_policy(users, np.random.default_rng(5))
    pool, valid = world.candidates(users, np.random.default_rng(5))
    weights = np.exp(world.logging_scores(users, pool) / world.config.logging_temperature) * valid
    marginals = synthetic.plackett_luce_marginals(weights, world.config.slate_size)
    for b in range(len(users)):
        for k in range(world.config.slate_size):
            column = np.nonzero(pool[b] == items[b, k])[0][0]
            assert propensity[b, k] == pytest.approx(marginals[b, column, k])


def test_world_api_for_experiments():
    world = synthetic.make_world("tiny", 0)
    users = world.sample_requests(200, np.random.default_rng(0))
    assert users.shape == (200,) and users.min() >= 0 and users.max() < len(world.user_ids)
    same_item = np.tile(world.best_sellers[:1], (200, world.config.slate_size))
    click = world.click_probability(users, same_item)
    assert np.all((click > 0) & (click < 1)) and np.all(np.diff(click, axis=1) < 0)
    assert np.all(world.purchase_probability(users, same_item) < click)
    clicked, purchased = world.simulate(users, same_item, np.random.default_rng(1))
    assert not np.any(purchased & ~clicked)
    np.testing.assert_allclose(world.expected_clicks(users, same_item), click.sum(axis=1))

    before = world.state.category.copy()
    shifted = world.shift_interests(0.5, np.random.default_rng(2))
    moved = (shifted.state.category != before).mean()
    assert 0.2 < moved < 0.6 and np.array_equal(world.state.category, before)
