"""The new-item baseline: popularity within the category of the user's last item, new items at their category's
mean count."""

import numpy as np

from components.baselines import category_popularity_top_k


def test_new_item_ranks_by_its_category_mean_after_seen_and_unavailable_items_are_removed():
    # indices 2..7; categories: 2,3,4 -> A (10), 5,6,7 -> B (11); item 4 and 7 are new (count 0)
    category = np.array([0, 1, 10, 10, 10, 11, 11, 11])
    counts = np.array([0, 0, 9, 1, 0, 50, 40, 0])
    available = np.array([False, False, True, True, True, True, False, True])
    lists = category_popularity_top_k(np.array([2, 5]), [np.array([2]), np.array([5])], category, counts, available, 3)
    # user in A, item 2 seen: item 4 (new, mean 5) beats item 3 (1), then B's most popular available item 5
    assert lists[0].tolist() == [4, 3, 5]
    # user in B, item 5 seen, 6 unavailable: item 7 (new, mean of 5 and 6 = 45) first, then A by estimate
    assert lists[1].tolist() == [7, 2, 4]
