"""The per-user code of features v2 (main c2d3940), kept as the specification that the block code must equal:
the example encoder (examples.BlockEncoder equals it record for record), the event sort (sequences.block_events)
and the vocabulary counts (VocabCounts.add_block). One user at a time, one map entry at a time, readable and slow
(about 20 us per example). Only the tests use it."""

from __future__ import annotations

import itertools

import numpy as np

from components import schema
from components.features import tfexample as tfx
from components.features.examples import step_behaviour
from components.features.sequences import VIEW, PopularitySampler, SplitFn, cvr_labels, user_rng
from components.features.vocab import VocabCounts, Vocabulary

_LABEL = {1.0: tfx.float_entry(schema.LABEL, 1.0), 0.0: tfx.float_entry(schema.LABEL, 0.0)}


def sort_user_events(parts) -> np.ndarray:
    """One user's events, from any number of partial batches, in time order (ties: seq, item, type)."""
    return np.sort(np.concatenate(list(parts)), order=["ts", "seq", "item", "type"])


def add_user_counts(counts: VocabCounts, user_id: str, items: np.ndarray, train_items: np.ndarray) -> None:
    """Adds one user's step items and train-target items (catalogue rows) to `counts`, in place."""
    needed = max(len(counts.item_steps), int(items.max()) + 1 if len(items) else 0)
    counts.item_steps = np.pad(counts.item_steps, (0, needed - len(counts.item_steps)))
    counts.item_train_targets = np.pad(counts.item_train_targets, (0, needed - len(counts.item_train_targets)))
    np.add.at(counts.item_steps, items, 1)
    np.add.at(counts.item_train_targets, train_items, 1)
    counts.user_steps.append((user_id, len(items)))


class _EncodedSequence:
    """A sequence's varints concatenated once, so any window [a, t) is one bytes slice."""

    def __init__(self, values: list[int], signed: bool = False):
        encoded = tfx.packed_signed_varints(values) if signed else tfx.packed_varints(values)
        self._data = b"".join(encoded)
        self._offsets = list(itertools.accumulate(map(len, encoded), initial=0))

    def window(self, start: int, stop: int) -> bytes:
        return self._data[self._offsets[start] : self._offsets[stop]]


_HIST_ITEMS = tfx.Int64ListKey(schema.HIST_ITEMS)
_HIST_CATS = tfx.Int64ListKey(schema.HIST_CATS)
_HIST_TYPES = tfx.Int64ListKey(schema.HIST_TYPES)
_HIST_GAPS = tfx.Int64ListKey(schema.HIST_GAPS)
_TARGET_GAP = tfx.Int64ListKey(schema.TARGET_GAP)
_TARGET_TYPE = tfx.Int64ListKey(schema.TARGET_TYPE)
_TARGET_TS = tfx.Int64ListKey(schema.TARGET_TS)
_NOCLICK_ITEMS = tfx.Int64ListKey(schema.NOCLICK_ITEMS)
_NOCLICK_CATS = tfx.Int64ListKey(schema.NOCLICK_CATS)
_SEEN_ITEMS = tfx.Int64ListKey(schema.SEEN_ITEMS)
_USER = tfx.Int64ListKey(schema.USER)
_TARGET_ITEM = tfx.Int64ListKey(schema.TARGET_ITEM)
_TARGET_CAT = tfx.Int64ListKey(schema.TARGET_CAT)


class TargetEntries:
    """The target_item + target_cat entries of each item, encoded once per item and reused."""

    def __init__(self, item_category: np.ndarray):
        self._item_category = item_category
        self._cache: dict[int, bytes] = {}

    def __call__(self, item: int) -> bytes:
        entry = self._cache.get(item)
        if entry is None:
            entry = _TARGET_ITEM.scalar(item) + _TARGET_CAT.scalar(int(self._item_category[item]))
            self._cache[item] = entry
        return entry


