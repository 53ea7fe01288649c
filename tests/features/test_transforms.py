"""Each composite PTransform on hand-made input, with TestPipeline and assert_that."""

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from components import schema
from components.features import sequences as S
from components.features import tfexample as tfx
from components.features import transforms as T
from components.features.sequences import PURCHASE, STEP_DTYPE, VIEW, leave_last_out

from .shop_data import events_table, items_table


def fn_api_pipeline():
    """A TestPipeline on the FnApiRunner: the DirectRunner would first try to download Prism."""
    return test_pipeline.TestPipeline(runner="FnApiRunner")


ITEMS = ["a", "b", "c", "d", "e"]  # catalogue rows 0..4 (sorted by id)


def _steps(rows, flags=VIEW):
    """rows: catalogue rows of the items; all steps carry `flags` unless a (row, flags) pair is given."""
    out = np.zeros(len(rows), STEP_DTYPE)
    for i, row in enumerate(rows):
        out[i]["item"], out[i]["flags"] = row if isinstance(row, tuple) else (row, flags)
        out[i]["ts"] = i
    return out


def _decode(record: bytes) -> dict:
    features = tf.train.Example.FromString(record).features.feature
    return {
        key: list(f.int64_list.value) if f.HasField("int64_list") else list(f.float_list.value)
        for key, f in features.items()
    }


def _catalogue(p, item_ids=ITEMS, categories=None):
    return p | "Items" >> beam.Create([items_table(item_ids, categories)]) | "Catalogue" >> T.BuildCatalogue()


def test_build_catalogue_sorts_by_id():
    with fn_api_pipeline() as p:
        batches = p | beam.Create([items_table(["z", "b"]), items_table(["m"])])
        ids = batches | T.BuildCatalogue() | beam.Map(lambda t: t.column("item_id").to_pylist())
        assert_that(ids, equal_to([["b", "m", "z"]]))


def test_build_catalogue_rejects_duplicate_ids():
    with pytest.raises(Exception, match="duplicate item_id"):
        with fn_api_pipeline() as p:
            _ = p | beam.Create([items_table(["a", "b"]), items_table(["a"])]) | T.BuildCatalogue()


def test_group_events_by_user_merges_batches_sorts_ties_by_event_seq_and_counts_drops():
    # u1's events are split over two batches and arrive out of order; minutes 5 tie, event_seq decides.
    batch1 = events_table([("u1", "c", "view", 5, 3), ("u1", "a", "view", 1, 0), ("u2", "b", "view", 0, 0)])
    batch2 = events_table(
        [("u1", "b", "view", 5, 2), ("u1", "zz", "view", 6, 4), ("u2", "a", "click", 1, 1), ("u1", "d", "cart", 9, 5)]
    )
    with fn_api_pipeline() as p:
        out = p | beam.Create([batch1, batch2]) | T.GroupEventsByUser(_catalogue(p))
        items = (
            out[T.MAIN]
            | beam.FlatMap(T.user_rows)
            | beam.MapTuple(lambda user, events: (user, [ITEMS[i] for i in events["item"]]))
        )
        assert_that(items, equal_to([("u1", ["a", "b", "c", "d"]), ("u2", ["b"])]), label="sequences")
        counts = out[T.STATS] | T.SumCounts()
        expected = {
            "events_read": 7,
            "dropped_events/unknown_event_type": 1,
            "dropped_events/unknown_item": 1,
            "events_by_type/view": 4,
            "events_by_type/cart": 1,
        }
        assert_that(counts, equal_to([expected]), label="counts")


