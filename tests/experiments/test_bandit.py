import numpy as np
import pytest

from components.experiments import bandit as bandit_mod
from components.experiments.bandit import BayesianLinearBandit
from components.experiments.simulation import EmbeddingFunnel, simulate_bandit


def test_one_dimensional_update_by_hand():
    """Prior N(0, 1), noise variance 1, rewards 1 at x=1 and 0 at x=2 (no position effect: one position).
    Posterior precision 1 + 1 + 4 = 6 on w; the position weight sees both rows."""
    b = BayesianLinearBandit.create(
        context_dim=2, num_positions=1, prior_precision=1.0, noise_variance=1.0, score_prior=0.0
    )
    contexts = np.array([[1.0, 0.0], [2.0, 0.0]])  # second column is the "score" slot, zero here
    b.update(contexts, np.array([0, 0]), np.array([1.0, 0.0]))
    x = np.array([[1.0, 0.0, 1.0], [2.0, 0.0, 1.0]])
    expected_precision = np.eye(3) + x.T @ x
    np.testing.assert_allclose(b.precision, expected_precision)
    np.testing.assert_allclose(b.mean, np.linalg.solve(expected_precision, x.T @ np.array([1.0, 0.0])))
    assert expected_precision[0, 0] == 6.0


def test_batch_update_equals_closed_form_with_prior_mean():
    rng = np.random.default_rng(0)
    b = BayesianLinearBandit.create(
        context_dim=4, num_positions=2, prior_precision=2.0, noise_variance=0.5, score_prior=0.7
    )
    x, pos, y = rng.normal(size=(30, 4)), rng.integers(0, 2, 30), rng.normal(size=30)
    b.update(x[:10], pos[:10], y[:10])
    b.update(x[10:], pos[10:], y[10:])
    full = np.hstack([x, np.eye(2)[pos]])
    prior_mean = np.array([0, 0, 0.7, 0, 0, 0])
    precision = 2.0 * np.eye(6) + full.T @ full / 0.5
    mean = np.linalg.solve(precision, 2.0 * prior_mean + full.T @ y / 0.5)
    np.testing.assert_allclose(b.mean, mean, rtol=1e-10)


def test_thompson_draws_follow_the_posterior():
    b = BayesianLinearBandit.create(
        context_dim=2, num_positions=1, prior_precision=4.0, noise_variance=1.0, score_prior=0.5
    )
    draws = b.sample_weights(40000, np.random.default_rng(1))
    np.testing.assert_allclose(draws.mean(axis=0), [0.5, 0.0], atol=0.01)
    np.testing.assert_allclose(draws.var(axis=0), [0.25, 0.25], rtol=0.05)


def test_bad_feedback_raises():
    b = BayesianLinearBandit.create(context_dim=3, num_positions=2)
    with pytest.raises(ValueError, match="positions"):
        b.update(np.zeros((2, 3)), np.array([0, 2]), np.zeros(2))
    with pytest.raises(ValueError, match="rewards"):
        b.update(np.zeros((2, 3)), np.array([0, 1]), np.array([0.0, np.nan]))


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    b = BayesianLinearBandit.create(context_dim=6, num_positions=3, exploration=0.5)
    b.update(rng.normal(size=(20, 6)), rng.integers(0, 3, 20), rng.random(20))
    b.save(tmp_path / "bandit", saved_model=False)
    loaded = BayesianLinearBandit.load(tmp_path / "bandit")
    np.testing.assert_allclose(loaded.mean, b.mean)
    assert loaded.exploration == 0.5 and loaded.num_positions == 3
    with pytest.raises(FileNotFoundError, match="bandit model directory"):
        BayesianLinearBandit.load(tmp_path)


def test_saved_model_scores_match_posterior_mean(tmp_path):
    import tensorflow as tf

    rng = np.random.default_rng(3)
    dim = 4
    b = BayesianLinearBandit.create(context_dim=2 * dim + 2, num_positions=2)
    b.update(rng.normal(size=(50, 2 * dim + 2)), rng.integers(0, 2, 50), rng.random(50))
    b.save(tmp_path / "bandit")
    query, items, scores = rng.normal(size=(3, dim)), rng.normal(size=(3, 5, dim)), rng.normal(size=(3, 5))
    served = tf.saved_model.load(str(tmp_path / "bandit" / bandit_mod.SAVED_MODEL_DIR)).signatures["serving_default"]
    out = served(
        query=tf.constant(query, tf.float32),
        items=tf.constant(items, tf.float32),
        scores=tf.constant(scores, tf.float32),
    )
    expected = bandit_mod.reranker_features(query, items, scores) @ b.mean[: b.context_dim]
    np.testing.assert_allclose(out["mean"].numpy(), expected, rtol=1e-4, atol=1e-5)
    assert out["thompson"].shape == (3, 5)


