"""The retrieval weight of the funnel's final score, chosen on the valid split.

The funnel ranks retrieval's top-N by `components.serving.funnel.fuse`: logit(ranker) + w * retrieval score.
w = 0 is the ranker alone; a large w is retrieval's order with the ranker breaking near-ties. w is chosen here,
on valid (never test), by the funnel's NDCG@10 averaged over several N, and stored in ranker.json so that every
caller of the funnel (evaluation, export) uses the same final score.
"""

from __future__ import annotations

import numpy as np

from components import schema
from components.serving import funnel

CANDIDATES_N = (20, 50, 100, 200)
# In units of std(ranker logit) / std(retrieval score) over valid's candidates, so the grid fits any score scale.
# The last entry is retrieval's order with the ranker only breaking ties, so on valid the funnel is never
# chosen worse than retrieval alone when the ranker cannot improve on it (as on the synthetic shop).
RELATIVE_WEIGHTS = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 1e6)
CUTOFF = 10
_USERS_PER_BATCH = 512


def candidate_scores(
    retriever, ranker, hist: np.ndarray, seen, targets: np.ndarray, n: int, behaviour: funnel.Behaviour | None = None
) -> tuple[np.ndarray, ...]:
    """(candidates, ranker probabilities, retrieval scores), each [U, n] (n at most the catalogue), in
    retrieval's order (best first). Users are batched by history length and each batch cut to its longest
    history, as the funnel does; the target is never masked as seen, as in evaluation's protocol. `behaviour`:
    the histories' event types and gaps for the ranker (funnel.Behaviour, None: unknown)."""
    cats = funnel.history_categories(ranker.item_category, hist)
    allowed = funnel.allowed_items(retriever.item_embeddings.shape[0])
    n = min(n, len(allowed))
    out = [
        np.zeros((len(hist), n), np.int64),
        np.zeros((len(hist), n), np.float32),
        np.full((len(hist), n), -np.inf, np.float32),
    ]
    for rows, width in funnel.length_batches(hist, np.arange(len(hist)), _USERS_PER_BATCH):
        h, c = hist[rows, -width:], cats[rows, -width:]
        steps = None if behaviour is None else behaviour.take(rows, width)
        cands, valid, scores = funnel.retrieve_candidates(
            retriever, h, c, [seen[r] for r in rows], allowed, n, keep=targets[rows], behaviour=steps
        )
        probabilities = funnel.ranker_scores(ranker, h, c, cands, ranker.item_category[cands], steps)
        out[0][rows], out[1][rows], out[2][rows] = cands, np.where(valid, probabilities, 0.5), scores
    return tuple(out)