def test_build_sequences_collapses_repeats_and_drops_short_users():
    batch = events_table(
        [
            ("long", "a", "view", 0, 0),
            ("long", "a", "cart", 1, 1),
            ("long", "a", "purchase", 2, 2),
            ("long", "b", "view", 3, 3),
            ("long", "a", "view", 4, 4),
            ("short", "a", "view", 0, 0),
            ("short", "b", "view", 1, 1),
            ("short", "b", "view", 2, 2),
        ]
    )
    with fn_api_pipeline() as p:
        grouped = p | beam.Create([batch]) | T.GroupEventsByUser(_catalogue(p))
        out = grouped[T.MAIN] | T.BuildSequences()
        steps = (
            out[T.MAIN]
            | beam.FlatMap(T.user_rows)
            | beam.MapTuple(lambda user, s: (user, s["item"].tolist(), [bool(f & PURCHASE) for f in s["flags"]]))
        )
        assert_that(steps, equal_to([("long", [0, 1, 0], [True, False, False])]), label="steps")
        expected = {
            "users_read": 2,
            "users": 1,
            "events": 5,
            "steps": 3,
            "dropped_users/too_few_steps": 1,
            "dropped_events/user_too_few_steps": 3,
        }
        assert_that(out[T.STATS] | T.SumCounts(), equal_to([expected]), label="counts")


SEQUENCES = [
    ("u1", _steps([0, 1, 2, 1, 3])),  # train targets: rows 1, 2
    ("u2", _steps([1, 2, 4])),  # no train target
    ("u3", _steps([2, 1, 0, 1])),  # train targets: row 1
]


def test_compute_vocabulary_ranks_by_count_then_id():
    categories = ["x", "y", "y", "z", "x"]
    with fn_api_pipeline() as p:
        catalogue = _catalogue(p, categories=categories)
        vocab = p | "Seqs" >> beam.Create(SEQUENCES) | T.IntoBlocks() | T.ComputeVocabulary(catalogue, leave_last_out)
        summary = vocab | beam.Map(
            lambda v: (v.items, v.categories, v.users, v.train_count.tolist(), v.item_category.tolist())
        )
        # steps: b 5, c 3, a 2, d 1, e 1; categories: y = b + c = 8, x = a + e = 3, z = d = 1
        # train targets (positions 1..n-3): u1 b c, u3 b
        expected = (
            ["b", "c", "a", "d", "e"],
            ["y", "x", "z"],
            ["u1", "u3", "u2"],
            [0, 0, 2, 1, 0, 0, 0],
            [0, 1, 2, 2, 3, 4, 3],
        )
        assert_that(summary, equal_to([expected]))


def _examples(p, task, max_len=3, seed=0, sequences=SEQUENCES):
    catalogue = _catalogue(p)
    vocab = p | "Seqs" >> beam.Create(sequences) | T.IntoBlocks() | T.ComputeVocabulary(catalogue, leave_last_out)
    task = p | "Task" >> beam.Create([task])
    examples = (
        p
        | "Seqs2" >> beam.Create(sequences)
        | "Blocks2" >> T.IntoBlocks()
        | T.BuildExamples(vocab, task, max_len=max_len, seed=seed, split=leave_last_out)
    )
    return {
        tag: pcoll | f"Decode{tag}" >> beam.FlatMap(lambda block: [_decode(r) for r in tfx.records(block)])
        for tag, pcoll in examples.items()
        if tag != T.STATS
    }, examples[T.STATS]


def _check_next_item_pairs(pairs):
    """pairs: (positive, negative) rows, which the builder writes next to each other."""
    assert pairs
    for positive, negative in pairs:
        assert positive["label"] == [1.0] and negative["label"] == [0.0]
        assert negative["target_item"] != positive["target_item"]
        for key in ("user", "hist_items", "hist_cats", "hist_types", "hist_gaps", "target_gap"):
            assert negative[key] == positive[key]
        for key in ("noclick_items", "noclick_cats"):
            assert negative[key] == positive[key]
        for key in ("noclick_items", "noclick_cats", "hist_types", "hist_gaps"):
            assert len(positive[key]) == len(positive["hist_items"])
        assert all(n != h for n, h in zip(positive["noclick_items"], positive["hist_items"]))
        assert 1 <= len(positive["hist_items"]) <= 3


