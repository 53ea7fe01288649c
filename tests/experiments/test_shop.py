"""OPE and the bandit on the synthetic shop's tiny world, against the truth the world knows."""

import copy
import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from components import schema
from components.experiments import bench, histories, ope, shop, studies
from components.experiments.simulation import BanditConfig
from components.warehouse import synthetic
from components.warehouse.build import build_warehouse
from components.warehouse.duckdb_warehouse import WarehouseWriter


@pytest.fixture(scope="module")
def tiny():
    world, events, impressions = shop.replay("tiny", 0)
    return world, shop.ObservedHistory.from_events(events, world), impressions


def test_observed_features_use_the_log(tiny):
    world, history, _ = tiny
    assert history.item_views.sum() > 0
    np.testing.assert_allclose(history.user_category_share.sum(axis=1)[history.last_item >= 0], 1.0)
    feats = history.features(np.array([0, 1]), np.array([[0, 1, 2], [3, 4, 5]]))
    assert feats.shape == (2, 3, len(shop.FEATURE_NAMES)) and np.isfinite(feats).all()


def test_truth_equals_running_the_policy_online(tiny):
    world, history, _ = tiny
    rng = np.random.default_rng(0)
    ranker = shop.LinearRanker.train(history, shop.log_requests(world, 2000, rng))
    logged = shop.log_requests(world, 3000, rng)
    ranked = ranker.rank(logged.users, logged.pool)
    truth = shop.true_value(logged.world, logged.users, ope.ranking_policy(ranked, 4, 0.3))
    clicks = [
        logged.world.simulate(logged.users, ope.sample_ranking_policy(ranked, 4, 0.3, rng), rng)[0].mean()
        for _ in range(40)
    ]
    assert np.mean(clicks) == pytest.approx(truth, abs=4 * np.std(clicks) / np.sqrt(40) + 1e-3)


def test_logged_propensities_match_the_logging_frequencies(tiny):
    """The propensities written with each slot are the logger's marginals: their mean inverse weights one."""
    world, _, _ = tiny
    logged = shop.log_requests(world, 3000, np.random.default_rng(1))
    assert np.all((logged.log.propensity > 0) & (logged.log.propensity <= 1))
    # E_mu[pi/mu] = 1 for any target with support inside the pool: use the uniform-over-pool policy
    counts = (logged.pool >= 0).sum(axis=1)
    uniform = 1.0 / counts[logged.log.request]
    assert np.mean(uniform / logged.log.propensity) == pytest.approx(1.0, abs=0.05)


def test_estimators_against_truth_and_dr_beats_ips(tiny):
    """Importance weights are heavy-tailed (mean w^2 ~ 25 here), so RMSE needs ~20 logs to rank the estimators."""
    world, history, _ = tiny
    result, _ = studies.ope_study(world, history, repeats=20, requests_per_log=3000, epsilon=0.1)
    truth = result["truth"]
    for name in ("ips", "snips", "dr", "mrdr"):
        assert abs(result[name]["bias"]) < 0.1 * truth, (name, result[name])
    assert result["dr"]["rmse"] < result["ips"]["rmse"]
    assert result["mrdr"]["rmse"] < result["ips"]["rmse"]


def test_thompson_beats_greedy_in_the_shop_after_a_shift(tiny):
    world, history, _ = tiny
    ranker = shop.LinearRanker.train(history, shop.log_requests(world, 2000, np.random.default_rng(2)))
    run = studies.bandit_study(world, history, ranker, rounds=90, batch=64, shift_fraction=0.8, seed=3)
    after = {name: r[run.shift_round :].sum() for name, r in run.rewards.items()}
    assert after["thompson"] > after["greedy"] > after["random"]


