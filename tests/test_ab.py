import os
import subprocess
import sys

import numpy as np
import pytest

from components import ab
from components.experiments import stats

IDS = [f"user-{i}" for i in range(100_000)]


def test_buckets_are_uniform():
    counts, _ = np.histogram(ab.buckets(IDS, "exp-a"), bins=20, range=(0.0, 1.0))
    assert stats.chi2_goodness_of_fit(counts, np.full(20, 0.05))[1] > 0.001
    assert counts.sum() == len(IDS)


def test_treatment_share_matches_ratio():
    share = np.mean(ab.assign_many(IDS, "exp-a", 0.2) == ab.TREATMENT)
    assert abs(share - 0.2) < 0.006  # ~5 standard errors


def test_scalar_and_vector_agree():
    vector = ab.assign_many(IDS[:500], "exp-a", 0.5)
    assert list(vector) == [ab.assign(uid, "exp-a", 0.5) for uid in IDS[:500]]


def test_stable_across_processes_with_other_hash_seed():
    code = (
        "from components import ab;"
        "print(''.join('1' if ab.assign(f'user-{i}', 'exp-a', 0.5) == 'treatment' else '0' for i in range(300)))"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    here = "".join("1" if v == ab.TREATMENT else "0" for v in ab.assign_many(IDS[:300], "exp-a", 0.5))
    assert other.stdout.strip() == here
    assert 0 < here.count("1") < 300


def test_raising_ratio_only_moves_control_to_treatment():
    before = ab.assign_many(IDS, "exp-a", 0.1) == ab.TREATMENT
    after = ab.assign_many(IDS, "exp-a", 0.35) == ab.TREATMENT
    assert not np.any(before & ~after)  # nobody leaves treatment
    assert after.sum() > before.sum()


def test_experiments_with_different_salts_are_independent():
    a = ab.assign_many(IDS, "exp-a", 0.5) == ab.TREATMENT
    b = ab.assign_many(IDS, "exp-b", 0.5) == ab.TREATMENT
    table = np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])
    assert stats.chi2_independence(table)[1] > 0.001
    assert np.mean(a == b) < 0.52  # not the same split


@pytest.mark.parametrize("experiment, ratio", [("", 0.5), ("exp", -0.1), ("exp", 1.5)])
def test_bad_arguments_raise(experiment, ratio):
    with pytest.raises(ValueError):
        ab.assign("u1", experiment, ratio)


def test_empty_user_id_raises():
    with pytest.raises(ValueError, match="empty or null user_id"):
        ab.assign_many(["u1", ""], "exp", 0.5)