def test_build_examples_next_item_pairs_each_positive_with_a_different_negative():
    # one user, many steps over few items, so the sampled negative would often hit the target
    sequences = [("u1", _steps([0, 1, 0, 1, 2, 0, 1, 0, 2, 1, 0]))]
    with fn_api_pipeline() as p:
        catalogue = _catalogue(p)
        vocab = p | "Seqs" >> beam.Create(sequences) | T.IntoBlocks() | T.ComputeVocabulary(catalogue, leave_last_out)
        task = p | "Task" >> beam.Create(["next_item"])
        examples = (
            p
            | "Seqs2" >> beam.Create(sequences)
            | "Blocks2" >> T.IntoBlocks()
            | T.BuildExamples(vocab, task, max_len=3, seed=0, split=leave_last_out)
        )
        for split in schema.SPLITS:
            pairs = examples[T.output_tag("ranking", split)] | f"Pairs{split}" >> beam.FlatMap(
                lambda block: zip(map(_decode, tfx.records(block)[0::2]), map(_decode, tfx.records(block)[1::2]))
            )
            assert_that(pairs, _check_next_item_pairs, label=f"check_{split}")
        stats = examples[T.STATS]
        expected = {
            "examples/retrieval/train": 8,
            "examples/retrieval/valid": 1,
            "examples/retrieval/test": 1,
            "examples/ranking/train": 16,
            "examples/ranking/valid": 2,
            "examples/ranking/test": 2,
        }
        assert_that(stats | T.SumCounts(), equal_to([expected]), label="counts")


def test_build_examples_retrieval_histories_targets_and_seen_items():
    with fn_api_pipeline() as p:
        decoded, _ = _examples(p, "next_item")
        # item index: b=2, c=3, a=4, d=5, e=6; user index: u1=2, u3=3, u2=4
        # u1 = a b c b d = 4 2 3 2 5, u2 = b c e = 2 3 6, u3 = c b a b = 3 2 4 2; max_len 3
        test = decoded[T.output_tag("retrieval", "test")] | "T" >> beam.Map(
            lambda r: (r["user"][0], r["hist_items"], r["target_item"][0], r["seen_items"])
        )
        assert_that(
            test,
            equal_to([(2, [2, 3, 2], 5, [4, 2, 3]), (3, [3, 2, 4], 2, [3, 2, 4]), (4, [2, 3], 6, [2, 3])]),
            label="test",
        )
        train = decoded[T.output_tag("retrieval", "train")] | "Tr" >> beam.Map(
            lambda r: (r["user"][0], r["hist_items"], r["target_item"][0], r.get("seen_items", []))
        )
        assert_that(train, equal_to([(2, [4], 2, []), (2, [4, 2], 3, []), (3, [3], 2, [])]), label="train")


CART, FAV = 1 << schema.EVENT_TYPES.index("cart"), 1 << schema.EVENT_TYPES.index("fav")