def test_bench_on_the_tiny_shop(tmp_path):
    path = tmp_path / "shop.duckdb"
    build_warehouse("synthetic:tiny", path, 0)
    out = bench.experiments_bench(
        str(path),
        data="tiny",
        min_repeats=3,
        requests_per_log=1500,
        bandit_rounds=30,
        bandit_batch=32,
        work_dir=str(tmp_path / "report"),
    )
    assert set(out) == {"ab", "ope", "bandit"}
    assert 0.0 <= out["ab"]["chi2_p"] <= 1.0
    for name in ope.ESTIMATORS:
        assert {"estimate", "bias", "rmse"} <= set(out["ope"][name])
    policies = ("bayesian_fm", "thompson", "linucb", "greedy", "random")
    for key in ("cumulative_reward", "after_shift_reward", "cumulative_score", "after_shift_score"):
        assert all(len(out["bandit"][p]["per_seed"][key]) == 3 for p in policies)
        assert all(out["bandit"][p][key] > 0 and out["bandit"][p]["spread"][key] >= 0 for p in policies)
    assert all(out["bandit"][p]["cumulative_score"] > out["bandit"][p]["cumulative_reward"] for p in policies)
    assert len(out["bandit"]["paired"]["bayesian_fm_minus_linucb"]["after_shift_score"]) == 3
    assert out["bandit"]["setup"]["seeds"] == [0, 1, 2]
    assert (tmp_path / "report" / "bandit_curves.png").stat().st_size > 1000
    assert (tmp_path / "report" / "ope_estimates.png").stat().st_size > 1000
    assert not (tmp_path / "report" / "experiments.html").exists()  # the evaluation report shows both


def test_bench_skips_data_without_impressions(tmp_path):
    path = tmp_path / "public.duckdb"
    with WarehouseWriter(path, ("events", "items")) as writer:
        writer.commit()
    assert bench.experiments_bench(str(path), data="whatever.csv", data_format="amazon") == {}


def test_bench_refuses_a_warehouse_from_another_preset(tmp_path):
    path = tmp_path / "shop.duckdb"
    build_warehouse("synthetic:tiny", path, 1)
    with pytest.raises(ValueError, match="preset and seed that built the warehouse"):
        bench.experiments_bench(str(path), data="tiny", min_repeats=2, requests_per_log=500, bandit_rounds=5)


class RankerDouble:
    """components.ranking's Ranker API: prefers candidates whose vocabulary index equals the last history item + 1."""

    def __init__(self, num_items):
        self.item_category = np.arange(num_items) % 3 + 2

    def score(self, hist_items, hist_cats, cand_items, cand_cats, behaviour):
        assert hist_items.shape == hist_cats.shape == behaviour.types.shape and cand_items.shape == cand_cats.shape
        assert np.array_equal(cand_cats, self.item_category[cand_items])
        assert np.array_equal(behaviour.types > 0, hist_items > 0)  # the replayed events' types reach the ranker
        return -np.abs(cand_items - (hist_items[:, -1:] + 1)).astype(np.float32)


def test_logged_events_encoded_by_chunk_decode_to_the_shops_table():
    """replay encodes the shop's events one chunk of users at a time: the concatenated codes name the same users,
    items, types and whole seconds as the whole table, row for row (and a foreign id is refused)."""
    world = synthetic.make_world(dataclasses.replace(synthetic.preset("tiny"), users_per_chunk=40), 0)
    chunks = [chunk.events for chunk in synthetic.iter_chunks(world)]
    assert len(chunks) == 4
    events = shop.LoggedEvents.concat([shop.LoggedEvents.encode(chunk, world) for chunk in chunks])
    table = pa.concat_tables(chunks)
    assert world.user_ids[events.user].tolist() == table.column("user_id").to_pylist()
    assert world.item_ids[events.item].tolist() == table.column("item_id").to_pylist()
    assert [synthetic.EVENT_NAMES[k] for k in events.kind] == table.column("event_type").to_pylist()
    stamps = table.column("event_ts").to_pandas()
    assert events.seconds.tolist() == [int(t.timestamp()) for t in stamps]
    foreign = table.slice(0, 3).set_column(0, "user_id", pa.array(["nobody"] * 3))
    with pytest.raises(ValueError, match="not in this world"):
        shop.LoggedEvents.encode(foreign, world)