def reference_user_examples(
    user_id: str,
    steps: np.ndarray,
    vocab: Vocabulary,
    sampler: PopularitySampler,
    *,
    ranking_task: str,
    max_len: int,
    seed: int,
    split: SplitFn,
    targets: TargetEntries | None = None,
) -> dict[tuple[str, str], list[bytes]]:
    """{(kind, split): serialised tf.Examples} for one user (kind: retrieval or ranking).

    Random draws happen in a fixed order from the user's own generator: first the no-click item
    of every step, then one negative per next-item target in split order. Every example carries the history's
    event types and gaps step by step, and the gap from its last step to the target (the request); the next-item
    negative shares its positive's, as it shares its history.
    """
    targets = targets or TargetEntries(vocab.item_category)
    rng = user_rng(seed, user_id)
    items = vocab.item_of_row[steps["item"]]
    noclick = sampler.sample_excluding(rng, items)
    item_list = items.tolist()
    hist_items = _EncodedSequence(item_list)
    hist_cats = _EncodedSequence(vocab.item_category[items].tolist())
    noclick_items = _EncodedSequence(noclick.tolist())
    noclick_cats = _EncodedSequence(vocab.item_category[noclick].tolist())
    types, gaps, seconds = step_behaviour(steps)
    hist_types = _EncodedSequence(types.tolist())
    hist_gaps = _EncodedSequence(gaps.tolist(), signed=True)
    user = _USER.scalar(vocab.user_index[user_id])
    positions = split(steps)
    if ranking_task == "next_item":
        all_targets = np.concatenate([items[positions[name]] for name in schema.SPLITS])
        negatives = iter(sampler.sample_excluding(rng, all_targets).tolist())
        labels = None
    else:
        negatives, labels = None, _cvr_labels_by_position(items, steps["flags"], positions)

    out: dict[tuple[str, str], list[bytes]] = {}
    for name in schema.SPLITS:
        retrieval, ranking = [], []
        for t in positions[name].tolist():
            start = max(0, t - max_len)
            history = b"".join(
                (
                    user,
                    _HIST_ITEMS.entry(hist_items.window(start, t)),
                    _HIST_CATS.entry(hist_cats.window(start, t)),
                    _HIST_TYPES.entry(hist_types.window(start, t)),
                    _HIST_GAPS.entry(hist_gaps.window(start, t)),
                    _TARGET_GAP.scalar(int(gaps[t])),
                )
            )
            target = targets(item_list[t])
            if name == "train":
                retrieval.append(tfx.example(history, target))
            else:
                seen = b"".join(tfx.varint(i) for i in dict.fromkeys(item_list[:t]))
                held_out = _TARGET_TYPE.scalar(int(types[t])) + _TARGET_TS.scalar(int(seconds[t]))
                retrieval.append(tfx.example(history, target, _SEEN_ITEMS.entry(seen), held_out))
            if labels is not None and t not in labels:
                continue  # cvr: only viewed steps are ranking rows
            shared = (
                history
                + _NOCLICK_ITEMS.entry(noclick_items.window(start, t))
                + _NOCLICK_CATS.entry(noclick_cats.window(start, t))
            )
            if negatives is not None:
                ranking.append(tfx.example(shared, target, _LABEL[1.0]))
                ranking.append(tfx.example(shared, targets(next(negatives)), _LABEL[0.0]))
            else:
                ranking.append(tfx.example(shared, target, _LABEL[labels[t]]))
        out[(schema.RETRIEVAL_DIR, name)] = retrieval
        out[(schema.RANKING_DIR, name)] = ranking
    return out


def _cvr_labels_by_position(items: np.ndarray, flags: np.ndarray, positions: dict[str, np.ndarray]) -> dict[int, float]:
    """{position: label} for the viewed target positions of every split."""
    labels = {}
    for name in schema.SPLITS:
        is_view = (flags[positions[name]] & VIEW) > 0
        viewed = positions[name][is_view].tolist()
        labels.update(zip(viewed, cvr_labels(items, flags, positions[name])[is_view].tolist()))
    return labels
