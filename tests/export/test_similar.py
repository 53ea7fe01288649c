import numpy as np
import pytest

from components.export.similar import similar_items


def test_nearest_by_cosine_excluding_self_reserved_and_unavailable():
    embeddings = np.array(
        [
            [9, 9],
            [9, 9],  # reserved rows: never neighbours, no list of their own
            [1, 0],  # 2
            [10, 1],  # 3: nearly parallel to 2 (length must not matter: cosine)
            [0, 1],  # 4
            [1, 1],  # 5: unavailable
            [-1, 0],  # 6
        ],
        dtype=np.float32,
    )
    available = np.array([True, True, True, True, True, False, True])
    items, scores = similar_items(embeddings, available, k=3)
    assert items[2].tolist() == [3, 4, 6]
    assert scores[2] == pytest.approx([10 / np.sqrt(101), 0.0, -1.0], abs=1e-6)
    assert items[4].tolist() == [3, 2, 6]
    assert items[5].tolist() == [3, 2, 4]  # an unavailable item still gets replacements (tie 2 vs 4: lower index)
    assert items[0].tolist() == items[1].tolist() == [0, 0, 0]
    for row in range(2, 7):
        assert row not in items[row] and 5 not in items[row]


def test_fewer_candidates_than_k_leave_pad_slots_and_batches_agree():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(30, 5)).astype(np.float32)
    available = np.ones(30, dtype=bool)
    whole = similar_items(embeddings, available, k=4)
    batched = similar_items(embeddings, available, k=4, memory_budget_mb=5 * 30 * 16 / 2**20)
    assert np.array_equal(whole[0], batched[0]) and np.allclose(whole[1], batched[1])
    only_two = np.zeros(30, dtype=bool)
    only_two[[3, 4]] = True
    items, scores = similar_items(embeddings, only_two, k=3)
    assert items[3].tolist() == [4, 0, 0] and np.isneginf(scores[3, 1:]).all()


def test_zero_vectors_do_not_produce_nan():
    embeddings = np.array([[0, 0], [0, 0], [0, 0], [1, 0], [0, 1]], dtype=np.float32)
    items, scores = similar_items(embeddings, np.ones(5, bool), k=2)
    assert np.isfinite(scores[2:]).all() and items[2].tolist() == [3, 4]
