"""Composite PTransforms of the features job, each small enough to test with TestPipeline.

Throughput comes from keeping the element count low: the runner's cost per element (coding, a Python call per
DoFn) is paid per block of users, never per user or example. Events arrive as Arrow batches (one per Parquet row
group); each batch is split by block of users (a stable hash of the id, block_of) before the one shuffle, so the
GroupByKey carries one element per block and batch. Each block's events are then sorted, collapsed into steps,
counted for the vocabulary and encoded into examples a block at a time with NumPy (sequences.UserBlock,
examples.BlockEncoder), emitting one string of TFRecord-framed records per (block, kind, split), which a sink
writes whole.

Counts for stats.json travel as data on a `stats` output (dicts of flat "a/b" keys, summed by
SumCounts), which makes them exact on every runner. Every DoFn emits its counts with the element they count,
never from finish_bundle, and keeps no state from one element to the next.
"""

from __future__ import annotations

import collections
import hashlib
import json

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam import coders
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from components import schema
from components.features.examples import BlockEncoder, resolve_ranking_task
from components.features.sequences import (
    EVENT_DTYPE,
    MIN_STEPS,
    SplitFn,
    UserBlock,
    block_events,
    chunk_bounds,
    collapse_block,
)
from components.features.vocab import VocabCounts, Vocabulary, build_vocabulary, item_features_table

STATS = "stats"
MAIN = "main"
_EVENT_TYPES = pa.array(schema.EVENT_TYPES)


def output_tag(kind: str, split: str) -> str:
    """The output tag of BuildExamples for one example kind and split, e.g. "ranking/train"."""
    return f"{kind}/{split}"


def validate_batch(table: pa.Table, expected: pa.Schema, name: str) -> pa.Table:
    """schema.validate_table, with nulls in required columns reported as a SchemaError naming the
    column (a cast to the non-nullable schema would fail first, with a less helpful message)."""
    for field in expected:
        if not field.nullable and field.name in table.column_names and table.column(field.name).null_count:
            nulls = table.column(field.name).null_count
            raise schema.SchemaError(f"{name}: column {field.name!r} has {nulls} null value(s)")
    return schema.validate_table(table, expected, name)


def check_ids(column: pa.ChunkedArray, what: str) -> None:
    """ "" means padding to the serving signatures, so an id may not be empty. Any other string is an
    id: the vocabulary files store each one as a JSON string (schema.encode_vocab)."""
    bad = pc.sum(pc.equal(pc.utf8_length(column), 0).cast(pa.int64())).as_py() or 0
    if bad:
        raise schema.SchemaError(f"{what}: {bad} id(s) are empty")


# ---------------------------------------------------------------------------------------------
# Catalogue
# ---------------------------------------------------------------------------------------------
class _CatalogueFn(beam.CombineFn):
    """Concatenates items batches into one validated table sorted by item_id."""

    def create_accumulator(self):
        return []

    def add_input(self, tables, table):
        tables.append(validate_batch(table, schema.ITEMS, "items"))
        return tables

    def merge_accumulators(self, accumulators):
        return [t for tables in accumulators for t in tables]

    def extract_output(self, tables):
        if not tables or sum(t.num_rows for t in tables) == 0:
            raise schema.SchemaError("items: the table has no rows")
        catalogue = pa.concat_tables(tables).combine_chunks()
        ids = catalogue.column("item_id")
        duplicates = len(ids) - pc.count_distinct(ids).as_py()
        if duplicates:
            raise schema.SchemaError(f"items: {duplicates} duplicate item_id value(s)")
        check_ids(ids, "items.item_id")
        check_ids(catalogue.column("category"), "items.category")
        return catalogue.sort_by("item_id")


class BuildCatalogue(beam.PTransform):
    """Arrow batches of items -> a singleton table, sorted by item_id, whose row numbers serve as
    compact item ids until the vocabulary exists."""

    def expand(self, batches):
        """Combines every batch of items into the one sorted catalogue table the other steps read as a side input."""
        return batches | "Concatenate" >> beam.CombineGlobally(_CatalogueFn())


