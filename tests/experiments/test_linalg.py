"""The bandits' Gram products: the same matrix by either path."""

import numpy as np
import pytest

from components.experiments.linalg import BLAS_MIN_ROWS, weighted_gram


@pytest.mark.parametrize("rows", [0, 7, BLAS_MIN_ROWS - 1, BLAS_MIN_ROWS, BLAS_MIN_ROWS + 5])
def test_weighted_gram_is_x_transpose_diag_w_x_on_both_sides_of_the_blas_threshold(rows):
    rng = np.random.default_rng(rows)
    x, w = rng.normal(size=(rows, 6)), rng.random(rows)
    by_hand = sum((w[n] * np.outer(x[n], x[n]) for n in range(rows)), np.zeros((6, 6)))
    np.testing.assert_allclose(weighted_gram(x, w), by_hand, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(weighted_gram(x), by_hand if rows == 0 else x.T @ x, rtol=1e-10, atol=1e-9)
