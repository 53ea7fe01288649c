"""A warm-started ranker's rows: every row its parent did not train on, plus a replay share of the ones it did drawn
from the run's seed; the rows keep their negative lists; a row's key does not depend on the day's vocabularies."""

import numpy as np
import pytest

from components import schema
from components.ranking import warm_start
from components.ranking.base import NEGATIVE_CATS, NEGATIVE_ITEMS
from components.ranking.data import SCALARS, SEQUENCES, RankingData
from components.ranking.training import TrainingSet


def test_every_new_row_is_kept_and_the_replay_share_is_drawn_seeded_from_the_old_rows():
    keys = np.array([11, 12, 13, 14, 15, 16, 17, 18, 19, 20], np.uint64)
    seen = np.array([99, 12, 14, 15, 17, 18, 19, 20], np.uint64)  # 99: a row of the parent's no longer in the window
    new, old = [0, 2, 5], [1, 3, 4, 6, 7, 8, 9]
    rows = warm_start.warm_rows(keys, seen, 0.5, seed=3)
    assert rows.tolist() == sorted(rows.tolist()) and len(set(rows.tolist())) == len(rows)
    assert set(new) <= set(rows.tolist())
    replayed = sorted(set(rows.tolist()) - set(new))
    assert set(replayed) <= set(old) and len(replayed) == round(0.5 * len(old))
    np.testing.assert_array_equal(warm_start.warm_rows(keys, seen, 0.5, seed=3), rows)  # seeded
    draws = {tuple(warm_start.warm_rows(keys, seen, 0.5, seed=s).tolist()) for s in range(10)}
    assert len(draws) > 1  # the seed draws the replay
    assert all(set(new) <= set(d) for d in draws)
    assert warm_start.warm_rows(keys, seen, 1.0, seed=3) is None  # replay 1: every row, as a cold run
    assert warm_start.warm_rows(keys, None, 0.5, seed=3) is None  # a parent that recorded no keys
    assert warm_start.warm_rows(keys, np.array([], np.uint64), 0.2, seed=3).tolist() == list(range(10))
    with pytest.raises(ValueError, match="replay"):
        warm_start.warm_rows(keys, seen, 0.0, seed=3)


def _training_set(rows: int) -> TrainingSet:
    """`rows` rows, row r's history r + 1 steps of item 10 r + k, its negatives (100 + r, 200 + r)."""
    lengths = np.arange(1, rows + 1)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.concatenate([10 * r + np.arange(n) for r, n in enumerate(lengths)]).astype(np.int64)
    scalars = {name: np.arange(rows, dtype=np.int64) + 2 for name in SCALARS}
    scalars[schema.LABEL] = np.ones(rows, np.float32)
    negatives = np.stack([100 + np.arange(rows), 200 + np.arange(rows)], axis=1)
    data = RankingData(
        scalars,
        {name: (values.copy(), offsets.copy()) for name in SEQUENCES},
        lists={NEGATIVE_ITEMS: negatives, NEGATIVE_CATS: negatives + 1},
        pointwise_columns=(True, False, True),
    )
    return TrainingSet(data, statistics=object())  # select_rows never reads them


def test_selected_rows_keep_their_histories_and_negative_lists():
    train_set = _training_set(6)
    chosen = warm_start.select_rows(train_set, np.array([1, 4, 5]))
    data = chosen.data
    assert data.size == 3 and data.pointwise_columns == (True, False, True)
    assert data.scalars[schema.TARGET_ITEM].tolist() == [3, 6, 7]
    np.testing.assert_array_equal(data.lists[NEGATIVE_ITEMS], [[101, 201], [104, 204], [105, 205]])
    np.testing.assert_array_equal(data.lists[NEGATIVE_CATS], [[102, 202], [105, 205], [106, 206]])
    values, offsets = data.sequences[schema.HIST_ITEMS]
    assert [values[offsets[i] : offsets[i + 1]].tolist() for i in range(3)] == [
        [10, 11],
        [40, 41, 42, 43, 44],
        [50, 51, 52, 53, 54, 55],
    ]
    assert chosen.statistics is train_set.statistics  # the context reads the whole split's counts


def test_a_rows_key_is_its_ids_not_its_vocabulary_index(tmp_path):
    day1, day2 = tmp_path / "day1", tmp_path / "day2"
    for directory, users, items in ((day1, ["u1", "u2"], ["a", "b"]), (day2, ["u0", "u2", "u1"], ["c", "b", "a"])):
        schema.write_vocab(directory, schema.USER_VOCAB, users)
        schema.write_vocab(directory, schema.ITEM_VOCAB, items)
        schema.write_vocab(directory, schema.CATEGORY_VOCAB, ["x"])

    def rows(user, item, gap, label):
        scalars = {
            schema.USER: np.array(user),
            schema.TARGET_ITEM: np.array(item),
            schema.TARGET_GAP: np.array(gap),
            schema.LABEL: np.array(label, np.float32),
        }
        return RankingData(scalars, {})

    # day 1: (u1, a, 60 s, bought), (u2, b, 60 s, bought); day 2 the same two under other indices, then
    # u1's a at another gap and u2's b not bought: new rows
    first = warm_start.row_keys(day1, rows([2, 3], [2, 3], [60, 60], [1, 1]))
    second = warm_start.row_keys(day2, rows([4, 3, 4, 3], [4, 3, 4, 3], [60, 60, 61, 60], [1, 1, 1, 0]))
    assert second[:2].tolist() == first.tolist()
    assert not np.isin(second[2:], first).any()
    chosen = warm_start.warm_rows(second, first, 0.5, seed=0).tolist()
    assert len(chosen) == 3 and set(chosen) >= {2, 3}
