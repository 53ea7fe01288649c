"""Per-user logic: ordering, collapsing, splitting, seeded sampling and cvr labels."""

import numpy as np
import pytest

from components.features import sequences as S

from .reference_examples import sort_user_events


def _events(rows):
    """rows: (ts, seq, item, type index)."""
    out = np.empty(len(rows), S.EVENT_DTYPE)
    for i, row in enumerate(rows):
        out[i] = row
    return out


def test_a_block_sorts_a_user_by_time_then_event_seq_across_parts():
    parts = [_events([(5, 2, 30, 0), (1, 0, 10, 0)]), _events([(5, 1, 20, 0), (9, 0, 40, 0)])]
    block = S.block_events([(["u"], [len(p)], p) for p in parts])
    assert block.users == ["u"] and block.rows["item"].tolist() == [10, 20, 30, 40]


def test_collapse_merges_consecutive_repeats_and_keeps_their_event_types():
    view, cart, purchase = (S.schema.EVENT_TYPES.index(t) for t in ("view", "cart", "purchase"))
    events = _events([(1, 0, 7, view), (2, 1, 7, cart), (3, 2, 7, purchase), (4, 3, 8, view), (5, 4, 7, view)])
    steps = S.collapse_repeats(events)
    assert steps["item"].tolist() == [7, 8, 7]
    assert steps["ts"].tolist() == [1, 4, 5]
    assert steps["flags"][0] & S.PURCHASE and steps["flags"][0] & S.VIEW
    assert not steps["flags"][2] & S.PURCHASE


def test_leave_last_out_targets():
    positions = S.leave_last_out(np.zeros(6, S.STEP_DTYPE))
    assert positions["train"].tolist() == [1, 2, 3]
    assert positions["valid"].tolist() == [4] and positions["test"].tolist() == [5]
    assert S.leave_last_out(np.zeros(3, S.STEP_DTYPE))["train"].tolist() == []
    with pytest.raises(ValueError, match="at least 3"):
        S.leave_last_out(np.zeros(2, S.STEP_DTYPE))
    with pytest.raises(ValueError, match="unknown split"):
        S.split_fn("temporal_by_magic")


def test_time_split_windows_and_their_boundaries():
    steps = np.zeros(7, S.STEP_DTYPE)
    steps["ts"] = [5, 8, 10, 12, 20, 29, 30]  # cut 10, window 10: valid [10, 20), test [20, 30)
    positions = S.split_fn("time", cut_us=10, window_us=10)(steps)
    assert positions["train"].tolist() == [1]  # position 0 is history only
    assert positions["valid"].tolist() == [2, 3]  # a step at exactly the cut is valid, not train
    assert positions["test"].tolist() == [4, 5]  # one at cut + 2 windows is no target
    late = S.split_fn("time", cut_us=10, window_us=10)(steps[3:])  # a user with no step before the cut
    assert late["train"].tolist() == [] and late["valid"].tolist() == [] and late["test"].tolist() == [1, 2]
    with pytest.raises(ValueError, match="needs a cut"):
        S.split_fn("time")
    with pytest.raises(ValueError, match="window must be positive"):
        S.split_fn("time", cut_us=10, window_us=0)


def test_time_split_gives_cvr_positives_where_a_purchase_is_its_own_step():
    """Taobao's pattern: view A, view B, purchase A. Leave-last-out's one-step test holds no positive."""
    steps = np.zeros(5, S.STEP_DTYPE)
    steps["item"] = [9, 7, 8, 7, 6]
    steps["flags"] = [S.VIEW, S.VIEW, S.VIEW, S.PURCHASE, S.VIEW]
    steps["ts"] = [0, 10, 11, 12, 13]
    test = S.split_fn("time", cut_us=5, window_us=5)(steps)["test"]
    # positions 1-4; the purchase step (3) is no ranking row, as it holds no view
    assert S.cvr_labels(steps["item"], steps["flags"], test).tolist() == [1.0, 0.0, 1.0, 0.0]
    last = S.leave_last_out(steps)["test"]
    assert S.cvr_labels(steps["item"], steps["flags"], last).tolist() == [0.0]


def test_user_rng_is_stable_and_depends_on_seed_and_user():
    def draw(seed, user):
        return S.user_rng(seed, user).random(3).tolist()

    assert draw(0, "u1") == draw(0, "u1")
    assert draw(0, "u1") != draw(1, "u1") and draw(0, "u1") != draw(0, "u2")