class ShiftingWorld:
    """A minimal latent-factor world for a fast test: P(click) = examination(k) * sigmoid(u.v - 2).
    A shift adds a common trend to every user's interests, so items along it become popular."""

    def __init__(self, users, items, rng):
        self.users, self.items = users, items
        self.examination = 1.0 / (1.0 + np.arange(10)) ** 0.5

    def click_probability(self, users, items):
        logits = np.einsum("bd,bkd->bk", self.users[users], self.items[items]) - 2.0
        return self.examination[: items.shape[1]] / (1.0 + np.exp(-logits))

    def sample_requests(self, n, rng):
        return rng.integers(0, len(self.users), n)

    def shift_interests(self, rng):
        """A common trend added to every user's interests: items along it become popular."""
        trend = rng.normal(size=self.users.shape[1])
        trend *= 2.5 / np.linalg.norm(trend)
        return ShiftingWorld(0.3 * self.users + trend, self.items, rng)


def test_thompson_beats_greedy_after_an_interest_shift():
    rng = np.random.default_rng(7)
    users, items = rng.normal(size=(300, 6)), rng.normal(size=(400, 6))
    world = ShiftingWorld(users, items, rng)
    funnel = EmbeddingFunnel(
        query=users + 0.3 * rng.normal(size=users.shape),
        items=items + 0.3 * rng.normal(size=items.shape),
        num_candidates=40,
    )
    run = simulate_bandit(
        world,
        funnel,
        rounds=60,
        batch_size=64,
        slate_size=5,
        seed=7,
        shift=lambda w, r: w.shift_interests(r),
        shift_round=20,
    )
    total = {name: r.sum() for name, r in run.rewards.items()}
    after = {name: r[20:].sum() for name, r in run.rewards.items()}
    assert total["thompson"] > total["greedy"] > total["random"] * 0.9
    assert after["thompson"] > 1.1 * after["greedy"]
    assert after["thompson"] > after["random"]


def test_forgetting_discounts_old_rows_toward_the_prior(tmp_path):
    """lambda < 1: P = lambda P_old + (1 - lambda) P0 + X'X / sigma^2 (and P m likewise), so the same data again
    and again is the discounted sum; saved and loaded with the prior it shrinks toward."""
    lam = 0.5
    bandit = BayesianLinearBandit.create(3, 1, prior_precision=2.0, noise_variance=1.0, forgetting=lam)
    p0, b0 = bandit.precision.copy(), bandit.precision_mean.copy()
    x = np.array([[1.0, 0.5, 1.0]])
    xp = np.hstack([x, [[1.0]]])
    for _ in range(30):
        bandit.update(x, np.array([0]), np.array([1.0]))
    # fixed point: P = lam P + (1 - lam) P0 + xx'  ->  P = P0 + xx' / (1 - lam)
    np.testing.assert_allclose(bandit.precision, p0 + xp.T @ xp / (1 - lam), rtol=1e-6)
    np.testing.assert_allclose(bandit.precision_mean, b0 + xp[0] / (1 - lam), rtol=1e-6)
    bandit.save(tmp_path / "b", saved_model=False)
    loaded = BayesianLinearBandit.load(tmp_path / "b")
    loaded.update(x, np.array([0]), np.array([0.0]))
    bandit.update(x, np.array([0]), np.array([0.0]))
    np.testing.assert_allclose(loaded.precision, bandit.precision)
    np.testing.assert_allclose(loaded.precision_mean, bandit.precision_mean)


@pytest.mark.parametrize("forgetting", [1.0, 0.9])
def test_updates_without_data_leave_the_posterior(forgetting):
    """An empty batch changes nothing, not even through forgetting: the prior stays the prior (and LinUCB's ridge
    statistics, which are the same object's)."""
    rng = np.random.default_rng(3)
    b = BayesianLinearBandit.create(context_dim=3, num_positions=2, score_prior=0.4, forgetting=forgetting)
    prior = (b.precision.copy(), b.mean.copy())
    b.update(np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros(0))
    np.testing.assert_array_equal(b.precision, prior[0])
    np.testing.assert_array_equal(b.mean, prior[1])
    b.update(rng.normal(size=(5, 3)), rng.integers(0, 2, 5), rng.random(5))
    after = (b.precision.copy(), b.precision_mean.copy())
    b.update(np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros(0))
    np.testing.assert_array_equal(b.precision, after[0])
    np.testing.assert_array_equal(b.precision_mean, after[1])
    ucb = bandit_mod.LinUCB.create(3, 2, score_prior=0.4, alpha=0.5, forgetting=forgetting)
    ucb.update(np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros(0))
    np.testing.assert_array_equal(ucb.model.precision, np.eye(5))
