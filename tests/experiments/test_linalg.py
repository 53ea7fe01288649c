"""The bandits' Gram products: the same matrix by either path, each path taken on its side of the threshold."""

import numpy as np
import pytest

from components.experiments import linalg


@pytest.mark.parametrize("rows", [0, 7, linalg.BLAS_MIN_ROWS - 1, linalg.BLAS_MIN_ROWS, linalg.BLAS_MIN_ROWS + 5])
def test_weighted_gram_is_x_transpose_diag_w_x_on_both_sides_of_the_blas_threshold(rows, monkeypatch):
    rng = np.random.default_rng(rows)
    x, w = rng.normal(size=(rows, 6)), rng.random(rows)
    einsum_calls = []
    einsum = np.einsum
    monkeypatch.setattr(linalg.np, "einsum", lambda *a, **k: einsum_calls.append(1) or einsum(*a, **k))
    for weights in (w, None):
        scale = np.ones(rows) if weights is None else weights
        by_hand = sum((scale[n] * np.outer(x[n], x[n]) for n in range(rows)), np.zeros((6, 6)))
        np.testing.assert_allclose(linalg.weighted_gram(x, weights), by_hand, rtol=1e-10, atol=1e-9)
    assert len(einsum_calls) == (2 if rows < linalg.BLAS_MIN_ROWS else 0)
