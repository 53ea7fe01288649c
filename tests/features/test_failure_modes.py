"""Failure modes of the features output (issue 15): each test is named after its case."""

import json
import logging
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from components import schema
from components.export.inputs import read_serving_inputs
from components.features import reader
from components.features.pipeline import run_features

from .shop_data import events_table, items_table, random_shop, write_extract

IN_PROCESS = ["--runner=FnApiRunner"]
# Every character that str.splitlines() (or a text-mode reader) treats as a line break, and \r\n.
LINE_BREAKS = ["\n", "\r", "\r\n", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def test_case01_vocabularies_round_trip_ids_with_any_line_break(tmp_path):
    users = [f"u{k}{brk}x" for k, brk in enumerate(LINE_BREAKS)] + ["plain", 'quote"\\back']
    items = [f"i{k}{brk}" for k, brk in enumerate(LINE_BREAKS)] + ["j0", "j1", "j2", "j3"]
    categories = [f"c{k % 3}\u2028" for k in range(len(items))]
    rows, histories = [], {}
    for u, user in enumerate(users):
        steps = [items[(u + 3 * s) % len(items)] for s in range(3 + u % 4)]
        histories[user] = steps
        rows += [(user, item, "purchase", 10 * s, s) for s, item in enumerate(steps)]
    extract = write_extract(tmp_path / "extract", events_table(rows), items_table(items, categories))
    run_features(str(extract), str(tmp_path / "features"), max_len=8, beam_args=IN_PROCESS)

    out = tmp_path / "features"
    assert sorted(schema.read_vocab(out, schema.USER_VOCAB)) == sorted(users)
    assert set(schema.read_vocab(out, schema.ITEM_VOCAB)) == {i for steps in histories.values() for i in steps}
    assert set(schema.read_vocab(out, schema.CATEGORY_VOCAB)) == set(categories)
    serving = read_serving_inputs(out)
    assert sorted(serving.user_ids) == sorted(users)
    for user, hist in zip(serving.user_ids, serving.hist_items):
        got = [serving.item_ids[i] for i in hist if i != schema.PAD_INDEX]
        assert got == histories[user], f"user {user!r} was served another user's history"


def test_case01_a_vocabulary_file_that_is_not_json_lines_is_refused(tmp_path):
    (tmp_path / "vocab").mkdir()
    (tmp_path / schema.USER_VOCAB).write_text("u1\nu2\n")
    with pytest.raises(schema.SchemaError, match="users.jsonl: line 1 is not a JSON string"):
        schema.read_vocab(tmp_path, schema.USER_VOCAB)
    (tmp_path / schema.USER_VOCAB).write_bytes(schema.encode_vocab(["a\u2028b", "c"])[:-1])
    with pytest.raises(schema.SchemaError, match="cut short"):
        schema.read_vocab(tmp_path, schema.USER_VOCAB)
    ids = ["a\u2028b", "\x85", "\U0001f600", "\x00"]
    assert schema.decode_vocab(schema.encode_vocab(ids), "x") == ids


@pytest.fixture(scope="module")
def two_shard_features(tmp_path_factory):
    """A features output whose splits have two shards each (two workers, two bundles)."""
    root = tmp_path_factory.mktemp("sharded")
    events, items = random_shop(num_users=30, num_items=12)
    extract = write_extract(root / "extract", events, items, row_group_size=40)
    run_features(
        str(extract),
        str(root / "features"),
        max_len=4,
        beam_args=["--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_threading"],
    )
    return root / "features"


def _copy(features, tmp_path):
    out = tmp_path / "features"
    shutil.copytree(features, out)
    return out


def test_case02_missing_tfrecord_shard_is_refused(two_shard_features, tmp_path):
    out = _copy(two_shard_features, tmp_path)
    shards = sorted((out / schema.RETRIEVAL_DIR).glob("test-*.tfrecord"))
    assert [s.name for s in shards] == ["test-00000-of-00002.tfrecord", "test-00001-of-00002.tfrecord"]
    read_serving_inputs(out)  # whole: reads
    shards[1].unlink()
    with pytest.raises(schema.SchemaError, match=r"test-00001-of-00002\.tfrecord: 1 of 2 shard\(s\) missing"):
        read_serving_inputs(out)
    with pytest.raises(schema.SchemaError, match=r"test-00001-of-00002\.tfrecord: 1 of 2 shard"):
        reader.load_numpy(out, schema.RETRIEVAL_DIR, "test")


def test_case02_shards_that_disagree_with_the_manifest_are_refused(two_shard_features, tmp_path):
    out = _copy(two_shard_features, tmp_path)
    shard = sorted((out / schema.RANKING_DIR).glob("train-*.tfrecord"))[0]
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(shard))]
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for record in records[:-1]:
            writer.write(record)
    stats = json.loads((out / schema.STATS).read_text())
    expected = stats["examples"]["ranking"]["train"]
    with pytest.raises(
        schema.SchemaError, match=f"hold {expected - 1} records, the features manifest stats.json says {expected}"
    ):
        reader.dataset(out, schema.RANKING_DIR, "train", batch_size=8)
    (out / schema.STATS).unlink()
    with pytest.raises(schema.SchemaError, match="no stats.json"):
        reader.load_numpy(out, schema.RANKING_DIR, "train")


