"""Similar items: for every catalogue item, its nearest items by cosine of the candidate embeddings.

Used for out-of-stock replacement and "more like this", so every item gets a list (unavailable ones
too: they are the ones that need a replacement), but only available items are ever suggested.
"""

from __future__ import annotations

import numpy as np

from components import schema
from components.serving import funnel


def similar_items(
    embeddings: np.ndarray, available: np.ndarray, k: int, memory_budget_mb: float = 256.0
) -> tuple[np.ndarray, np.ndarray]:
    """int64 [num_items, k] neighbour indices and float32 cosines; rows 0 and 1 and missing slots hold PAD.

    Excludes the item itself, reserved indices and unavailable items; ties go to the lower index.
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    embeddings = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = np.divide(embeddings, norms, out=np.zeros_like(embeddings), where=norms > 0)
    allowed = funnel.allowed_items(len(embeddings), available)
    items = np.full((len(embeddings), k), schema.PAD_INDEX, dtype=np.int64)
    scores = np.full((len(embeddings), k), -np.inf, dtype=np.float32)
    batch = funnel.batch_size_for(len(embeddings), memory_budget_mb)
    for start in range(schema.NUM_RESERVED, len(embeddings), batch):
        rows = np.arange(start, min(start + batch, len(embeddings)))
        cosine = unit[rows] @ unit.T
        cosine[:, ~allowed] = -np.inf
        cosine[np.arange(len(rows)), rows] = -np.inf
        top, top_scores = funnel.top_n(cosine, k)
        items[rows, : top.shape[1]] = np.where(np.isfinite(top_scores), top, schema.PAD_INDEX)
        scores[rows, : top.shape[1]] = top_scores
    return items, scores
