import numpy as np
import pytest

from components.serving import funnel
from serving.doubles import BiasRanker, MeanRetriever, random_models

NUM_ITEMS = 40


def reference_lists(retriever, ranker, hist, seen, allowed, n, k):
    """The funnel written out one user at a time, the obvious way."""
    out = []
    for row, items in zip(hist, seen):
        query = retriever.encode(row[None, :], row[None, :])[0]
        banned = set(row.tolist()) | set(items.tolist())
        candidates = [i for i in range(NUM_ITEMS) if allowed[i] and i not in banned]
        candidates.sort(key=lambda i: (-float(query @ retriever.item_embeddings[i]), i))
        candidates = candidates[:n]
        candidates.sort(key=lambda i: -float(ranker.item_bias[i]))  # stable: ties keep retrieval order
        out.append(candidates[:k])
    return out


@pytest.fixture
def users():
    rng = np.random.default_rng(1)
    hist = np.zeros((25, 6), dtype=np.int64)
    for row in hist:
        length = rng.integers(1, 7)
        row[6 - length :] = rng.integers(2, NUM_ITEMS, size=length)
    seen = [np.unique(np.append(h[h > 0], rng.integers(2, NUM_ITEMS, size=3))) for h in hist]
    return hist, seen


def test_funnel_matches_a_per_user_reference(users):
    hist, seen = users
    retriever, ranker = random_models(NUM_ITEMS)
    available = np.random.default_rng(2).random(NUM_ITEMS) > 0.2
    allowed = funnel.allowed_items(NUM_ITEMS, available)
    result = funnel.run_funnel(retriever, ranker, hist, seen, candidates_n=12, top_k=5, available=available)
    expected = reference_lists(retriever, ranker, hist, seen, allowed, 12, 5)
    assert result.items.tolist() == expected
    assert np.array_equal(result.scores, ranker.item_bias[result.items])
    assert not result.fallback.any() and set(result.sources) == {"funnel"}


def test_never_recommends_seen_reserved_or_unavailable_items(users):
    hist, seen = users
    retriever, ranker = random_models(NUM_ITEMS, seed=3)
    available = np.ones(NUM_ITEMS, dtype=bool)
    available[[5, 7, 11, 13]] = False
    # Make the unavailable and reserved items the retriever's and ranker's favourites.
    retriever.item_embeddings[[0, 1, 5, 7, 11, 13]] *= 50
    ranker.item_bias[[0, 1, 5, 7, 11, 13]] = 100
    result = funnel.run_funnel(retriever, ranker, hist, seen, candidates_n=20, top_k=10, available=available)
    for row, items in enumerate(result.items):
        assert not set(items.tolist()) & ({0, 1, 5, 7, 11, 13} | set(hist[row].tolist()) | set(seen[row].tolist()))
        assert len(set(items.tolist())) == 10


def test_mask_seen_keeps_the_given_item_unless_it_is_reserved_or_unavailable():
    scores = np.arange(12, dtype=np.float32).reshape(2, 6)
    scores[1, 4] = -np.inf  # unavailable
    hist = np.array([[0, 3, 4], [2, 4, 5]])
    funnel.mask_seen(scores, hist, [np.array([2]), np.array([3])], keep=np.array([3, 4]))
    assert np.isinf(scores[0, [0, 2, 4]]).all() and scores[0, 3] == 3
    assert np.isinf(scores[1, [2, 3, 4, 5]]).all()
    funnel.mask_seen(scores, hist, None, keep=np.array([0, 1]))
    assert np.isinf(scores[0, 0])


def test_availability_can_be_left_unmasked_for_evaluation(users):
    hist, seen = users
    retriever, ranker = random_models(NUM_ITEMS, seed=4)
    available = np.zeros(NUM_ITEMS, dtype=bool)  # nothing available: only evaluation may ignore that
    result = funnel.run_funnel(retriever, ranker, hist, seen, candidates_n=10, top_k=5, available=None)
    assert (result.items >= 2).all()
    masked = funnel.run_funnel(retriever, ranker, hist, seen, candidates_n=10, top_k=5, available=available)
    assert (masked.items == 0).all() and np.isneginf(masked.scores).all()


def test_batching_by_memory_budget_gives_the_same_lists(users):
    hist, seen = users
    retriever, ranker = random_models(NUM_ITEMS, seed=5)
    whole = funnel.run_funnel(retriever, ranker, hist, seen, candidates_n=8, top_k=4)
    tiny_budget = 7 * NUM_ITEMS * 16 / 2**20  # seven users per batch
    batched = funnel.run_funnel(retriever, ranker, hist, seen, candidates_n=8, top_k=4, memory_budget_mb=tiny_budget)
    assert retriever.calls[0] == 25 and retriever.calls[1:] == [7, 7, 7, 4]
    assert np.array_equal(whole.items, batched.items) and np.array_equal(whole.scores, batched.scores)
    sequential = funnel.run_funnel(
        retriever, ranker, hist, seen, candidates_n=8, top_k=4, memory_budget_mb=tiny_budget, overlap_ranker=False
    )
    assert np.array_equal(sequential.items, batched.items) and np.array_equal(sequential.scores, batched.scores)