def target_ranks(fused: np.ndarray, target_column: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target column under `fused` (ties: retrieval order, as rerank's stable sort);
    -1 where the target is not among the candidates."""
    rows = np.arange(len(fused))
    found = target_column >= 0
    target_score = fused[rows, np.maximum(target_column, 0)][:, None]
    columns = np.arange(fused.shape[1])[None, :]
    ranks = (fused > target_score).sum(axis=1) + ((fused == target_score) & (columns < target_column[:, None])).sum(
        axis=1
    )
    return np.where(found, ranks, -1)


def hit_ndcg(ranks: np.ndarray, k: int = CUTOFF) -> tuple[float, float]:
    inside = (ranks >= 0) & (ranks < k)
    return float(inside.mean()), float(np.where(inside, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0).mean())


def target_moves(ranks: np.ndarray, retrieval_ranks: np.ndarray) -> dict:
    """How often re-ranking moved the target up, down or not at all from its retrieval rank (found targets only)."""
    found = retrieval_ranks >= 0
    return {
        "up": int((ranks[found] < retrieval_ranks[found]).sum()),
        "down": int((ranks[found] > retrieval_ranks[found]).sum()),
        "same": int((ranks[found] == retrieval_ranks[found]).sum()),
    }


def weight_grid(probabilities: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Absolute weights: RELATIVE_WEIGHTS scaled by the spread of the two scores over real candidates."""
    real = np.isfinite(scores)
    logits = funnel.fuse(probabilities[real], np.zeros(int(real.sum())), 0.0)
    spread = float(np.std(scores[real]))
    scale = float(np.std(logits)) / spread if spread > 0 else 0.0
    return np.asarray(RELATIVE_WEIGHTS) * scale


def choose_weight(
    candidates: np.ndarray,
    probabilities: np.ndarray,
    scores: np.ndarray,
    targets: np.ndarray,
    candidates_n=CANDIDATES_N,
) -> dict:
    """The weight with the best NDCG@10 averaged over `candidates_n` (ties: the smaller weight), with the
    valid figures of every weight and of retrieval alone."""
    hits = candidates == targets[:, None]
    table = []
    for weight in weight_grid(probabilities, scores):
        row = {"retrieval_weight": float(weight)}
        for n in candidates_n:
            column = np.where(hits[:, :n].any(axis=1), hits[:, :n].argmax(axis=1), -1)
            fused = funnel.fuse(probabilities[:, :n], np.where(np.isfinite(scores[:, :n]), scores[:, :n], 0.0), weight)
            fused = np.where(np.isfinite(scores[:, :n]), fused, -np.inf)
            ranks = target_ranks(fused, column)
            row[f"n{n}"] = {
                **dict(zip((f"hit@{CUTOFF}", f"ndcg@{CUTOFF}"), hit_ndcg(ranks))),
                "moves": target_moves(ranks, column),
            }
        row["mean_ndcg"] = float(np.mean([row[f"n{n}"][f"ndcg@{CUTOFF}"] for n in candidates_n]))
        table.append(row)
    best = max(table, key=lambda row: (row["mean_ndcg"], -row["retrieval_weight"]))
    first = np.where(hits.any(axis=1), hits.argmax(axis=1), -1)
    retrieval = dict(zip((f"hit@{CUTOFF}", f"ndcg@{CUTOFF}"), hit_ndcg(first)))
    return {
        "retrieval_weight": best["retrieval_weight"],
        "chosen_on": "valid",
        "valid_retrieval_alone": retrieval,
        "valid_by_weight": table,
    }


def split_rows(features_dir: str, split: str, max_users: int = 0):
    """(histories, seen items, targets, behaviour) of the split's users with a known history item: the users the
    fusion weight is chosen on (the others get the fallback, not the funnel). With `max_users`, of the users whose ids
    hash lowest (metrics.sample_users), as retrieval's selection on valid samples them; only their rows are read."""
    from components.features import reader

    spec = schema.FeatureSpec.read(features_dir)
    ids = schema.indexed_vocab(features_dir, schema.USER_VOCAB)
    examples = reader.load_sample(features_dir, schema.RETRIEVAL_DIR, split, ids, max_users)
    hist = reader.pad_left(examples[schema.HIST_ITEMS], spec.max_len)
    known = ~funnel.needs_fallback(hist)
    seen = [examples[schema.SEEN_ITEMS][r] for r in np.flatnonzero(known)]
    targets = examples[schema.TARGET_ITEM][known].astype(np.int64)
    behaviour = funnel.Behaviour.of_examples(examples, spec.max_len).take(known)
    return hist[known], seen, targets, behaviour


def choose_on_split(retriever, ranker, features_dir: str, split: str = "valid", candidates_n=CANDIDATES_N) -> dict:
    """Reads `split` of the features output and chooses the weight there (users with a known history item): on the
    sample of valid users the retrieval model was selected on (its config's valid_max_users; 0 = every user), as
    each user costs a full-catalogue retrieval and the ranker on max(candidates_n) candidates."""
    max_users = int(getattr(getattr(retriever, "config", None), "valid_max_users", 0) or 0)
    hist, seen, targets, behaviour = split_rows(features_dir, split, max_users)
    candidates, probabilities, scores = candidate_scores(
        retriever, ranker, hist, seen, targets, max(candidates_n), behaviour
    )
    return {**choose_weight(candidates, probabilities, scores, targets, candidates_n), "valid_users": len(targets)}
