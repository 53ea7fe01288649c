"""OPE and the bandit on the synthetic shop's tiny world, against the truth the world knows."""

import numpy as np
import pytest

from components.experiments import bench, ope, shop, studies
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