def test_sampler_never_returns_the_excluded_item_and_follows_popularity():
    sampler = S.PopularitySampler(np.array([0, 0, 100, 10, 1, 0]))
    rng = np.random.default_rng(0)
    exclude = np.full(20000, 2)
    draws = sampler.sample_excluding(rng, exclude)
    assert not np.any(draws == exclude)
    counts = np.bincount(draws, minlength=6)
    assert counts[5] == 0 and counts[0] == counts[1] == 0  # no popularity, reserved
    assert 8 < counts[3] / counts[4] < 12  # 10:1 among the items left once item 2 is excluded


def test_sampler_falls_back_to_other_items_when_one_item_holds_all_popularity():
    sampler = S.PopularitySampler(np.array([0, 0, 0, 7, 0]))
    draws = sampler.sample_excluding(np.random.default_rng(0), np.full(50, 3))
    assert set(draws.tolist()) == {2, 4}


def test_sampler_needs_two_items():
    with pytest.raises(ValueError, match="at least 2 items"):
        S.PopularitySampler(np.array([0, 0, 5]))


def test_cvr_label_is_purchase_of_the_item_at_or_after_the_step_within_the_split():
    items = np.array([1, 2, 3, 2, 4])
    flags = np.array([S.VIEW, S.VIEW, S.VIEW, S.VIEW | S.PURCHASE, S.VIEW | S.PURCHASE], np.uint8)
    assert S.cvr_labels(items, flags, np.array([1, 2, 3])).tolist() == [1.0, 0.0, 1.0]
    # the purchase of item 4 at position 4 lies outside positions 1..3
    assert S.cvr_labels(items, flags, np.array([1, 2])).tolist() == [0.0, 0.0]


def _random_parts(seed=0, num_users=30, num_parts=4):
    """One block's events as batches would cut them: (user ids, events per user, events grouped by user) per part,
    users repeated across parts, events out of order, repeats and (ts, seq) ties."""
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(num_parts):
        users = [f"u{k:02d}" for k in rng.choice(num_users, size=rng.integers(1, num_users), replace=False)]
        counts = rng.integers(1, 8, size=len(users))
        events = np.empty(int(counts.sum()), S.EVENT_DTYPE)
        events["ts"] = rng.integers(0, 5, len(events))
        events["seq"] = rng.integers(0, 3, len(events))
        events["item"] = rng.integers(0, 4, len(events))
        events["type"] = rng.integers(0, len(S.schema.EVENT_TYPES), len(events))
        parts.append((users, counts, events))
    return parts


def _per_user(parts):
    by_user: dict = {}
    for users, counts, events in parts:
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for user, a, b in zip(users, bounds[:-1], bounds[1:]):
            by_user.setdefault(user, []).append(events[a:b])
    return by_user


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_block_sorts_and_collapses_each_user_as_the_per_user_functions_do(seed):
    parts = _random_parts(seed)
    block = S.block_events(parts)
    by_user = _per_user(parts)
    assert block.users == sorted(by_user)
    for user, events in block.members():
        assert events.tobytes() == sort_user_events(by_user[user]).tobytes()
    steps, counts = S.collapse_block(block, min_steps=3)
    expected = {u: S.collapse_repeats(sort_user_events(p)) for u, p in by_user.items()}
    kept = {u: s for u, s in expected.items() if len(s) >= 3}
    assert steps.users == sorted(kept)
    for user, rows in steps.members():
        assert rows.tobytes() == kept[user].tobytes()
    assert counts == {
        "users_read": len(expected),
        "users": len(kept),
        "events": sum(sum(map(len, by_user[u])) for u in kept),
        "steps": sum(map(len, kept.values())),
        "dropped_users/too_few_steps": len(expected) - len(kept),
        "dropped_events/user_too_few_steps": sum(sum(map(len, by_user[u])) for u in expected if u not in kept),
    }


def test_user_block_of_members_round_trips():
    members = [("b", np.zeros(2, S.STEP_DTYPE)), ("a", np.ones(3, S.STEP_DTYPE))]
    block = S.UserBlock.of(members)
    assert block.users == ["a", "b"] and block.sizes.tolist() == [3, 2] and len(block) == 2
    assert [(u, r.tobytes()) for u, r in block.members()] == [(u, r.tobytes()) for u, r in sorted(members)]
    empty = S.UserBlock.of([])
    assert empty.users == [] and empty.starts.tolist() == [0]
    steps, counts = S.collapse_block(S.block_events([]), min_steps=3)
    assert len(steps) == 0 and counts["users_read"] == 0
