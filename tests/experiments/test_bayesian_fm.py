"""The Bayesian FM arm (Laplace posterior, Thompson draws, online updates), LinUCB by hand, and the policies in the
simulator."""

import copy

import numpy as np
import pytest

from components.experiments.bandit import LinUCB
from components.experiments.bayesian_fm import BayesianFM
from components.experiments.simulation import BANDIT_POLICIES, BanditConfig, EmbeddingFunnel, simulate_bandit
from tests.experiments.test_bandit import ShiftingWorld


def tiny_problem(seed=0, rows=40):
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(rows, 3))
    values = np.stack([rng.integers(0, 3, rows), rng.integers(0, 4, rows)], axis=1)
    positions = rng.integers(0, 2, rows)
    rewards = (rng.random(rows) < 0.4).astype(float)
    rewards[::7] = 0.5  # a fractional (score) reward
    return dense, values, positions, rewards


def fitted(sweeps=60, init_scale=0.5):
    fm = BayesianFM.create(
        3,
        2,
        2,
        dim=2,
        bias_precision=1.0,
        factor_precision=2.0,
        init_scale=init_scale,
        exploration=1.0,
        sweeps=sweeps,
        seed=1,
    )
    dense, values, positions, rewards = tiny_problem()
    fm._ensure(values)
    prior = copy.deepcopy(fm)
    fm.update(dense, values, positions, rewards)
    return fm, prior, (dense, values, positions, rewards)


def numeric_hessian(fun, theta, step=1e-4):
    n = len(theta)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            shifted = []
            for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                t = theta.copy()
                t[i] += si * step
                t[j] += sj * step
                shifted.append(fun(t))
            out[i, j] = (shifted[0] - shifted[1] - shifted[2] + shifted[3]) / (4 * step * step)
    return out


def block_objective(fm, prior, batch, field, value):
    def fun(theta):
        trial = copy.deepcopy(fm)
        trial.fields[field].mean[value] = theta
        return trial.negative_log_posterior(*batch, prior)

    return fun


@pytest.mark.parametrize(("field", "value"), [(0, 1), (1, 2)])
def test_laplace_block_is_the_numeric_hessian_at_the_map(field, value):
    """Within a block the log-posterior's Hessian is exact (f is linear in the block), and the fit reaches the MAP."""
    fm, prior, batch = fitted()
    fun = block_objective(fm, prior, batch, field, value)
    theta = fm.fields[field].mean[value].copy()
    np.testing.assert_allclose(fm.fields[field].precision[value], numeric_hessian(fun, theta), rtol=1e-4, atol=1e-4)
    grad = [(fun(theta + e * 1e-5) - fun(theta - e * 1e-5)) / 2e-5 for e in np.eye(len(theta))]
    np.testing.assert_allclose(grad, 0.0, atol=1e-4)


def test_laplace_dense_block_is_the_numeric_hessian():
    fm, prior, batch = fitted()

    def fun(w):
        trial = copy.deepcopy(fm)
        trial.dense_mean = w
        return trial.negative_log_posterior(*batch, prior)

    np.testing.assert_allclose(fm.dense_precision, numeric_hessian(fun, fm.dense_mean.copy()), rtol=1e-4, atol=1e-4)


def test_an_update_without_data_leaves_the_prior():
    fm = BayesianFM.create(3, 2, 2, dim=3, seed=4)
    dense, values, positions, rewards = tiny_problem(rows=10)
    fm._ensure(values)
    before = copy.deepcopy(fm)
    fm.update(np.zeros((0, 3)), np.zeros((0, 2), np.int64), np.zeros(0, np.int64), np.zeros(0))
    np.testing.assert_array_equal(fm.dense_mean, before.dense_mean)
    np.testing.assert_array_equal(fm.dense_precision, before.dense_precision)
    for table, old in zip(fm.fields, before.fields):
        np.testing.assert_array_equal(table.mean, old.mean)
        np.testing.assert_array_equal(table.precision, old.precision)
    # values no row touches keep their prior through an update with data
    fm.update(dense[:4], np.zeros((4, 2), np.int64), positions[:4], rewards[:4])
    untouched = fm.fields[1]
    np.testing.assert_array_equal(untouched.mean[3], before.fields[1].prior_mean[3])
    np.testing.assert_array_equal(untouched.precision[3], fm.prior_block_precision)
    assert not np.array_equal(fm.fields[0].mean[0], before.fields[0].mean[0])


def test_posterior_round_trips_through_arrays(tmp_path):
    fm, _, (dense, values, positions, _) = fitted(sweeps=3)
    np.savez(tmp_path / "fm.npz", **fm.arrays())
    with np.load(tmp_path / "fm.npz") as arrays:
        loaded = BayesianFM.from_arrays(arrays)
    np.testing.assert_allclose(loaded.predict(dense, values, positions), fm.predict(dense, values, positions))
    assert (loaded.dim, loaded.factor_precision, loaded.num_positions) == (fm.dim, fm.factor_precision, 2)


