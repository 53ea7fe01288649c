"""Turns one user's steps into serialised retrieval and ranking examples for every split."""
from __future__ import annotations

import itertools

import numpy as np

from components import schema
from components.features import tfexample as tfx
from components.features.sequences import VIEW, PopularitySampler, SplitFn, cvr_labels, user_rng
from components.features.vocab import Vocabulary

_LABEL = {1.0: tfx.float_entry(schema.LABEL, 1.0), 0.0: tfx.float_entry(schema.LABEL, 0.0)}


class _EncodedSequence:
    """A sequence's varints concatenated once, so any window [a, t) is one bytes slice."""

    def __init__(self, values: list[int]):
        encoded = tfx.packed_varints(values)
        self._data = b"".join(encoded)
        self._offsets = list(itertools.accumulate(map(len, encoded), initial=0))

    def window(self, start: int, stop: int) -> bytes:
        return self._data[self._offsets[start] : self._offsets[stop]]


def resolve_ranking_task(requested: str, events_by_type: dict[str, int]) -> str:
    """`auto` is cvr when the events hold both views and purchases (a funnel), else next_item."""
    has_funnel = events_by_type.get("view", 0) > 0 and events_by_type.get("purchase", 0) > 0
    if requested == "auto":
        return "cvr" if has_funnel else "next_item"
    if requested not in schema.RANKING_TASKS:
        raise ValueError(f"unknown ranking_task {requested!r}; expected auto or one of {schema.RANKING_TASKS}")
    if requested == "cvr" and not has_funnel:
        raise schema.SchemaError(
            f"ranking_task 'cvr' needs view and purchase events; the events hold {dict(events_by_type)}"
        )
    return requested


def user_examples(
    user_id: str,
    steps: np.ndarray,
    vocab: Vocabulary,
    sampler: PopularitySampler,
    *,
    ranking_task: str,
    max_len: int,
    seed: int,
    split: SplitFn,
) -> dict[tuple[str, str], list[bytes]]:
    """{(kind, split): serialised tf.Examples} for one user (kind: retrieval or ranking).

    Random draws happen in a fixed order from the user's own generator: first the no-click item
    of every step, then one negative per next-item target in split order.
    """
    rng = user_rng(seed, user_id)
    items = vocab.item_of_row[steps["item"]]
    cats = vocab.item_category[items]
    noclick = sampler.sample_excluding(rng, items)
    item_list, cat_list = items.tolist(), cats.tolist()
    hist_items, hist_cats = _EncodedSequence(item_list), _EncodedSequence(cat_list)
    noclick_items = _EncodedSequence(noclick.tolist())
    noclick_cats = _EncodedSequence(vocab.item_category[noclick].tolist())
    user = tfx.int64_entry(schema.USER, vocab.user_index[user_id])

    def history(t: int) -> bytes:
        start = max(0, t - max_len)
        return tfx.int64_list_entry(schema.HIST_ITEMS, hist_items.window(start, t)) + tfx.int64_list_entry(
            schema.HIST_CATS, hist_cats.window(start, t)
        )

    def noclick_history(t: int) -> bytes:
        start = max(0, t - max_len)
        return tfx.int64_list_entry(schema.NOCLICK_ITEMS, noclick_items.window(start, t)) + tfx.int64_list_entry(
            schema.NOCLICK_CATS, noclick_cats.window(start, t)
        )

    def target(item: int) -> bytes:
        return tfx.int64_entry(schema.TARGET_ITEM, item) + tfx.int64_entry(
            schema.TARGET_CAT, int(vocab.item_category[item])
        )

    positions = split(steps)
    out: dict[tuple[str, str], list[bytes]] = {}
    for name in schema.SPLITS:
        records = []
        for t in positions[name].tolist():
            fields = [user, history(t), target(item_list[t])]
            if name != "train":
                seen = b"".join(tfx.varint(i) for i in dict.fromkeys(item_list[:t]))
                fields.append(tfx.int64_list_entry(schema.SEEN_ITEMS, seen))
            records.append(tfx.example(*fields))
        out[(schema.RETRIEVAL_DIR, name)] = records

    if ranking_task == "next_item":
        targets = np.concatenate([items[positions[name]] for name in schema.SPLITS])
        negatives = iter(sampler.sample_excluding(rng, targets).tolist())
        for name in schema.SPLITS:
            records = []
            for t in positions[name].tolist():
                shared = user + history(t) + noclick_history(t)
                records.append(tfx.example(shared, target(item_list[t]), _LABEL[1.0]))
                records.append(tfx.example(shared, target(next(negatives)), _LABEL[0.0]))
            out[(schema.RANKING_DIR, name)] = records
    else:
        flags = steps["flags"]
        for name in schema.SPLITS:
            is_view = (flags[positions[name]] & VIEW) > 0
            viewed = positions[name][is_view]
            labels = cvr_labels(items, flags, positions[name])[is_view].tolist()
            out[(schema.RANKING_DIR, name)] = [
                tfx.example(user, history(t), noclick_history(t), target(item_list[t]), _LABEL[label])
                for t, label in zip(viewed.tolist(), labels)
            ]
    return out
