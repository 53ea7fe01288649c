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


def test_brute_force_chunks_by_cells_and_any_chunk_gives_the_same_lists():
    """The default chunk is metrics.chunk_size's (memory flat in queries and items); chunking never changes a list
    (its scores only by the matrix product's round-off, which depends on the number of rows)."""
    from components import metrics

    embeddings, available, queries = _catalogue(items=300)
    exclude = [np.arange(row % 5, 40, 7) for row in range(len(queries))]
    assert BruteForce(embeddings, available).chunk == metrics.chunk_size(len(embeddings))
    whole = BruteForce(embeddings, available, chunk=len(queries)).search(queries, 12, exclude)
    for chunk in (1, 4, 29):
        top, scores = BruteForce(embeddings, available, chunk=chunk).search(queries, 12, exclude)
        np.testing.assert_array_equal(top, whole[0])
        np.testing.assert_allclose(scores, whole[1], rtol=1e-6)


def test_new_item_lists_are_the_dense_top_k():
    """bench.new_items.top_lists (chunked search) holds the same items as masking one dense score matrix."""
    from bench.new_items import top_lists

    embeddings, available, queries = _catalogue(seed=3, items=250)
    seen = [np.array([row, row + 10], np.int64) for row in range(len(queries))]
    dense = queries @ embeddings.T
    dense[:, :2] = -np.inf
    dense[:, ~available] = -np.inf
    for row, items in enumerate(seen):
        dense[row, items] = -np.inf
    expected = np.argsort(-dense, axis=1, kind="stable")[:, :20]
    got = top_lists(queries, embeddings, seen, available)
    np.testing.assert_array_equal(np.sort(got, axis=1), np.sort(expected, axis=1))