# ---------------------------------------------------------------------------------------------
# Events -> blocks of users' sequences
# ---------------------------------------------------------------------------------------------
NUM_BLOCKS = 512  # users are grouped into this many blocks by a stable hash of their id (the large preset: ~700 each)


def block_of(user_id: str) -> int:
    """The block of a user: a stable hash of the id, the same on every worker and run."""
    return int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8).digest(), "little") % NUM_BLOCKS


class _GroupBatchByBlock(beam.DoFn):
    """One Arrow batch of events -> (block, (user ids, events per user, EVENT_DTYPE records grouped by user)) per
    block of users (block_of) in the batch.

    Events whose type is not in schema.EVENT_TYPES or whose item is not in the catalogue are
    dropped and counted.
    """

    def setup(self):
        self._catalogue = None
        self._catalogue_ids = None

    def process(self, table, catalogue):
        table = validate_batch(table, schema.EVENTS, "events")
        check_ids(table.column("user_id"), "events.user_id")
        counts = collections.Counter({"events_read": table.num_rows})
        type_code = pc.index_in(table.column("event_type"), value_set=_EVENT_TYPES)
        item_row = pc.index_in(table.column("item_id"), value_set=self._ids(catalogue))
        unknown_type = pc.is_null(type_code)
        unknown_item = pc.and_(pc.is_null(item_row), pc.invert(unknown_type))
        counts["dropped_events/unknown_event_type"] = pc.sum(unknown_type.cast(pa.int64())).as_py() or 0
        counts["dropped_events/unknown_item"] = pc.sum(unknown_item.cast(pa.int64())).as_py() or 0
        keep = pc.and_(pc.invert(unknown_type), pc.invert(pc.is_null(item_row)))
        users = table.column("user_id").filter(keep).to_numpy(zero_copy_only=False)
        records = np.empty(len(users), EVENT_DTYPE)
        records["ts"] = table.column("event_ts").filter(keep).cast(pa.int64()).to_numpy()
        records["seq"] = table.column("event_seq").filter(keep).to_numpy()
        records["item"] = item_row.filter(keep).to_numpy()
        records["type"] = type_code.filter(keep).to_numpy()
        for code, n in zip(*np.unique(records["type"], return_counts=True)):
            counts[f"events_by_type/{schema.EVENT_TYPES[code]}"] += int(n)
        yield beam.pvalue.TaggedOutput(STATS, dict(counts))
        yield from split_by_block(users, records)

    def _ids(self, catalogue: pa.Table) -> pa.Array:
        if catalogue is not self._catalogue:
            self._catalogue = catalogue
            self._catalogue_ids = catalogue.column("item_id").combine_chunks()
        return self._catalogue_ids


def split_by_block(users: np.ndarray, records: np.ndarray):
    """(block, (user ids, events per user, their records grouped by user)) for every block with users in `users`
    (the user id of each record)."""
    codes, uniques = pd.factorize(users)
    if not len(uniques):
        return
    blocks = np.fromiter((block_of(u) for u in uniques.tolist()), np.int64, len(uniques))
    order = np.lexsort((codes, blocks[codes]))
    records, codes = records[order], codes[order]
    user_first = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    user_codes = codes[user_first]
    user_counts = np.diff(np.r_[user_first, len(codes)])
    user_blocks = blocks[user_codes]
    block_first = np.flatnonzero(np.r_[True, user_blocks[1:] != user_blocks[:-1]])
    bounds = np.r_[block_first, len(user_codes)].tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        first, last = int(user_first[a]), int(user_first[b]) if b < len(user_first) else len(codes)
        yield int(user_blocks[a]), (uniques[user_codes[a:b]].tolist(), user_counts[a:b], records[first:last])


