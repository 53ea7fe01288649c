"""Hard negatives come from the retriever's top-N and never name the target, the history or the user's buys."""

import numpy as np
import pytest

from components import schema
from components.ranking import hard_negatives
from components.ranking.data import RankingData, take_rows


class MeanRetriever:
    """Query = mean embedding of the known history items (the retriever API the sampler needs)."""

    def __init__(self, item_embeddings):
        self.item_embeddings = np.asarray(item_embeddings, np.float32)

    def encode(self, hist_items_idx, hist_cats_idx):
        assert hist_items_idx.shape == hist_cats_idx.shape
        known = (hist_items_idx >= schema.NUM_RESERVED)[..., None]
        return ((self.item_embeddings[hist_items_idx] * known).sum(1) / np.maximum(known.sum(1), 1)).astype(np.float32)


def _ragged(rows):
    lengths = [len(r) for r in rows]
    return np.asarray([v for r in rows for v in r], np.int64), np.concatenate([[0], np.cumsum(lengths)]).astype(
        np.int64
    )


def _data(rng, num_items, users=30):
    """A positive and a popularity-negative row per step of each user's random sequence."""
    rows = {"user": [], "hist": [], "target": [], "label": []}
    for user in range(users):
        sequence = rng.choice(np.arange(2, num_items), size=rng.integers(3, 7), replace=False)
        for t in range(1, len(sequence)):
            for label, target in ((1.0, sequence[t]), (0.0, rng.integers(2, num_items))):
                rows["user"].append(user + 2)
                rows["hist"].append(list(sequence[max(0, t - 4) : t]))
                rows["target"].append(target)
                rows["label"].append(label)
    hist = _ragged(rows["hist"])
    sequences = {
        name: (hist[0] + offset, hist[1])
        for name, offset in (
            (schema.HIST_ITEMS, 0),
            (schema.HIST_CATS, 0),
            (schema.NOCLICK_ITEMS, 1),
            (schema.NOCLICK_CATS, 1),
        )
    }
    target = np.asarray(rows["target"], np.int64)
    scalars = {
        schema.USER: np.asarray(rows["user"], np.int64),
        schema.TARGET_ITEM: target,
        schema.TARGET_CAT: target % 5 + 2,
        schema.LABEL: np.asarray(rows["label"], np.float32),
    }
    return RankingData(scalars, sequences)


def _sequence(data, name, row):
    values, offsets = data.sequences[name]
    return values[offsets[row] : offsets[row + 1]]


def test_left_padded_keeps_the_most_recent_item_last():
    values, offsets = _ragged([[5, 6, 7], [], [9]])
    assert hard_negatives.left_padded(values, offsets).tolist() == [[5, 6, 7], [0, 0, 0], [0, 0, 9]]


def test_top_candidates_is_the_exact_top_n_without_excluded_items():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(40, 4)).astype(np.float32)
    queries = rng.normal(size=(9, 4)).astype(np.float32)
    exclude = rng.integers(0, 40, size=(9, 6))
    got = hard_negatives.top_candidates(queries, embeddings, exclude, 5)
    for row in range(9):
        scores = queries[row] @ embeddings.T
        scores[:2] = -np.inf
        scores[exclude[row]] = -np.inf
        assert set(got[row]) == set(np.argsort(-scores)[:5])


def test_top_candidates_matches_the_unbuffered_selection_entry_for_entry(monkeypatch):
    """The reused, in-place negated score buffer gives the same candidates in the same order as a fresh array per
    batch (the order matters: sample_columns draws by position), over several batches and a shorter last one."""
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(300, 8)).astype(np.float32)
    queries = rng.normal(size=(23, 8)).astype(np.float32)
    exclude = rng.integers(0, 300, size=(23, 7))
    expected = []
    for row in range(23):
        scores = queries[row : row + 1] @ embeddings.T
        scores[:, :2] = -np.inf
        np.put_along_axis(scores, exclude[row : row + 1], -np.inf, axis=1)
        expected.append(np.argpartition(-scores, 19, axis=1)[:, :20])
    monkeypatch.setattr(hard_negatives, "_MATMUL_ROWS", 1)
    np.testing.assert_array_equal(
        hard_negatives.top_candidates(queries, embeddings, exclude, 20), np.concatenate(expected)
    )
    monkeypatch.setattr(hard_negatives, "_MATMUL_ROWS", 5)
    got = hard_negatives.top_candidates(queries, embeddings, exclude, 20)
    assert [set(r) for r in got] == [set(r) for r in np.concatenate(expected)]


