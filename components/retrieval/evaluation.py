"""Full-catalogue evaluation (docs/architecture.md, evaluation protocol) of query embeddings against the item embeddings.

The ranking and metric math is components.metrics; this only supplies the score chunks.
"""

from __future__ import annotations

import numpy as np

from components import metrics


def target_ranks(queries: np.ndarray, item_embeddings: np.ndarray, targets: np.ndarray, seen_items) -> metrics.Ranks:
    """Ranks of each user's target among all items by dot product, earlier items and PAD/OOV masked."""
    if len(queries) != len(targets):
        raise ValueError(f"{len(queries)} queries for {len(targets)} targets")
    return metrics.ranks_in_chunks(
        lambda start, stop: queries[start:stop] @ item_embeddings.T, targets, seen_items, len(item_embeddings)
    )


def ranking_report(
    queries: np.ndarray, item_embeddings: np.ndarray, targets: np.ndarray, seen_items
) -> dict[str, float]:
    """HIT@K and NDCG@K (K in 5, 10, 20, 50) and MRR."""
    return metrics.ranking_metrics(target_ranks(queries, item_embeddings, targets, seen_items))