def test_funnel_histories_from_codes_equal_the_string_frames():
    """FunnelRanker.build groups the integer codes; the histories and behaviour it gives each world user are the
    ones user_histories and user_behaviour build from the events' string frame (the bandit stage's path)."""
    table = pa.concat_tables(chunk.events for chunk in synthetic.iter_chunks(synthetic.make_world("tiny", 0)))
    world, events, _ = shop.replay("tiny", 0)
    vocab = list(world.item_ids)[::-1][:-5]  # another order, and some world items outside it (OOV)
    funnel = shop.FunnelRanker.build(RankerDouble(len(vocab) + 2), world, events, vocab, 6)
    frame = table.to_pandas()
    index = {item: i + schema.NUM_RESERVED for i, item in enumerate(vocab)}
    rows, items, cats = histories.user_histories(frame, index, funnel.ranker.item_category, 6)
    steps = histories.user_behaviour(frame, index, rows, 6)
    row = np.array([rows[user] for user in world.user_ids])  # every tiny user has events
    assert np.array_equal(funnel.hist_items, items[row]) and np.array_equal(funnel.hist_cats, cats[row])
    assert np.array_equal(funnel.behaviour.types, steps.types[row])
    assert np.array_equal(funnel.behaviour.gaps, steps.gaps[row])
    assert np.array_equal(funnel.behaviour.request_gap, steps.request_gap[row])
    assert (funnel.hist_items == schema.OOV_INDEX).any()


def test_funnel_ranker_scores_pools_from_user_histories(tiny):
    world, history, _ = tiny
    events = shop.replay("tiny", 0)[1]
    vocab = list(world.item_ids[::-1])  # any order: the mapping must go through the ids
    funnel = shop.FunnelRanker.build(RankerDouble(len(vocab) + 2), world, events, vocab, max_len=5)
    users = np.array([0, 1])
    last = funnel.hist_items[users, -1]
    assert np.all(last >= 2)  # every tiny-shop user has a history
    target = last + 1
    wanted = np.array([len(vocab) - 1 - (t - 2) for t in target])  # world index of vocabulary index t
    pool = np.stack([np.array([0, wanted[0], -1]), np.array([wanted[1], 1, 2])])
    ranked = funnel.rank(users, pool)
    assert ranked[0, 0] == wanted[0] and ranked[0, -1] == -1
    assert ranked[1, 0] == wanted[1]


def test_funnel_ranker_cache_returns_the_models_scores(tiny):
    world, _, _ = tiny
    events = shop.replay("tiny", 0)[1]
    vocab = list(world.item_ids)
    double = RankerDouble(len(vocab) + 2)
    funnel = shop.FunnelRanker.build(double, world, events, vocab, max_len=4)
    rng = np.random.default_rng(4)
    for _ in range(3):  # later calls mix cached and new pairs
        users = rng.integers(0, len(world.user_ids), 50)
        items = rng.integers(0, len(vocab), (50, 6))
        cand = funnel.vocab_index[items]
        hist, cats, steps = funnel.hist_items[users], funnel.hist_cats[users], funnel.behaviour.take(users)
        direct = double.score(hist, cats, cand, double.item_category[cand], steps)
        np.testing.assert_array_equal(funnel.scores(users, items), direct)


def test_category_share_of_the_pool_by_hand():
    categories = np.array([[0, 0, 1, 2], [3, 3, 3, 3]])
    valid = np.array([[True, True, True, False], [True, True, False, False]])
    np.testing.assert_allclose(
        shop.category_share(categories, valid), [[2 / 3, 2 / 3, 1 / 3, 0.0], [1.0, 1.0, 1.0, 1.0]]
    )


