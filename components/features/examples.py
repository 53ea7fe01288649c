"""Turns users' steps into serialised retrieval and ranking examples for every split, a block of users at once.

Python costs about a microsecond per operation, and the features job writes one to two examples per event, each
a dozen map entries. So the examples of a whole block of users are built with NumPy: every sequence of the block
(items, categories, event types, gaps, times, no-click items and categories, first-seen items) is varint-encoded
once into one byte array; an example is then a list of byte ranges (its header, and per entry a header looked up
by payload length plus the payload, a window of a sequence), and one gather copies every range of a few thousand
examples at once. Only the per-user random draws (user_rng, so that a user's draws never depend on the block) and
the slicing of the finished records remain per user or per example in Python.
"""

from __future__ import annotations

import numpy as np

from components import schema
from components.features import tfexample as tfx
from components.features.sequences import CAPPED, PURCHASE, VIEW, PopularitySampler, SplitFn, user_rng
from components.features.vocab import Vocabulary

_LABEL = {1.0: tfx.float_entry(schema.LABEL, 1.0), 0.0: tfx.float_entry(schema.LABEL, 0.0)}


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


_USER = tfx.Int64ListKey(schema.USER)
_TARGET_ITEM = tfx.Int64ListKey(schema.TARGET_ITEM)
_TARGET_CAT = tfx.Int64ListKey(schema.TARGET_CAT)
_KEY_OF = {
    "items": schema.HIST_ITEMS,
    "cats": schema.HIST_CATS,
    "types": schema.HIST_TYPES,
    "gaps": schema.HIST_GAPS,
    "noclick_items": schema.NOCLICK_ITEMS,
    "noclick_cats": schema.NOCLICK_CATS,
}
_LIST_KEYS = (*_KEY_OF.values(), schema.TARGET_GAP, schema.SEEN_ITEMS, schema.TARGET_TYPE, schema.TARGET_TS)

US_PER_SECOND = 1_000_000
GATHER_RECORDS = 2048  # records per gather: its index arrays stay in cache (a 10x larger gather is 3x slower)