class GroupEventsByUser(beam.PTransform):
    """Arrow batches of events (schema.EVENTS) -> UserBlocks of events: each block's users (block_of) sorted by id,
    each user's events sorted (sequences.block_events).

    Returns {"main": ..., "stats": ...}. `catalogue` is the singleton from BuildCatalogue.
    """

    def __init__(self, catalogue):
        super().__init__()
        self._catalogue = catalogue

    def expand(self, batches):
        """Groups the events by block of users (drops counted on the stats output); {MAIN: UserBlocks, STATS}."""
        grouped = batches | "GroupInBatch" >> beam.ParDo(
            _GroupBatchByBlock(), beam.pvalue.AsSingleton(self._catalogue)
        ).with_outputs(STATS, main=MAIN)
        events = (
            grouped[MAIN]
            | "Shuffle" >> beam.GroupByKey()
            | "Sort" >> beam.MapTuple(lambda block, parts: block_events(parts))
        )
        return {MAIN: events, STATS: grouped[STATS]}


class IntoBlocks(beam.PTransform):
    """(user_id, rows) pairs, each user once -> UserBlocks (block_of), as GroupEventsByUser's are: for callers and
    tests that have users one by one."""

    def expand(self, members):
        """Keys each user by its block, groups them and builds each block (users sorted by id)."""
        return (
            members
            | "KeyByBlock" >> beam.Map(lambda member: (block_of(member[0]), member))
            | "GroupIntoBlocks" >> beam.GroupByKey()
            | "Block" >> beam.MapTuple(lambda block, members: UserBlock.of(members))
        )


def user_rows(block: UserBlock) -> list[tuple[str, np.ndarray]]:
    """(user_id, rows) of every user of a block: beam.FlatMap(user_rows) undoes IntoBlocks."""
    return block.members()


class _StepsFn(beam.DoFn):
    def __init__(self, min_steps: int):
        self._min_steps = min_steps

    def process(self, events: UserBlock):
        steps, counts = collapse_block(events, self._min_steps)
        yield beam.pvalue.TaggedOutput(STATS, {key: n for key, n in counts.items() if n})
        if len(steps):
            yield steps


class BuildSequences(beam.PTransform):
    """UserBlocks of sorted events -> UserBlocks of steps: consecutive repeats collapsed, users with
    fewer than `min_steps` steps dropped and counted. Returns {"main": ..., "stats": ...}."""

    def __init__(self, min_steps: int = MIN_STEPS):
        super().__init__()
        self._min_steps = min_steps

    def expand(self, events):
        """Collapses each user's repeats into steps; {MAIN: UserBlocks of steps, STATS: drop counts}."""
        out = events | "Collapse" >> beam.ParDo(_StepsFn(self._min_steps)).with_outputs(STATS, main=MAIN)
        return {MAIN: out[MAIN], STATS: out[STATS]}


# ---------------------------------------------------------------------------------------------
# Vocabulary and item features
# ---------------------------------------------------------------------------------------------
class _VocabCountsFn(beam.CombineFn):
    def __init__(self, split: SplitFn):
        self._split = split

    def create_accumulator(self):
        return VocabCounts.empty()

    def add_input(self, counts, block):
        items = block.rows["item"]
        bounds = block.starts.tolist()
        train = [self._split(block.rows[a:b])["train"] + a for a, b in zip(bounds[:-1], bounds[1:])]
        counts.add_block(block.users, block.sizes, items, items[np.concatenate(train)] if train else items[:0])
        return counts

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for counts in accumulators:
            merged.merge(counts)
        return merged

    def extract_output(self, counts):
        return counts


class ComputeVocabulary(beam.PTransform):
    """UserBlocks of steps -> a singleton Vocabulary (ranked ids plus lookups), sized by the number
    of items and users, never by the number of events."""

    def __init__(self, catalogue, split: SplitFn, catalogue_items: bool = False):
        super().__init__()
        self._catalogue = catalogue
        self._split = split
        self._catalogue_items = catalogue_items

    def expand(self, sequences):
        """Counts the steps over all users and ranks them into the singleton Vocabulary."""
        return (
            sequences
            | "Count" >> beam.CombineGlobally(_VocabCountsFn(self._split))
            | "Rank" >> beam.Map(build_vocabulary, beam.pvalue.AsSingleton(self._catalogue), self._catalogue_items)
        )