def test_the_bandit_shops_cross_is_a_pure_segment_by_style_interaction(tiny):
    world, _, _ = tiny
    styled = shop.with_style_affinity(world, 0.7, np.random.default_rng(5))
    affinity = styled.style_affinity
    assert affinity.shape == (shop.NUM_SEGMENTS, shop.NUM_STYLES)
    np.testing.assert_allclose(affinity.mean(axis=0), 0.0, atol=1e-12)  # no style better on average
    np.testing.assert_allclose(affinity.mean(axis=1), 0.0, atol=1e-12)  # no segment clicks more
    assert np.sqrt(np.mean(affinity**2)) == pytest.approx(0.7)
    assert np.linalg.matrix_rank(affinity) == 2
    users, items = np.array([0, 1, 2]), np.array([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])
    by_hand = world.fit(users, items) + affinity[styled.user_segment[users][:, None], styled.item_style[items]]
    np.testing.assert_allclose(styled.fit(users, items), by_hand)
    np.testing.assert_allclose(
        styled.click_probability(users, items),
        world.examination[:4] * synthetic.sigmoid(synthetic.CLICK_BIAS + by_hand),
    )
    # the state is the styled shop's own, and a shift keeps the cross
    styled.state.category[0] = (world.state.category[0] + 1) % world.config.n_categories
    assert styled.state.category[0] != world.state.category[0]
    shifted = styled.shift_interests(0.5, np.random.default_rng(0))
    assert isinstance(shifted, shop.StyledShop) and np.array_equal(shifted.style_affinity, affinity)
    assert np.array_equal(shifted.item_style, styled.item_style)
    with pytest.raises(ValueError, match=">= 0"):
        shop.with_style_affinity(world, -1.0, np.random.default_rng(0))


def test_styled_proposals_give_every_learner_the_style_and_the_fm_segment_and_style(tiny):
    world, history, _ = tiny
    ranker = shop.LinearRanker.train(history, shop.log_requests(world, 500, np.random.default_rng(2)))
    styled = shop.with_style_affinity(world, 0.5, np.random.default_rng(5))
    users = np.array([3, 7])
    plain = shop.ShopProposer(ranker, history, True)(copy.deepcopy(world), users, np.random.default_rng(1))
    got = shop.ShopProposer(ranker, history, True)(copy.deepcopy(styled), users, np.random.default_rng(1))
    np.testing.assert_array_equal(got.candidates, plain.candidates)  # the same pool from the same draws
    n_before = plain.contexts.shape[2] - 2  # features, pool share, category one-hot; then score and 1
    np.testing.assert_array_equal(got.contexts[..., :n_before], plain.contexts[..., :n_before])
    style_onehot = got.contexts[..., n_before : n_before + shop.NUM_STYLES]
    valid = got.valid
    np.testing.assert_array_equal(style_onehot.sum(axis=2), 1.0)
    np.testing.assert_array_equal(style_onehot.argmax(axis=2)[valid], styled.item_style[got.candidates[valid]])
    np.testing.assert_array_equal(got.contexts[..., -2:], plain.contexts[..., -2:])
    np.testing.assert_array_equal(got.fields[..., :3], plain.fields)
    np.testing.assert_array_equal(got.fields[..., 3], np.broadcast_to(styled.user_segment[users][:, None], (2, 12)))
    np.testing.assert_array_equal(got.fields[..., 4][valid], styled.item_style[got.candidates[valid]])


def test_without_the_cross_the_study_is_the_synthetic_shops(tiny):
    """style_affinity 0 runs the study on the world as the warehouse logged it (no style fields); otherwise the
    requests are the same and only the cross's clicks differ."""
    world, history, _ = tiny
    ranker = shop.LinearRanker.train(history, shop.log_requests(world, 500, np.random.default_rng(2)))
    args = (world, history, ranker, 12, 32, 0.5, 4)
    plain = studies.bandit_study(*args, BanditConfig(style_affinity=0.0), policies=("greedy",))
    seen = []
    proposer = shop.ShopProposer.__call__

    def spy(self, w, users, rng):
        seen.append(type(w))
        return proposer(self, w, users, rng)

    import unittest.mock

    with unittest.mock.patch.object(shop.ShopProposer, "__call__", spy):
        styled = studies.bandit_study(*args, BanditConfig(style_affinity=0.5), policies=("greedy",))
        again = studies.bandit_study(*args, BanditConfig(style_affinity=0.0), policies=("greedy",))
    assert set(seen[:12]) == {shop.StyledShop} and set(seen[12:]) == {synthetic.ShopWorld}
    np.testing.assert_array_equal(again.rewards["greedy"], plain.rewards["greedy"])
    assert not np.array_equal(styled.rewards["greedy"], plain.rewards["greedy"])