def test_thompson_draws_follow_the_laplace_posterior():
    fm, _, _ = fitted(sweeps=10)
    draws = 20000
    values = np.tile(np.array([[[1, 2], [1, 3]]]), (draws, 1, 1))  # two candidates share field 0's value 1
    dense_w, blocks = fm.sample_parameters(values, np.random.default_rng(5))
    for sample, mean, precision in (
        (blocks[:, 0, 1], fm.fields[1].mean[2], fm.fields[1].precision[2]),
        (dense_w, fm.dense_mean, fm.dense_precision),
    ):
        cov = np.linalg.inv(precision)
        np.testing.assert_allclose(sample.mean(axis=0), mean, atol=4 * np.sqrt(np.diag(cov).max() / draws))
        np.testing.assert_allclose(np.cov(sample.T), cov, atol=0.05 * np.abs(cov).max())
    np.testing.assert_array_equal(blocks[:, 0, 0], blocks[:, 1, 0])  # one draw per request and value
    assert not np.array_equal(blocks[:, 0, 1], blocks[:, 1, 1])


def test_fm_learns_an_interaction_a_linear_model_cannot():
    """y depends only on whether user and item share a parity: no main effect, so only the factors explain it."""
    rng = np.random.default_rng(6)
    fm = BayesianFM.create(2, 2, 1, dim=2, factor_precision=1.0, init_scale=0.3, score_prior=0.0, seed=2)
    for _ in range(60):
        values = np.stack([rng.integers(0, 6, 200), rng.integers(0, 6, 200)], axis=1)
        p = np.where(values[:, 0] % 2 == values[:, 1] % 2, 0.8, 0.2)
        fm.update(np.zeros((200, 2)), values, np.zeros(200, np.int64), (rng.random(200) < p).astype(float))
    grid = np.array([[u, i] for u in range(6) for i in range(6)])
    predicted = fm.predict(np.zeros((36, 2)), grid)
    match = grid[:, 0] % 2 == grid[:, 1] % 2
    assert predicted[match].min() > 0.6 and predicted[~match].max() < 0.4


def test_linucb_by_hand():
    """Ridge A = I + X'X over [x, position one-hot], rows [1, 0] rewarded 1 and [0, 1] rewarded 0:
    A = [[2, 0, 1], [0, 2, 1], [1, 1, 3]], A^-1 = [[5, 1, -2], [1, 5, -2], [-2, -2, 4]] / 8, theta = (3, -1, 2) / 8."""
    ucb = LinUCB.create(context_dim=2, num_positions=1, prior_precision=1.0, score_prior=0.0, alpha=2.0)
    ucb.update(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 0]), np.array([1.0, 0.0]))
    np.testing.assert_allclose(ucb.model.mean, [3 / 8, -1 / 8, 2 / 8])
    contexts = np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    expected = [3 / 8 + 2 * np.sqrt(5 / 8), -1 / 8 + 2 * np.sqrt(5 / 8), 2 / 8 + 2 * np.sqrt(12 / 8)]
    np.testing.assert_allclose(ucb.model.ucb_scores(contexts, 2.0)[0], expected)
    np.testing.assert_array_equal(ucb.rank(contexts, 3)[0], [2, 0, 1])
    np.testing.assert_array_equal(ucb.rank(contexts, 2, valid=np.array([[True, True, False]]))[0], [0, 1])
    with pytest.raises(ValueError, match="alpha"):
        LinUCB.create(2, 1, alpha=-1.0)


class MutingWorld(ShiftingWorld):
    """test_bandit's latent-factor world, plus P(mute) = examination(k) * 0.1 (never on a click)."""

    def __init__(self, users, items):
        super().__init__(users, items, None)

    def mute_probability(self, users, items):
        return np.broadcast_to(0.1 * self.examination[: items.shape[1]], items.shape)


def test_simulator_runs_every_policy_with_both_rewards():
    rng = np.random.default_rng(8)
    users, items = rng.normal(size=(50, 4)), rng.normal(size=(80, 4))
    world = MutingWorld(users, items)
    funnel = EmbeddingFunnel(users + 0.3 * rng.normal(size=users.shape), items, num_candidates=12)
    config = BanditConfig(fm_time_rounds=5)
    run = simulate_bandit(world, funnel, rounds=12, batch_size=16, slate_size=3, seed=1, config=config, reward="score")
    assert set(run.rewards) == set(run.scores) == set(BANDIT_POLICIES)
    assert run.learning_reward == "impression=0.5,click=1,mute=0"
    for name in BANDIT_POLICIES:
        # a score is 0.5 per slot, +0.5 per click, -0.5 per mute
        unmuted = 1.5 + 0.5 * run.rewards[name]
        assert np.all(run.scores[name] <= unmuted + 1e-12) and np.any(run.scores[name] < unmuted)
    again = simulate_bandit(
        world, funnel, rounds=12, batch_size=16, slate_size=3, seed=1, config=config, reward="score"
    )
    np.testing.assert_array_equal(again.scores["bayesian_fm"], run.scores["bayesian_fm"])
    with pytest.raises(ValueError, match="unknown bandit policies"):
        simulate_bandit(world, funnel, rounds=1, batch_size=4, slate_size=3, seed=1, policies=("ucb2",))