def test_top_candidates_refuses_a_pool_larger_than_what_is_left():
    embeddings = np.eye(6, dtype=np.float32)
    with pytest.raises(ValueError, match="exceeds the items left"):
        hard_negatives.top_candidates(np.ones((1, 6), np.float32), embeddings, np.array([[2, 3]]), 3)


def test_sample_columns_draws_distinct_entries_of_each_row():
    candidates = np.arange(40).reshape(4, 10)
    picks = hard_negatives.sample_columns(candidates, 3, np.random.default_rng(1))
    assert picks.shape == (4, 3)
    for row in range(4):
        assert len(set(picks[row])) == 3 and set(picks[row]) <= set(candidates[row])


def _steps(data):
    return take_rows(data, np.flatnonzero(data.scalars[schema.LABEL] == 1))


def test_hard_negatives_come_from_the_top_n_and_never_name_the_target_history_or_own_buys():
    rng = np.random.default_rng(2)
    num_items, pool, per_row = 60, 8, 3
    data = _steps(_data(rng, num_items))
    retriever = MeanRetriever(rng.normal(size=(num_items, 6)))
    negatives = hard_negatives.hard_negative_lists(data, retriever, per_row, pool, seed=0)
    assert negatives.shape == (data.size, per_row)
    users, targets = data.scalars[schema.USER], data.scalars[schema.TARGET_ITEM]
    for row in range(data.size):
        history = _sequence(data, schema.HIST_ITEMS, row)
        own_buys = targets[users == users[row]]
        scores = retriever.encode(history[None], history[None])[0] @ retriever.item_embeddings.T
        scores[:2] = -np.inf
        scores[np.concatenate([[targets[row]], history, own_buys])] = -np.inf
        assert len(set(negatives[row])) == per_row
        for negative in negatives[row]:
            assert negative != targets[row] and negative not in history and negative not in own_buys
            assert negative in np.argsort(-scores)[:pool]


def test_a_pool_larger_than_a_small_catalogue_shrinks_to_what_every_row_can_fill():
    rng = np.random.default_rng(3)
    num_items, per_row = 60, 2
    data = _steps(_data(rng, num_items))
    retriever = MeanRetriever(rng.normal(size=(num_items, 6)))
    negatives = hard_negatives.hard_negative_lists(data, retriever, per_row, 10_000, seed=0)
    assert negatives.shape == (data.size, per_row)
    assert ((negatives >= schema.NUM_RESERVED) & (negatives < num_items)).all()
    with pytest.raises(ValueError, match="too small"):
        hard_negatives.hard_negative_lists(data, retriever, num_items, 10_000, seed=0)


def test_most_distinct_items_ignores_padding_and_repeats():
    rows = np.array([[0, 0, 5, 5, 7], [3, 4, 5, 6, 0], [0, 0, 0, 0, 0]])
    assert hard_negatives.most_distinct_items(rows) == 4


def test_encode_by_length_feeds_short_histories_first_and_keeps_row_order():
    retriever = MeanRetriever(np.random.default_rng(0).normal(size=(12, 3)))
    seen = []
    encode = retriever.encode
    retriever.encode = lambda items, cats: (seen.append(items.copy()), encode(items, cats))[1]
    hist = np.array([[0, 5, 6], [0, 0, 7], [8, 9, 10], [0, 0, 11]])
    queries = hard_negatives.encode_by_length(retriever, hist, hist)
    np.testing.assert_allclose(queries, encode(hist, hist), rtol=1e-6)
    lengths = (seen[0] != schema.PAD_INDEX).sum(axis=1)
    assert lengths.tolist() == sorted(lengths.tolist())