def test_the_fm_learns_the_bandit_shops_cross_that_the_linear_learners_cannot(tiny):
    """A strong segment x style cross (RMS 1.5) on the tiny shop: the FM, which crosses the two fields, collects
    more than linear Thompson and LinUCB (which see the style's one-hot but cannot cross it with the segment) by
    over 5%; on the shop without it the FM's lead is under 5% (seed 3: +1.3% over Thompson, cross: +9.7%)."""
    world, history, _ = tiny
    ranker = shop.LinearRanker.train(history, shop.log_requests(world, 2000, np.random.default_rng(2)))
    lead = {}
    for scale in (0.0, 1.5):
        config = BanditConfig(style_affinity=scale)
        run = studies.bandit_study(
            world, history, ranker, 90, 64, 0.5, 3, config, policies=("bayesian_fm", "thompson", "linucb")
        )
        total = {name: r.sum() for name, r in run.rewards.items()}
        lead[scale] = total["bayesian_fm"] / max(total["thompson"], total["linucb"]) - 1
    assert lead[1.5] > 0.05 > lead[0.0]


class HistoryLover(RankerDouble):
    """Scores an item in the user's history above every other: what DIEN's history_match can learn."""

    def score(self, hist_items, hist_cats, cand_items, cand_cats, behaviour):
        return (cand_items[:, :, None] == hist_items[:, None, :]).any(axis=2).astype(np.float32) + cand_items * 1e-4


def test_funnel_policy_serves_unseen_items_first_as_the_funnel_does(tiny):
    """The served funnel masks the user's history; the study's greedy and OPE policies must follow it, while
    the bandits' contexts keep the ranker's raw score."""
    world, history, _ = tiny
    events = shop.replay("tiny", 0)[1]
    vocab = list(world.item_ids)
    funnel = shop.FunnelRanker.build(HistoryLover(len(vocab) + 2), world, events, vocab, max_len=5)
    user = 3
    had = sorted(set(events.item[events.user == user].tolist()))
    never = [i for i in range(len(world.item_ids)) if i not in set(had)][:3]
    pool = np.array([[had[0], never[0], had[-1], never[1], -1, never[2]]])
    users = np.array([user])
    assert np.array_equal(funnel.seen(users, pool), [[True, False, True, False, False, False]])
    raw = funnel.scores(users, pool)
    assert raw[0, 0] > raw[0, 1] and raw[0, 2] > raw[0, 3]  # the double prefers what the user had
    ranked = funnel.rank(users, pool)
    assert set(ranked[0, :3]) == set(never) and set(ranked[0, 3:5]) == {had[0], had[-1]} and ranked[0, -1] == -1
    served = funnel.served_scores(users, pool)
    assert np.array_equal(served[0, [1, 3, 5]], raw[0, [1, 3, 5]])  # unseen items keep their scores
    proposal = shop.ShopProposer(funnel, history)(
        copy.deepcopy(world), np.array([user, user]), np.random.default_rng(2)
    )
    valid = proposal.candidates >= 0
    seen = funnel.seen(np.array([user, user]), proposal.candidates)
    assert (valid & seen).any() and (valid & ~seen).any(), "the tiny shop's pool must mix both for this check"
    worst_unseen = np.where(valid & ~seen, proposal.scores, np.inf).min(axis=1)
    best_seen = np.where(valid & seen, proposal.scores, -np.inf).max(axis=1)
    assert np.all(best_seen < worst_unseen)
    raw_column = proposal.contexts[..., -2]
    np.testing.assert_allclose(raw_column[valid], funnel.scores(np.array([user, user]), proposal.candidates)[valid])
