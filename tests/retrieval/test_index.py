import numpy as np
import pytest

from components.retrieval.index import HNSW, BruteForce, recall_at_k


def _catalogue(seed=0, items=400, dim=8):
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(items, dim)).astype(np.float32)
    available = rng.random(items) > 0.1
    return embeddings, available, rng.normal(size=(30, dim)).astype(np.float32)


def test_brute_force_is_the_exact_top_k():
    embeddings, available, queries = _catalogue()
    exclude = [np.array([3, 4, 5])] * len(queries)
    top, scores = BruteForce(embeddings, available, chunk=7).search(queries, 10, exclude)
    for row, query in enumerate(queries):
        allowed = [i for i in range(2, len(embeddings)) if available[i] and i not in (3, 4, 5)]
        expected = sorted(allowed, key=lambda i: -float(embeddings[i] @ query))[:10]
        assert top[row].tolist() == expected
        np.testing.assert_allclose(scores[row], embeddings[expected] @ query, rtol=1e-5)


def test_recall_at_k():
    assert recall_at_k(np.array([[1, 2, 3, 4]]), np.array([[4, 3, 9, 8]])) == 0.5


def test_hnsw_agrees_with_brute_force():
    pytest.importorskip("faiss", reason="the approximate index needs faiss-cpu (optional)")
    embeddings, available, queries = _catalogue(items=2000, dim=16)
    exclude = [np.array([7, 8])] * len(queries)
    exact, _ = BruteForce(embeddings, available).search(queries, 20, exclude)
    approximate, _ = HNSW(embeddings, available).search(queries, 20, exclude)
    assert recall_at_k(exact, approximate) > 0.9
    assert available[approximate].all() and not np.isin(approximate, [0, 1, 7, 8]).any()