def test_forgetting_shrinks_old_evidence_toward_the_prior():
    """With lambda < 1 a block's precision decays as lambda^age P + (1 - lambda^age) P_prior over the updates that
    do not touch it (also when Thompson draws it), the dense block by lambda per update; lambda = 1 keeps it."""
    lam = 0.8
    dense, values, positions, rewards = tiny_problem()
    fms = {f: BayesianFM.create(3, 2, 2, dim=2, exploration=1.0, seed=1, forgetting=f) for f in (1.0, lam)}
    for fm in fms.values():
        fm.update(dense, values, positions, rewards)
    fm = fms[lam]
    written = fm.fields[1].precision[2].copy()
    dense_before = fm.dense_precision.copy()
    other = np.zeros((4, 2), np.int64)  # rows with user 0 and item 0: item 2's block is not touched
    fm.update(dense[:4], other, positions[:4], rewards[:4])
    assert fm.step == 2
    np.testing.assert_array_equal(fm.fields[1].precision[2], written)  # stored lazily ...
    prior = fm.prior_block_precision
    np.testing.assert_allclose(fm.block_precision(1, np.array([2]))[0], lam * written + (1 - lam) * prior)
    x = fm._dense_rows(dense[:4], positions[:4])
    blocks = np.stack([t.mean[other[:, f]] for f, t in enumerate(fm.fields)], axis=1)
    p = 1 / (1 + np.exp(-fm.logit(fm.dense_mean, x, blocks)))
    expected = lam * dense_before + (1 - lam) * np.eye(len(fm.dense_mean)) + (x * (p * (1 - p))[:, None]).T @ x
    np.testing.assert_allclose(fm.dense_precision, expected)
    for _ in range(60):
        fm.update(dense[:4], other, positions[:4], rewards[:4])
    np.testing.assert_allclose(fm.block_precision(1, np.array([2]))[0], prior, atol=1e-4)  # ... back to the prior
    draws = 20000
    _, sampled = fm.sample_parameters(np.tile(np.array([[[1, 2]]]), (draws, 1, 1)), np.random.default_rng(3))
    np.testing.assert_allclose(np.cov(sampled[:, 0, 1].T), np.linalg.inv(prior), atol=0.1 * np.linalg.inv(prior).max())
    # without forgetting the same rows leave item 2's evidence where it was
    keep = fms[1.0]
    kept = keep.fields[1].precision[2].copy()
    for _ in range(3):
        keep.update(dense[:4], other, positions[:4], rewards[:4])
    np.testing.assert_array_equal(keep.block_precision(1, np.array([2]))[0], kept)
    with pytest.raises(ValueError, match="forgetting"):
        BayesianFM.create(3, 2, 2, forgetting=0.0)


def test_laplace_with_forgetting_is_the_numeric_hessian_of_the_discounted_posterior():
    """A second update's precisions are the Hessian of the log-posterior whose prior is the discounted first
    posterior, and round-trip through arrays with the blocks' ages."""
    fm = BayesianFM.create(3, 2, 2, dim=2, bias_precision=1.0, factor_precision=2.0, init_scale=0.5, sweeps=60,
                           seed=1, forgetting=0.7)  # fmt: skip
    dense, values, positions, rewards = tiny_problem()
    fm.update(dense[:20], values[:20], positions[:20], rewards[:20])
    prior = copy.deepcopy(fm)
    batch = (dense[20:], values[20:], positions[20:], rewards[20:])
    fm.update(*batch)
    value = int(batch[1][0, 1])
    fun = block_objective(fm, prior, batch, 1, value)
    theta = fm.fields[1].mean[value].copy()
    np.testing.assert_allclose(fm.fields[1].precision[value], numeric_hessian(fun, theta), rtol=1e-4, atol=1e-4)

    def dense_fun(w):
        trial = copy.deepcopy(fm)
        trial.dense_mean = w
        return trial.negative_log_posterior(*batch, prior)

    np.testing.assert_allclose(
        fm.dense_precision, numeric_hessian(dense_fun, fm.dense_mean.copy()), rtol=1e-4, atol=1e-4
    )
    arrays = fm.arrays()
    loaded = BayesianFM.from_arrays(arrays)
    assert (loaded.step, loaded.forgetting) == (2, 0.7)
    for f in range(2):
        used = np.unique(values[:, f])
        np.testing.assert_allclose(loaded.block_precision(f, used, ahead=3), fm.block_precision(f, used, ahead=3))
