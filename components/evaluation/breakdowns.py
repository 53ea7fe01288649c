"""Where a model wins or loses: metrics by history length and by target popularity, coverage and
popularity bias of the lists it shows."""

from __future__ import annotations

import numpy as np

from components import metrics, schema

HISTORY_EDGES = (1, 5, 10, 20, 50)  # bucket i holds lengths in [edge_i, edge_i+1)
POPULARITY_BUCKETS = ("head", "torso", "tail")
# new users: at most 2 earlier items; long history: at least 20 (a shop's loyal customers)
SEGMENTS = {"new (1-2 earlier items)": (0, 2), "regular (3-19)": (3, 19), "long history (20+)": (20, None)}
TOP_CATEGORIES = 8  # categories shown by name; the rest are "other"
BREAKDOWN_METRICS = ("hit@20", "ndcg@20")


def history_bucket_labels(lengths: np.ndarray, edges=HISTORY_EDGES) -> np.ndarray:
    """'1-4', '5-9', ... '50+' for each history length (0 counts as the first bucket)."""
    names = [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])] + [f"{edges[-1]}+"]
    index = np.clip(np.searchsorted(edges, np.asarray(lengths), side="right") - 1, 0, len(edges) - 1)
    return np.asarray(names, dtype=object)[index]


def segment_labels(lengths: np.ndarray) -> np.ndarray:
    """The SEGMENTS label of each history length."""
    lengths = np.asarray(lengths)
    labels = np.empty(len(lengths), dtype=object)
    for name, (lo, hi) in SEGMENTS.items():
        labels[(lengths >= lo) & ((lengths <= hi) if hi is not None else True)] = name
    return labels


def category_labels(target_categories: np.ndarray, top: int = TOP_CATEGORIES) -> tuple[np.ndarray, list[str]]:
    """Each test target's category, the `top` most frequent by name and the rest as "other"; and the order
    (most frequent first, "other" last)."""
    names, counts = np.unique(np.asarray(target_categories, dtype=str), return_counts=True)
    order = [str(n) for n in names[np.lexsort((names, -counts))]]
    shown = order[:top]
    labels = np.where(np.isin(np.asarray(target_categories, dtype=str), shown), target_categories, "other").astype(
        object
    )
    return labels, shown + (["other"] if len(order) > top else [])


def item_popularity_buckets(popularity: np.ndarray) -> np.ndarray:
    """head / torso / tail for every item index: the most popular items that together make the
    first third of training occurrences are the head, the next third the torso, the rest (and
    items never seen in training) the tail. Equal thirds of traffic keep each bucket's sample
    of test targets comparable in size."""
    popularity = np.asarray(popularity, dtype=np.float64).copy()
    popularity[: schema.NUM_RESERVED] = 0
    order = np.argsort(-popularity, kind="stable")
    total = popularity.sum()
    share_before = (np.cumsum(popularity[order]) - popularity[order]) / total if total > 0 else np.ones(len(order))
    bucket = np.full(len(popularity), "tail", dtype=object)
    bucket[order[share_before < 2 / 3]] = "torso"
    bucket[order[share_before < 1 / 3]] = "head"
    bucket[popularity == 0] = "tail"
    return bucket


def breakdown(per_model_ranks: dict[str, metrics.Ranks], labels: np.ndarray, order=None) -> dict[str, dict]:
    """{bucket: {"users": n, model: {metric: mean}}} over the users in each bucket."""
    per_user = {name: metrics.per_user_metrics(ranks, (20,)) for name, ranks in per_model_ranks.items()}
    buckets = order or sorted(set(labels.tolist()), key=_bucket_sort_key)
    out = {}
    for bucket in buckets:
        members = labels == bucket
        if not members.any():
            continue
        entry = {"users": int(members.sum())}
        for name, values in per_user.items():
            entry[name] = {m: float(values[m][members].mean()) for m in BREAKDOWN_METRICS}
        out[bucket] = entry
    return out


def _bucket_sort_key(label: str):
    head = label.split("-")[0].rstrip("+")
    return (0, int(head)) if head.isdigit() else (1, label)


def list_statistics(
    lists: np.ndarray, popularity: np.ndarray, item_bucket: np.ndarray, k: int = 20
) -> dict[str, float]:
    """Catalogue coverage and popularity bias of the top-k lists.

    coverage@k: share of the catalogue shown to at least one user. arp@k: average training
    popularity of the shown items (Abdollahpouri et al.'s ARP). tail_share@k: share of shown slots
    that hold tail items.
    """
    shown = lists[:, :k]
    shown = shown[shown >= schema.NUM_RESERVED]
    catalogue = len(popularity) - schema.NUM_RESERVED
    if not len(shown):
        return {f"coverage@{k}": 0.0, f"arp@{k}": 0.0, f"tail_share@{k}": 0.0}
    return {
        f"coverage@{k}": float(len(np.unique(shown)) / catalogue),
        f"arp@{k}": float(np.mean(popularity[shown])),
        f"tail_share@{k}": float(np.mean(item_bucket[shown] == "tail")),
    }