def _write_vocab(path: str, ids: list[str]) -> None:
    with FileSystems.create(path) as handle:
        handle.write(schema.encode_vocab(ids))


def write_vocabulary_files(vocab: Vocabulary, catalogue: pa.Table, output_dir: str) -> dict[str, int]:
    """Writes the vocabularies and item_features.parquet; returns their sizes for stats.json."""
    _write_vocab(FileSystems.join(output_dir, schema.ITEM_VOCAB), vocab.items)
    _write_vocab(FileSystems.join(output_dir, schema.CATEGORY_VOCAB), vocab.categories)
    _write_vocab(FileSystems.join(output_dir, schema.USER_VOCAB), vocab.users)
    with FileSystems.create(FileSystems.join(output_dir, schema.ITEM_FEATURES)) as handle:
        pq.write_table(item_features_table(vocab, catalogue), handle)
    return {
        "items": len(vocab.items),
        "categories": len(vocab.categories),
        "catalogue_items": catalogue.num_rows,
        "catalogue_items_without_events": catalogue.num_rows - int((vocab.item_steps[schema.NUM_RESERVED :] > 0).sum()),
        "new_items_in_vocabulary": int((vocab.item_steps[schema.NUM_RESERVED :] == 0).sum()),
    }


class WriteVocabulary(beam.PTransform):
    """Singleton Vocabulary -> vocab files and item_features.parquet; emits their sizes as counts."""

    def __init__(self, catalogue, output_dir: str):
        super().__init__()
        self._catalogue = catalogue
        self._output_dir = output_dir

    def expand(self, vocab):
        """Writes the vocabulary files and item_features.parquet once; emits their sizes."""
        return vocab | "Write" >> beam.Map(
            write_vocabulary_files, beam.pvalue.AsSingleton(self._catalogue), self._output_dir
        )


# ---------------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------------
BLOCK_STEPS = 20_000  # at most this many steps of users are encoded together (examples.BlockEncoder)


class _ExamplesFn(beam.DoFn):
    """A UserBlock of steps -> one string of TFRecord-framed records per (kind, split) and up to BLOCK_STEPS steps of
    users (in the block's order, by id), each user's records together and in order, and the block's counts.
    No state is kept from one element to the next (the vocabulary's encoder aside), nothing is emitted from
    finish_bundle."""

    def __init__(self, max_len: int, seed: int, split: SplitFn, block_steps: int = BLOCK_STEPS):
        self._max_len = max_len
        self._seed = seed
        self._split = split
        self._block_steps = block_steps

    def setup(self):
        self._key = None
        self._encoder = None

    def process(self, block, vocab, ranking_task):
        if self._key != (id(vocab), ranking_task):
            self._key = (id(vocab), ranking_task)
            self._encoder = BlockEncoder(
                vocab,
                vocab.sampler(),
                ranking_task=ranking_task,
                max_len=self._max_len,
                seed=self._seed,
                split=self._split,
            )
        counts = collections.Counter()
        starts = block.starts
        for first, stop in chunk_bounds(block.sizes, self._block_steps):
            a, b = int(starts[first]), int(starts[stop])
            examples, capped = self._encoder.encode_rows(
                block.users[first:stop], block.rows[a:b], starts[first : stop + 1] - a
            )
            counts.update({key: n for key, n in capped.items() if n})
            for (kind, split), (framed, count) in examples.items():
                if count:
                    counts[f"examples/{kind}/{split}"] += count
                    yield beam.pvalue.TaggedOutput(output_tag(kind, split), framed)
        yield beam.pvalue.TaggedOutput(STATS, dict(counts))