def test_build_examples_carry_each_steps_event_types_and_gaps_and_the_gap_to_the_target():
    # a b c b d at 0 s, 60 s, 60 s, 1 h 1 min, 1 day 1 min: gaps -, 60, 0, 3600, 86400 s
    seconds = [0, 60, 60, 3660, 90060]
    flags = [VIEW, VIEW | CART, VIEW | FAV, PURCHASE, VIEW]
    steps = np.zeros(5, STEP_DTYPE)
    steps["item"], steps["flags"], steps["ts"] = [0, 1, 2, 1, 3], flags, np.multiply(seconds, 1_000_000)
    with fn_api_pipeline() as p:
        decoded, _ = _examples(p, "next_item", sequences=[("u1", steps)])

        def behaviour(r):
            held_out = (r["target_type"][0], r["target_ts"][0]) if "target_ts" in r else None
            return r["target_item"][0], r["hist_types"], r["hist_gaps"], r["target_gap"][0], held_out

        # items by step count: b=2, then a c d by id = 3 4 5; max_len 3 keeps the window's first step's real gap
        expected = {
            "train": [(2, [VIEW], [-1], 60, None), (4, [VIEW, VIEW | CART], [-1, 60], 0, None)],
            "valid": [(2, [VIEW, VIEW | CART, VIEW | FAV], [-1, 60, 0], 3600, (PURCHASE, 3660))],
            "test": [(5, [VIEW | CART, VIEW | FAV, PURCHASE], [60, 0, 3600], 86400, (VIEW, 90060))],
        }
        for split, rows in expected.items():
            got = decoded[T.output_tag("retrieval", split)] | f"B{split}" >> beam.Map(behaviour)
            assert_that(got, equal_to(rows), label=f"retrieval_{split}")
            # the ranking rows carry the same history and request gap, never the target's own type or time
            ranking = decoded[T.output_tag("ranking", split)] | f"R{split}" >> beam.Filter(
                lambda r: r["label"] == [1.0]
            )
            assert_that(
                ranking | f"RB{split}" >> beam.Map(behaviour),
                equal_to(rows_without_held_out(rows)),
                label=f"ranking_{split}",
            )


def rows_without_held_out(rows):
    return [row[:-1] + (None,) for row in rows]


def test_build_examples_cvr_rows_are_viewed_steps_labelled_by_later_purchase():
    sequences = [("u1", _steps([0, (1, VIEW), (2, VIEW), (1, VIEW | PURCHASE), (2, PURCHASE), (3, VIEW)]))]
    with fn_api_pipeline() as p:
        decoded, _ = _examples(p, "cvr", sequences=sequences)
        rows = {
            split: decoded[T.output_tag("ranking", split)]
            | f"L{split}"
            >> beam.Map(lambda r: (r["target_item"][0], r["label"][0], len(r["noclick_items"]) == len(r["hist_items"])))
            for split in schema.SPLITS
        }
        # vocab: b 2 steps, c 2 steps -> b=2, c=3, a=4, d=5. train positions 1..3 = b c b(purchase)
        assert_that(rows["train"], equal_to([(2, 1.0, True), (3, 0.0, True), (2, 1.0, True)]), label="train")
        assert_that(rows["valid"], equal_to([]), label="valid")  # a purchase without a view is no row
        assert_that(rows["test"], equal_to([(5, 0.0, True)]), label="test")


def test_resolve_ranking_task():
    with fn_api_pipeline() as p:
        funnel = p | "F" >> beam.Create([{"events_by_type/view": 3}, {"events_by_type/purchase": 1}])
        bought = p | "B" >> beam.Create([{"events_by_type/purchase": 3}, {"events_by_type/cart": 2}])
        assert_that(funnel | "RF" >> T.ResolveRankingTask("auto"), equal_to(["cvr"]), label="funnel")
        assert_that(bought | "RB" >> T.ResolveRankingTask("auto"), equal_to(["next_item"]), label="bought")


def test_write_tfrecord_blocks_writes_every_record(tmp_path):
    prefix = str(tmp_path / "train")
    blocks = [b"".join(map(tfx.tfrecord_frame, block)) for block in ([b"x1", b"x2"], [b"y"])]
    with fn_api_pipeline() as p:
        _ = p | beam.Create(blocks) | T.WriteTFRecordBlocks(prefix)
    files = sorted(str(f) for f in tmp_path.glob("train-*-of-*.tfrecord"))
    assert files
    assert sorted(r.numpy() for r in tf.data.TFRecordDataset(files)) == [b"x1", b"x2", b"y"]


def test_compute_vocabulary_fails_clearly_without_users():
    with pytest.raises(Exception, match="no user has enough steps"):
        with fn_api_pipeline() as p:
            empty = p | "Seqs" >> beam.Create([]).with_output_types(tuple)
            _ = empty | T.IntoBlocks() | T.ComputeVocabulary(_catalogue(p), leave_last_out)