def test_one_batch_runs_on_the_calling_thread_and_more_overlap_on_a_worker(users, monkeypatch):
    """An online request is one batch: no thread pool is started for it (the overhead was per request)."""
    import threading

    hist, seen = users
    retriever, ranker = random_models(NUM_ITEMS, seed=5)
    threads = []
    score = ranker.score

    def recording_score(*args):
        threads.append(threading.current_thread())
        return score(*args)

    monkeypatch.setattr(ranker, "score", recording_score)
    funnel.run_funnel(retriever, ranker, hist, seen, candidates_n=8, top_k=4)
    assert threads == [threading.current_thread()]
    threads.clear()
    funnel.run_funnel(
        retriever, ranker, hist, seen, candidates_n=8, top_k=4, memory_budget_mb=7 * NUM_ITEMS * 16 / 2**20
    )
    assert len(threads) == 4 and threading.current_thread() not in threads


def test_ranker_sees_every_user_once_with_all_candidates(users):
    hist, seen = users
    retriever, ranker = random_models(NUM_ITEMS, seed=6)
    funnel.run_funnel(retriever, ranker, hist, seen, candidates_n=15, top_k=3)
    assert ranker.calls == [(25, 15)]


def test_users_without_known_history_get_the_popularity_fallback():
    retriever, ranker = random_models(NUM_ITEMS, seed=7)
    hist = np.array([[0, 0, 0], [0, 1, 1], [0, 4, 9]], dtype=np.int64)  # empty, only OOV, known
    seen = [np.empty(0, np.int64), np.array([1]), np.array([3, 4, 9])]
    popularity = np.arange(NUM_ITEMS, dtype=float)  # higher index = more popular
    popularity[0:2] = 1000  # reserved counts must never surface
    available = np.ones(NUM_ITEMS, dtype=bool)
    available[NUM_ITEMS - 1] = False
    result = funnel.run_funnel(
        retriever, ranker, hist, seen, candidates_n=10, top_k=4, available=available, popularity=popularity
    )
    assert result.fallback.tolist() == [True, True, False]
    assert result.sources.tolist() == ["popularity_fallback", "popularity_fallback", "funnel"]
    assert result.items[0].tolist() == [38, 37, 36, 35] == result.items[1].tolist()
    share = popularity[38] / popularity[2:39].sum()
    assert result.scores[0, 0] == pytest.approx(share)
    assert retriever.calls == [1]  # only the user with a known history reached the models


def test_fallback_without_popularity_is_a_clear_error():
    retriever, ranker = random_models(NUM_ITEMS)
    with pytest.raises(ValueError, match="no known history item"):
        funnel.run_funnel(retriever, ranker, np.zeros((2, 3), np.int64), candidates_n=5, top_k=2)


def test_short_catalogue_leaves_empty_slots_marked_pad():
    embeddings = np.eye(5, dtype=np.float32)
    retriever, ranker = MeanRetriever(embeddings), BiasRanker(np.zeros(5), np.array([0, 1, 2, 2, 2]))
    hist = np.array([[0, 2]], dtype=np.int64)
    result = funnel.run_funnel(retriever, ranker, hist, [np.array([3])], candidates_n=5, top_k=3)
    assert result.items.tolist() == [[4, 0, 0]]
    assert np.isneginf(result.scores[0, 1:]).all()


def test_ranker_ties_keep_retrieval_order():
    embeddings = np.array([[0, 0], [0, 0], [1, 0], [0.9, 0], [0.8, 0], [0.7, 0]], dtype=np.float32)
    retriever = MeanRetriever(embeddings)
    ranker = BiasRanker(np.array([0, 0, 0, 0, 1, 0]), np.array([0, 1, 2, 2, 2, 2]))
    result = funnel.run_funnel(retriever, ranker, np.array([[0, 2]]), candidates_n=3, top_k=3)
    assert result.items.tolist() == [[4, 3, 5]]


def test_top_n_breaks_ties_by_lower_index():
    scores = np.array([[1.0, 3.0, 3.0, 2.0, 3.0]], dtype=np.float32)
    idx, vals = funnel.top_n(scores, 3)
    assert idx.tolist() == [[1, 2, 4]] and vals.tolist() == [[3.0, 3.0, 3.0]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"candidates_n": 3, "top_k": 5}, "cannot exceed"),
        ({"candidates_n": 0, "top_k": 0}, "must be positive"),
        ({"candidates_n": 5, "top_k": 2, "hist": np.array([[0, NUM_ITEMS]])}, "outside the model vocabulary"),
        ({"candidates_n": 5, "top_k": 2, "seen": [np.array([-1])]}, "outside the model vocabulary"),
        ({"candidates_n": 5, "top_k": 2, "seen": []}, "seen_items has 0 rows"),
        ({"candidates_n": 5, "top_k": 2, "available": np.ones(3, bool)}, "availability has shape"),
    ],
)
def test_bad_inputs_name_the_problem(kwargs, message):
    retriever, ranker = random_models(NUM_ITEMS)
    hist = kwargs.pop("hist", np.array([[0, 2]]))
    seen = kwargs.pop("seen", None)
    with pytest.raises(ValueError, match=message):
        funnel.run_funnel(retriever, ranker, hist, seen, **kwargs)