class BuildExamples(beam.PTransform):
    """UserBlocks of steps -> blocks of TFRecord-framed tf.Examples (tfexample.records reads them back) under tags
    output_tag(kind, split), plus counts under "stats". `vocab` and `ranking_task` are singleton PCollections."""

    def __init__(self, vocab, ranking_task, *, max_len: int, seed: int, split: SplitFn):
        super().__init__()
        self._vocab = vocab
        self._ranking_task = ranking_task
        self._fn = _ExamplesFn(max_len, seed, split)

    def expand(self, sequences):
        """Every user's examples under one tag per (kind, split), plus their counts under STATS."""
        tags = [
            output_tag(kind, split) for kind in (schema.RETRIEVAL_DIR, schema.RANKING_DIR) for split in schema.SPLITS
        ]
        out = sequences | "Build" >> beam.ParDo(
            self._fn, beam.pvalue.AsSingleton(self._vocab), beam.pvalue.AsSingleton(self._ranking_task)
        ).with_outputs(STATS, *tags)
        return {tag: out[tag] for tag in tags + [STATS]}


class ResolveRankingTask(beam.PTransform):
    """Event-type counts (dicts with "events_by_type/<type>" keys) -> the singleton task name."""

    def __init__(self, requested: str):
        super().__init__()
        self._requested = requested

    def expand(self, counts):
        """Sums the event-type counts and resolves the requested ranking task against them (auto picks by the data)."""
        requested = self._requested
        return (
            counts
            | "Sum" >> SumCounts()
            | "Resolve" >> beam.Map(lambda c: resolve_ranking_task(requested, nested(c).get("events_by_type", {})))
        )


class _FramedSink(filebasedsink.FileBasedSink):
    """A TFRecord sink whose elements are TFRecord-framed records (tfexample.tfrecord_frame, one after the other), written as they are."""

    def __init__(self, file_path_prefix: str):
        super().__init__(
            file_path_prefix,
            coder=coders.BytesCoder(),
            file_name_suffix=".tfrecord",
            num_shards=0,
            shard_name_template="-SSSSS-of-NNNNN",
            mime_type="application/octet-stream",
            compression_type=CompressionTypes.UNCOMPRESSED,
        )

    def write_record(self, file_handle, value):
        file_handle.write(value)


class WriteTFRecordBlocks(beam.PTransform):
    """Blocks of TFRecord-framed records -> {prefix}-SSSSS-of-NNNNN.tfrecord shards, one per bundle
    (no shuffle to a fixed shard count)."""

    def __init__(self, file_path_prefix: str):
        super().__init__()
        self._prefix = file_path_prefix

    def expand(self, blocks):
        """Writes the blocks as TFRecord shards under the prefix, one shard per bundle."""
        return blocks | "Write" >> beam.io.Write(_FramedSink(self._prefix))


# ---------------------------------------------------------------------------------------------
# Counts
# ---------------------------------------------------------------------------------------------
def _sum_counts(dicts) -> dict[str, int]:
    total = collections.Counter()
    for d in dicts:
        total.update(d)
    return dict(sorted(total.items()))


class SumCounts(beam.PTransform):
    """Dicts of counts -> one dict with every key summed (an empty dict for no input)."""

    def expand(self, counts):
        """Sums every count dict into one (CombineGlobally), so the stats hold totals over all workers."""
        return counts | "Sum" >> beam.CombineGlobally(_sum_counts)


def nested(flat: dict[str, int]) -> dict:
    """{"a/b": 1} -> {"a": {"b": 1}}, the layout of stats.json."""
    out: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = out
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return out


def dump_json(value, path: str) -> None:
    """Writes `value` as JSON to a Beam FileSystems path (local or gs://). Value first, so that beam.Map(dump_json,
    path) writes a PCollection's element; not atomic.write_json(path, payload), which is local and atomic."""
    with FileSystems.create(path) as handle:
        handle.write(json.dumps(value, indent=2, sort_keys=True).encode())