def test_cvr_needs_views_and_purchases():
    with pytest.raises(Exception, match="'cvr' needs view and purchase"):
        with fn_api_pipeline() as p:
            _ = p | beam.Create([{"events_by_type/purchase": 3}]) | T.ResolveRankingTask("cvr")


def test_build_catalogue_rejects_empty_ids():
    with pytest.raises(Exception, match="items.item_id: 1 id.s. are empty"):
        with fn_api_pipeline() as p:
            _ = p | beam.Create([items_table(["a", ""])]) | T.BuildCatalogue()


def test_group_events_by_user_rejects_empty_user_ids():
    with pytest.raises(Exception, match="events.user_id: 1 id"):
        with fn_api_pipeline() as p:
            batch = events_table([("", "a", "view", 0, 0), ("u1", "a", "view", 0, 0)])
            _ = p | beam.Create([batch]) | T.GroupEventsByUser(_catalogue(p))


def test_chunk_bounds_cap_the_steps_encoded_together():
    """A block's users go to the encoder in runs of at most `limit` steps, in order, none left out or repeated; a
    user longer than the limit is a run of its own."""
    assert S.chunk_bounds(np.array([3, 4, 2, 9, 1, 1, 5]), limit=6) == [(0, 1), (1, 3), (3, 4), (4, 6), (6, 7)]
    assert S.chunk_bounds(np.zeros(0, np.int64), limit=6) == []


def test_a_block_of_many_users_is_encoded_in_runs_and_gives_every_users_examples():
    """More steps in a block than BLOCK_STEPS: the DoFn encodes it in several runs, and every example is there."""
    sequences = [(f"u{k}", _steps([k % 5, (k + 1) % 5, (k + 2) % 5, (k + 3) % 5])) for k in range(30)]
    fn = T._ExamplesFn(max_len=3, seed=0, split=leave_last_out, block_steps=10)
    with fn_api_pipeline() as p:
        catalogue = _catalogue(p)
        vocab = p | "Seqs" >> beam.Create(sequences) | T.IntoBlocks() | T.ComputeVocabulary(catalogue, leave_last_out)
        task = p | "Task" >> beam.Create(["next_item"])
        block = p | "Block" >> beam.Create([S.UserBlock.of(sequences)])
        out = block | beam.ParDo(fn, beam.pvalue.AsSingleton(vocab), beam.pvalue.AsSingleton(task)).with_outputs(
            T.STATS, *[T.output_tag(k, s) for k in ("retrieval", "ranking") for s in schema.SPLITS]
        )
        blocks = out[T.output_tag("retrieval", "train")] | "Count" >> beam.Map(lambda b: len(tfx.records(b)))
        assert_that(blocks, equal_to([2] * 15), label="runs")  # 10 steps = 2 users = 2 train examples a run
        assert_that(out[T.STATS] | T.SumCounts(), lambda c: c[0]["examples/ranking/test"] == 60, label="counts")


def test_split_by_block_gives_each_block_its_users_events_once():
    users = np.array(["u3", "u1", "u2", "u1", "u3", "u9"], dtype=object)
    records = np.zeros(len(users), S.EVENT_DTYPE)
    records["seq"] = np.arange(len(users))
    parts = list(T.split_by_block(users, records))
    assert len({block for block, _ in parts}) == len(parts)  # one element per block
    got = {}
    for block, (ids, counts, events) in parts:
        assert all(T.block_of(u) == block for u in ids)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for user, a, b in zip(ids, bounds[:-1], bounds[1:]):
            got[user] = events["seq"][a:b].tolist()
    assert got == {"u3": [0, 4], "u1": [1, 3], "u2": [2], "u9": [5]}
    assert list(T.split_by_block(np.array([], dtype=object), records[:0])) == []