def step_behaviour(steps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per step: its event-type flags, the seconds since the step before (schema.NO_GAP for the first) and its
    time in seconds since the epoch. Step t's values depend on steps t-1 and t only: no step sees its future."""
    return _behaviour(steps, np.zeros(1, np.int64))


def _behaviour(steps: np.ndarray, user_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """step_behaviour over the concatenated steps of several users (each user's first step at user_starts)."""
    ts = steps["ts"].astype(np.int64)
    gaps = np.empty(len(steps), np.int64)
    gaps[1:] = np.diff(ts) // US_PER_SECOND
    gaps[user_starts[user_starts < len(steps)]] = schema.NO_GAP
    return steps["flags"].astype(np.int64), gaps, ts // US_PER_SECOND


class _Source:
    """Named uint8 arrays laid end to end; a range is (name, offset within it, size)."""

    def __init__(self):
        self._parts: dict[str, np.ndarray] = {}

    def add(self, name: str, data: np.ndarray) -> None:
        self._parts[name] = data

    def build(self) -> tuple[np.ndarray, dict[str, int]]:
        bases, start = {}, 0
        for name, data in self._parts.items():
            bases[name] = start
            start += len(data)
        return np.concatenate(list(self._parts.values())), bases


class _Layout:
    """The byte ranges of a set of records, part by part: parts[k] = (source name, offsets, sizes)."""

    def __init__(self, count: int):
        self.count = count
        self.parts: list[tuple[str, np.ndarray, np.ndarray]] = []

    def add(self, name: str, offsets, sizes) -> None:
        """offsets and sizes: one per record, or one for all."""
        self.parts.append((name, np.asarray(offsets, np.int64), np.asarray(sizes, np.int64)))

    def body_sizes(self) -> np.ndarray:
        total = np.zeros(self.count, np.int64)
        for _, _, sizes in self.parts:
            total += sizes
        return total


class BlockEncoder:
    """Serialises the examples of blocks of users for one vocabulary and ranking task (see the module's doc).

    Random draws happen in a fixed order from each user's own generator: first the no-click item of every step,
    then one negative per next-item target in split order. Every example carries the history's event types and
    gaps step by step, and the gap from its last step to the target (the request); the next-item negative shares
    its positive's, as it shares its history. encode(users, steps) gives each user's examples in turn, framed."""

    def __init__(
        self,
        vocab: Vocabulary,
        sampler: PopularitySampler,
        *,
        ranking_task: str,
        max_len: int,
        seed: int,
        split: SplitFn,
    ):
        self._vocab, self._sampler = vocab, sampler
        self._task, self._max_len, self._seed, self._split = ranking_task, max_len, seed, split
        self._headers = {key: tfx.LengthTable(tfx.Int64ListKey(key).header) for key in _LIST_KEYS}
        self._tables = {"prefix": tfx.LengthTable(tfx.example_prefix), "frame": tfx.LengthTable(tfx.frame_head)}
        entries = [_target_entry(vocab, item) for item in range(vocab.num_items)]
        self._targets = np.frombuffer(b"".join(entries), np.uint8)
        self._target_offsets = np.cumsum([0] + [len(e) for e in entries])
        self._labels = np.frombuffer(_LABEL[0.0] + _LABEL[1.0], np.uint8)
        self._label_size = len(_LABEL[0.0])

    def encode(
        self, users: list[str], steps_list: list[np.ndarray]
    ) -> tuple[dict[tuple[str, str], tuple[bytes, int]], dict]:
        """{(kind, split): (the serialised tf.Examples of every user in turn, TFRecord-framed; their number)} and the
        capped counts of the block."""
        sizes = np.array([len(s) for s in steps_list], np.int64)
        return self.encode_rows(users, np.concatenate(steps_list), np.concatenate([[0], np.cumsum(sizes)]))

    def encode_rows(
        self, users: list[str], steps: np.ndarray, starts: np.ndarray
    ) -> tuple[dict[tuple[str, str], tuple[bytes, int]], dict]:
        """encode, for the users' steps end to end (user u's are steps[starts[u]:starts[u + 1]])."""
        vocab, sampler = self._vocab, self._sampler
        starts = np.asarray(starts, np.int64)
        sizes = np.diff(starts)
        items = vocab.item_of_row[steps["item"]]
        positions: dict[str, list[np.ndarray]] = {name: [] for name in schema.SPLITS}
        capped = {"capped/users": 0, "capped/train_targets": 0}
        next_item = self._task == "next_item"
        uniforms, negative_uniforms, picks = [], [], []
        for u, user_id in enumerate(users):
            a, b = int(starts[u]), int(starts[u + 1])
            rng = user_rng(self._seed, user_id)
            uniforms.append(rng.random(b - a))
            picked = self._split(steps[a:b])
            picks.append(picked)
            if len(picked.get(CAPPED, ())):
                capped["capped/users"] += 1
                capped["capped/train_targets"] += len(picked[CAPPED])
            for name in schema.SPLITS:
                positions[name].append(picked[name] + a)
            if next_item:
                negative_uniforms.append(rng.random(sum(len(picked[n]) for n in schema.SPLITS)))
        # sampler.sample_excluding's draws for every user at once, from the uniforms each user's generator gave; a
        # user whose draw needs the generator again (an excluded item holding all the mass) is drawn alone
        noclick, stuck = sampler.from_uniforms(_concat(uniforms, np.float64), items)
        if next_item:
            targets = np.concatenate([items[positions[n][u]] for u in range(len(users)) for n in schema.SPLITS])
            drawn, stuck_negative = sampler.from_uniforms(_concat(negative_uniforms, np.float64), targets)
            target_starts = np.concatenate([[0], np.cumsum([len(x) for x in negative_uniforms])]).astype(np.int64)
            user_of_target = np.repeat(np.arange(len(users)), np.diff(target_starts))
            redo = np.union1d(np.repeat(np.arange(len(users)), sizes)[stuck], user_of_target[stuck_negative])
        else:
            redo = np.unique(np.repeat(np.arange(len(users)), sizes)[stuck])
        for u in redo.tolist():
            a, b = int(starts[u]), int(starts[u + 1])
            rng = user_rng(self._seed, users[u])
            noclick[a:b] = sampler.sample_excluding(rng, items[a:b])
            if next_item:
                mine = np.concatenate([items[picks[u][n] + a] for n in schema.SPLITS])
                drawn[target_starts[u] : target_starts[u + 1]] = sampler.sample_excluding(rng, mine)
        negatives: dict[str, list[np.ndarray]] = {name: [] for name in schema.SPLITS}
        if next_item:
            for u in range(len(users)):
                cuts = np.cumsum([len(picks[u][n]) for n in schema.SPLITS])[:-1]
                mine = drawn[target_starts[u] : target_starts[u + 1]]
                for name, part in zip(schema.SPLITS, np.split(mine, cuts)):
                    negatives[name].append(part)
        types, gaps, seconds = _behaviour(steps, starts[:-1])
        user_of_step = np.repeat(np.arange(len(users)), sizes)
        firsts = _first_seen(user_of_step, items)
        source = _Source()
        seqs = {}
        for name, values in (
            ("items", items),
            ("cats", vocab.item_category[items]),
            ("types", types),
            ("gaps", gaps),
            ("seconds", seconds),
            ("noclick_items", noclick),
            ("noclick_cats", vocab.item_category[noclick]),
            ("seen", items[firsts]),
        ):
            data, offsets = tfx.varints(values)
            source.add(name, data)
            seqs[name] = offsets
        user_entries = [_USER.scalar(vocab.user_index[u]) for u in users]
        source.add("users", np.frombuffer(b"".join(user_entries), np.uint8))
        user_offsets = np.cumsum([0] + [len(e) for e in user_entries])
        source.add("targets", self._targets)
        source.add("labels", self._labels)

        layouts = {}
        for name in schema.SPLITS:
            at = np.concatenate(positions[name]) if positions[name] else np.zeros(0, np.int64)
            at = at.astype(np.int64)
            user = user_of_step[at]
            begin = np.maximum(starts[user], at - self._max_len)
            window = {key: (seqs[key][begin], seqs[key][at]) for key in ("items", "cats", "types", "gaps")}
            history = [
                ("users", user_offsets[user], np.diff(user_offsets)[user], None),
                *((_KEY_OF[key], *_span(*window[key]), key) for key in ("items", "cats", "types", "gaps")),
                (schema.TARGET_GAP, *_span(seqs["gaps"][at], seqs["gaps"][at + 1]), "gaps"),
            ]
            retrieval = list(history)
            if name != "train":
                seen_begin = np.searchsorted(firsts, starts[user])
                seen_end = np.searchsorted(firsts, at)
                retrieval += [
                    (schema.SEEN_ITEMS, *_span(seqs["seen"][seen_begin], seqs["seen"][seen_end]), "seen"),
                    (schema.TARGET_TYPE, *_span(seqs["types"][at], seqs["types"][at + 1]), "types"),
                    (schema.TARGET_TS, *_span(seqs["seconds"][at], seqs["seconds"][at + 1]), "seconds"),
                ]
            target = self._target_ranges(items[at])
            layouts[(schema.RETRIEVAL_DIR, name)] = self._layout(len(at), retrieval[:6] + [target] + retrieval[6:])
            noclick_window = [
                (_KEY_OF[key], *_span(seqs[key][begin], seqs[key][at]), key)
                for key in ("noclick_items", "noclick_cats")
            ]
            shared = history + noclick_window
            if self._task == "next_item":
                negative = np.concatenate(negatives[name]) if negatives[name] else np.zeros(0, np.int64)
                rows = np.repeat(np.arange(len(at)), 2)  # each positive followed by its negative
                both = np.empty(2 * len(at), np.int64)
                both[0::2], both[1::2] = items[at], negative
                label = np.tile([1, 0], len(at))
            else:
                label, viewed = _cvr_labels(user, items[at], steps["flags"][at])
                rows = np.flatnonzero(viewed)
                both, label = items[at][rows], label[rows]
            ranking = [(key, offsets[rows], sizes[rows], src) for key, offsets, sizes, src in shared]
            ranking += [
                self._target_ranges(both),
                ("labels", label.astype(np.int64) * self._label_size, self._label_size, None),
            ]
            layouts[(schema.RANKING_DIR, name)] = self._layout(len(rows), ranking)

        for layout in layouts.values():
            longest = int(layout.body_sizes().max(initial=0))
            self._tables["prefix"].ensure(longest)
            self._tables["frame"].ensure(longest + 16)  # the prefix of a body of n bytes is at most 11 bytes
        for key, table in self._headers.items():
            source.add(f"header:{key}", table.data)
        for name, table in self._tables.items():
            source.add(name, table.data)
        source.add("crc", np.zeros(4, np.uint8))
        data, bases = source.build()
        framed = {where: _gather(data, bases, layout, self._tables) for where, layout in layouts.items()}
        return {where: (framed[where], layout.count) for where, layout in layouts.items()}, capped

    def _target_ranges(self, targets: np.ndarray):
        offsets = self._target_offsets
        return ("targets", offsets[targets], offsets[targets + 1] - offsets[targets], None)

    def _layout(self, count: int, parts) -> _Layout:
        """parts: (source, offsets, sizes, None) for a ready-made range, or (key, offsets, sizes, sequence) for
        a list entry: its header (by the payload's size) then the payload, a range of that sequence's bytes."""
        layout = _Layout(count)
        for key, offsets, sizes, sequence in parts:
            if sequence is None:
                layout.add(key, offsets, sizes)
                continue
            table = self._headers[key]
            table.ensure(int(np.max(sizes, initial=0)))
            layout.add(f"header:{key}", table.offsets[sizes], np.diff(table.offsets)[sizes])
            layout.add(sequence, offsets, sizes)
        return layout


def _concat(arrays: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype)


def _span(begin: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return begin, end - begin


def _target_entry(vocab: Vocabulary, item: int) -> bytes:
    return _TARGET_ITEM.scalar(item) + _TARGET_CAT.scalar(int(vocab.item_category[item]))


def _first_seen(user_of_step: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The positions (ascending) where a user's item occurs for the first time."""
    key = user_of_step.astype(np.int64) * (int(items.max(initial=0)) + 1) + items
    _, first = np.unique(key, return_index=True)
    return np.sort(first)


def _cvr_labels(user: np.ndarray, items: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each target (one split's, by user then position): 1.0 if its item is purchased at this target or a later
    one of the same user, else 0.0 (sequences.cvr_labels, for many users at once); and whether it was viewed."""
    bought = (flags & PURCHASE) > 0
    order = np.lexsort((-np.arange(len(items)), items, user))  # by user, item, then latest target first
    key_user, key_item = user[order], items[order]
    new_group = np.r_[True, (key_user[1:] != key_user[:-1]) | (key_item[1:] != key_item[:-1])] if len(order) else []
    group = np.cumsum(new_group) if len(order) else np.zeros(0, np.int64)
    running = np.maximum.accumulate(2 * group + bought[order]) if len(order) else group
    labels = np.empty(len(items), np.float32)
    labels[order] = running - 2 * group
    return labels, (flags & VIEW) > 0


def _gather(data: np.ndarray, bases: dict[str, int], layout: _Layout, tables: dict[str, tfx.LengthTable]) -> bytes:
    """The records of a layout, TFRecord-framed: each record's ranges copied in order between its frame head and
    its CRC, GATHER_RECORDS records at a time (the CRCs are worked out on the copied records, then written in)."""
    if not layout.count:
        return b""
    prefix, frame = tables["prefix"], tables["frame"]
    body = layout.body_sizes()
    size = body + np.diff(prefix.offsets)[body]
    columns = [(bases["frame"] + frame.offsets[size], np.diff(frame.offsets)[size])]
    columns.append((bases["prefix"] + prefix.offsets[body], np.diff(prefix.offsets)[body]))
    columns += [(bases[name] + offsets, sizes) for name, offsets, sizes in layout.parts]
    columns.append((bases["crc"], 4))
    starts = np.empty((layout.count, len(columns)), np.int64)
    sizes = np.empty((layout.count, len(columns)), np.int64)
    for k, (offsets, lengths) in enumerate(columns):
        starts[:, k], sizes[:, k] = offsets, lengths
    chunks = []
    for first in range(0, layout.count, GATHER_RECORDS):
        chunk_sizes = sizes[first : first + GATHER_RECORDS].ravel()
        ends = np.cumsum(chunk_sizes)
        index = np.repeat(starts[first : first + GATHER_RECORDS].ravel() - (ends - chunk_sizes), chunk_sizes)
        index += np.arange(len(index))
        out = data[index]
        record_ends = ends.reshape(-1, sizes.shape[1])[:, -1] - 4
        record_starts = record_ends - size[first : first + GATHER_RECORDS]
        copied = out.tobytes()
        crcs = tfx.masked_crc32c_bytes([copied[a:b] for a, b in zip(record_starts.tolist(), record_ends.tolist())])
        out[record_ends[:, None] + np.arange(4)] = crcs
        chunks.append(out.tobytes())
    return b"".join(chunks)