def test_non_finite_ranker_scores_are_refused(users):
    hist, seen = users
    retriever, ranker = random_models(NUM_ITEMS)
    ranker.item_bias[:] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        funnel.run_funnel(retriever, ranker, hist, seen, candidates_n=5, top_k=2)


def test_batches_group_users_by_history_length_and_drop_all_padding_columns():
    retriever, ranker = random_models(NUM_ITEMS, seed=8)
    rng = np.random.default_rng(8)
    lengths = np.array([1, 6, 1, 2, 6, 1, 2, 1])
    hist = np.zeros((len(lengths), 6), dtype=np.int64)
    for row, length in zip(hist, lengths):
        row[6 - length :] = rng.choice(np.arange(2, NUM_ITEMS), size=length, replace=False)
    whole = funnel.run_funnel(retriever, ranker, hist, candidates_n=6, top_k=3)
    retriever.widths.clear()
    batched = funnel.run_funnel(
        retriever, ranker, hist, candidates_n=6, top_k=3, memory_budget_mb=4 * NUM_ITEMS * 16 / 2**20
    )
    assert retriever.widths == [1, 6]  # four users of length 1, then lengths 2, 2, 6, 6
    assert np.array_equal(whole.items, batched.items)


CART = 2  # the cart bit of schema.EVENT_TYPES


class CartRanker:
    """Reads the behaviour: a candidate scores its bias, plus 10 when it follows (index + 1) the item of the user's
    most recent step with a cart in it, plus 5 when the request comes within an hour of the last step and the
    candidate follows that step's item. Scores histories cut to their batch's width, as the funnel hands them."""

    def __init__(self, item_bias, item_category):
        self.item_bias, self.item_category = item_bias, item_category

    def favourites(self, hist_items, behaviour):
        carted = np.where(behaviour.types & CART, hist_items, 0)
        last_cart = np.array([row[row > 0][-1] + 1 if (row > 0).any() else -1 for row in carted])
        soon = (behaviour.request_gap >= 0) & (behaviour.request_gap < 3_600)
        return last_cart, np.where(soon, hist_items[:, -1] + 1, -1)

    def score(self, hist_items, hist_cats, cand_items, cand_cats, behaviour=None):
        assert behaviour.types.shape == behaviour.gaps.shape == hist_items.shape
        after_cart, after_last = self.favourites(hist_items, behaviour)
        return (
            self.item_bias[cand_items]
            + 10.0 * (cand_items == after_cart[:, None])
            + 5.0 * (cand_items == after_last[:, None])
        )


def test_the_funnel_hands_each_user_its_own_behaviour_and_orders_by_it(users):
    """Users of every history length, batched by length: each user's list is the one the ranker gives that user's
    own behaviour, the item after the last cart first whenever retrieval found it."""
    hist, seen = users
    rng = np.random.default_rng(5)
    retriever, bias_ranker = random_models(NUM_ITEMS)
    ranker = CartRanker(bias_ranker.item_bias, bias_ranker.item_category)
    types = np.where(hist > 0, rng.choice([1, 1 | CART], hist.shape), 0)
    gaps = np.where(hist > 0, rng.integers(0, 10_000, hist.shape), -1)
    behaviour = funnel.Behaviour(types, gaps, rng.choice([60, 86_400], len(hist)))
    result = funnel.run_funnel(retriever, ranker, hist, seen, candidates_n=30, top_k=5, behaviour=behaviour)
    allowed = funnel.allowed_items(NUM_ITEMS)
    after_cart, after_last = ranker.favourites(hist, behaviour)
    first_after_cart = 0
    for u in range(len(hist)):
        alone = funnel.run_funnel(
            retriever, ranker, hist[[u]], [seen[u]], candidates_n=30, top_k=5, behaviour=behaviour.take([u])
        )
        assert result.items[u].tolist() == alone.items[0].tolist()
        candidates, _, _ = funnel.retrieve_candidates(retriever, hist[[u]], hist[[u]], [seen[u]], allowed, 30)
        if after_cart[u] in candidates[0]:
            assert result.items[u, 0] == after_cart[u]
            first_after_cart += 1
        elif after_last[u] in candidates[0]:
            assert result.items[u, 0] == after_last[u]
    assert first_after_cart >= 5  # the behaviour decided the top of several lists
    with pytest.raises(ValueError, match="behaviour of shape"):
        funnel.run_funnel(retriever, ranker, hist, seen, candidates_n=30, top_k=5, behaviour=behaviour.take([0, 1]))
