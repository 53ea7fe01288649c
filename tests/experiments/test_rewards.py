"""Reward weightings (LINE's score), the shop's mute model and the estimators under a weighting."""

import numpy as np
import pytest

from components.experiments import ope, rewards, shop
from components.warehouse import synthetic


def test_score_weighting_by_hand():
    click = np.array([1, 0, 0, 1])
    mute = np.array([0, 1, 0, 0])
    np.testing.assert_array_equal(rewards.SCORE.of(click, mute), [1.0, 0.0, 0.5, 1.0])
    np.testing.assert_array_equal(rewards.CLICK.of(click, mute), [1.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(rewards.SCORE.of(click), [1.0, 0.5, 0.5, 1.0])
    assert rewards.SCORE.expected(0.2, 0.1) == pytest.approx(0.2 + 0.5 * 0.7)
    assert rewards.parse("") == rewards.parse("click") == rewards.CLICK
    assert rewards.parse("score") == rewards.parse("impression=0.5, click=1, mute=0") == rewards.SCORE
    assert rewards.parse("click=1,mute=-1") == rewards.RewardWeights(0.0, 1.0, -1.0)
    assert rewards.parse(rewards.SCORE.spec()) == rewards.SCORE
    for bad in ("clicks", "click=x", "view=1"):
        with pytest.raises(ValueError, match="reward weighting"):
            rewards.parse(bad)
    with pytest.raises(ValueError, match="both clicked and muted"):
        rewards.SCORE.of(np.array([1]), np.array([1]))


def hand_log(mute):
    """Two requests, one slot each: a click (propensity 0.5) and a plain or muted impression (propensity 0.25)."""
    return ope.LoggedSlates(
        request=np.array([0, 1]),
        position=np.array([0, 0]),
        item=np.array([0, 1]),
        propensity=np.array([0.5, 0.25]),
        click=np.array([1.0, 0.0]),
        num_requests=2,
        slate_size=1,
        mute=np.array([0.0, mute]),
    )


def test_estimators_take_the_weighting():
    target = np.array([1.0, 1.0])  # the target shows both logged items for sure
    assert ope.ips(hand_log(0.0), target) == pytest.approx((1 / 0.5) / 2)
    assert ope.ips(hand_log(0.0).weighted(rewards.SCORE), target) == pytest.approx((1 / 0.5 + 0.5 / 0.25) / 2)
    assert ope.ips(hand_log(1.0).weighted(rewards.SCORE), target) == pytest.approx((1 / 0.5) / 2)
    assert ope.snips(hand_log(0.0).weighted(rewards.SCORE), target) == pytest.approx((2 * 1 + 4 * 0.5) / 6)
    assert hand_log(0.0).weighted(rewards.CLICK).reward is None
    no_mutes = ope.LoggedSlates(**{**hand_log(0.0).__dict__, "mute": None})
    with pytest.raises(ope.LogError, match="needs mutes"):
        no_mutes.weighted(rewards.SCORE)
    with pytest.raises(ope.LogError, match="never muted"):
        ope.LoggedSlates(**{**hand_log(0.0).__dict__, "mute": np.array([1.0, 0.0])})


@pytest.fixture(scope="module")
def tiny():
    world, events, _ = shop.replay("tiny", 0)
    return world, shop.ObservedHistory.from_events(events, world)


def test_mute_model_and_its_draws(tiny):
    """P(mute) = examination[k] (1 - relevance) sigmoid(MUTE_BIAS - MUTE_FIT fit); draws follow it, never on a
    click, and worse-fitting items are muted more."""
    world, _ = tiny
    rng = np.random.default_rng(0)
    users = world.sample_requests(4000, rng)
    slates, _ = world.logging_policy(users, rng)
    fit = world.fit(users, slates)
    expected = (
        world.examination[:4]
        * (1 - synthetic.sigmoid(synthetic.CLICK_BIAS + fit))
        * synthetic.sigmoid(synthetic.MUTE_BIAS - synthetic.MUTE_FIT * fit)
    )
    np.testing.assert_allclose(world.mute_probability(users, slates), expected)
    clicked, _ = world.simulate(users, slates, rng)
    muted = world.simulate_mutes(users, slates, clicked, rng)
    assert not np.any(clicked & muted)
    assert muted.mean() == pytest.approx(expected.mean(), abs=4 * np.sqrt(expected.mean() / muted.size))
    low = fit < np.median(fit)
    assert muted[low].mean() > muted[~low].mean()


def test_shop_logs_mutes_and_the_scored_truth_matches_online(tiny):
    world, history = tiny
    rng = np.random.default_rng(1)
    logged = shop.log_requests(world, 3000, rng)
    log = logged.log
    assert log.mute is not None and log.mute.sum() > 0 and not np.any((log.mute > 0) & (log.click > 0))
    ranker = shop.LinearRanker.train(history, shop.log_requests(world, 2000, rng))
    ranked = ranker.rank(logged.users, logged.pool)
    policy = ope.ranking_policy(ranked, 4, 0.3)
    truth = shop.true_value(logged.world, logged.users, policy, rewards.SCORE)
    online = []
    for _ in range(40):
        slates = ope.sample_ranking_policy(ranked, 4, 0.3, rng)
        clicked, _ = logged.world.simulate(logged.users, slates, rng)
        online.append(rewards.SCORE.of(clicked, logged.world.simulate_mutes(logged.users, slates, clicked, rng)).mean())
    assert np.mean(online) == pytest.approx(truth, abs=4 * np.std(online) / np.sqrt(40) + 1e-3)
    assert truth > shop.true_value(logged.world, logged.users, policy) + 0.3  # 0.5 per plain slot