def test_case14_a_bit_flipped_tfrecord_is_named(two_shard_features, tmp_path):
    out = _copy(two_shard_features, tmp_path)
    shard = sorted((out / schema.RETRIEVAL_DIR).glob("test-*.tfrecord"))[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x04
    shard.write_bytes(bytes(data))
    with pytest.raises(schema.SchemaError, match=rf"{shard}( is damaged: corrupted record at \d+)$"):
        read_serving_inputs(out)


def _corrupt_a_page(path):
    """Flips bits inside the first data page of event_seq, so that snappy cannot decompress it."""
    column = pq.ParquetFile(path).metadata.row_group(0).column(schema.EVENTS.names.index("event_seq"))
    data = bytearray(path.read_bytes())
    data[column.data_page_offset + 19] ^= 0x55
    path.write_bytes(bytes(data))
    with pytest.raises(OSError, match="Corrupt snappy compressed data"):
        pq.read_table(path)


def test_case14_a_corrupt_parquet_page_is_named_in_the_last_line(tmp_path):
    events, items = random_shop(num_users=30, num_items=12)
    extract = write_extract(tmp_path / "extract", events, items)
    _corrupt_a_page(extract / "events.parquet")
    done = subprocess.run(
        [sys.executable, "-m", "components.features.pipeline", str(extract), str(tmp_path / "out"), *IN_PROCESS],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        f"components.schema.SchemaError: {extract / 'events.parquet'} is damaged: "
        "OSError: Corrupt snappy compressed data."
    ), last
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))


def test_case15_one_users_train_examples_are_capped_counted_and_warned(tmp_path, caplog):
    heavy = [("bot", f"i{(k * 7) % 40:02d}", "view", k, k) for k in range(300)]  # 300 steps, no repeats
    light = [(f"u{u}", f"i{(u + s) % 40:02d}", "view", s, s) for u in range(20) for s in range(6)]
    items = items_table([f"i{k:02d}" for k in range(40)])
    extract = write_extract(tmp_path / "extract", events_table(heavy + light), items)
    with caplog.at_level(logging.WARNING):
        stats = run_features(
            str(extract), str(tmp_path / "capped"), max_len=4, beam_args=IN_PROCESS, max_examples_per_user=50
        )
    assert stats["capped"] == {"users": 1, "train_targets": 300 - 3 - 50}
    assert stats["max_examples_per_user"] == 50
    assert stats["examples"]["retrieval"]["train"] == 50 + 20 * 3
    assert "1 user(s) have more than 50 train examples" in caplog.text
    train = reader.load_numpy(tmp_path / "capped", schema.RETRIEVAL_DIR, "train")
    users = schema.read_vocab(tmp_path / "capped", schema.USER_VOCAB)
    items_vocab = schema.read_vocab(tmp_path / "capped", schema.ITEM_VOCAB)
    bot = users.index("bot") + schema.NUM_RESERVED
    targets = [items_vocab[t - schema.NUM_RESERVED] for u, t in zip(train["user"], train["target_item"]) if u == bot]
    assert targets == [row[1] for row in heavy[-52:-2]], "the cap keeps the most recent train targets"

    default = run_features(str(extract), str(tmp_path / "default"), max_len=4, beam_args=IN_PROCESS)
    assert default["capped"] == {"users": 0, "train_targets": 0} and default["max_examples_per_user"] == 1000
    assert default["examples"]["retrieval"]["train"] == 297 + 20 * 3


def test_case12_the_default_local_run_never_tries_prism(tmp_path, monkeypatch):
    from apache_beam.runners.portability import prism_runner

    tried = []

    def no_network(self, *args, **kwargs):
        tried.append(type(self).__name__)
        raise RuntimeError("Prism would download its binary here")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", no_network)
    events, items = random_shop(num_users=30, num_items=12)
    extract = write_extract(tmp_path / "extract", events, items, row_group_size=40)
    stats = run_features(str(extract), str(tmp_path / "features"), max_len=4)  # the default: two processes
    assert tried == [], "the local default started Prism, which downloads a binary at run time"
    assert stats["examples"]["retrieval"]["train"] == stats["steps"] - 3 * stats["users"]  # check_complete's rule
