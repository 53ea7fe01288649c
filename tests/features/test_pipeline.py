"""run_features end to end on hand-made extract directories, read back through reader.py."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from components import schema
from components.features import reader
from components.features.pipeline import run_features, summary_line

from .shop_data import events_table, random_shop, write_extract

IN_PROCESS = ["--runner=FnApiRunner"]  # one in-process worker: faster to start for small runs
MAX_LEN = 4


def _expected_sequences(events: pa.Table, known_items: set[str]) -> dict[str, list[str]]:
    """The contract's sequences, computed independently with pandas."""
    df = events.to_pandas()
    df = df[df.event_type.isin(schema.EVENT_TYPES) & df.item_id.isin(known_items)]
    df = df.sort_values(["user_id", "event_ts", "event_seq"])
    out = {}
    for user, group in df.groupby("user_id"):
        items = group.item_id.tolist()
        steps = [item for k, item in enumerate(items) if k == 0 or item != items[k - 1]]
        if len(steps) >= 3:
            out[user] = steps
    return out


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("shop")
    events, items = random_shop()
    ghosts = events_table([("u000", "ghost", "view", 0, 99), ("u001", "i000", "click", 0, 98)])
    events = pa.concat_tables([events, ghosts])  # an unknown item and an unknown event type
    extract = write_extract(root / "extract", events, items, row_group_size=50)
    stats = run_features(str(extract), str(root / "features"), max_len=MAX_LEN, seed=7)  # multi-process default
    return {
        "root": root,
        "events": events,
        "items": items,
        "extract": extract,
        "out": root / "features",
        "stats": stats,
    }


def _by_user(out, kind, split):
    data = reader.load_numpy(out, kind, split)
    users = schema.read_vocab(out, schema.USER_VOCAB)
    items = schema.read_vocab(out, schema.ITEM_VOCAB)

    def name(i):
        return items[i - schema.NUM_RESERVED]

    return data, users, items, name


def test_outputs_follow_the_contract(shop):
    out = shop["out"]
    expected = _expected_sequences(shop["events"], set(shop["items"].column("item_id").to_pylist()))
    data, users, items, name = _by_user(out, "retrieval", "test")
    got = {
        users[u - 2]: ([name(i) for i in hist], name(t), {name(i) for i in seen})
        for u, hist, t, seen in zip(data["user"], data["hist_items"], data["target_item"], data["seen_items"])
    }
    assert got == {u: (s[-1 - MAX_LEN : -1], s[-1], set(s[:-1])) for u, s in expected.items()}

    valid = reader.load_numpy(out, "retrieval", "valid")
    assert sorted(name(t) for t in valid["target_item"]) == sorted(s[-2] for s in expected.values())

    steps = Counter(item for s in expected.values() for item in s)
    assert items == sorted(steps, key=lambda i: (-steps[i], i))
    assert users == sorted(expected, key=lambda u: (-len(expected[u]), u))

    features = pq.read_table(out / schema.ITEM_FEATURES)
    assert features.column_names == list(schema.ITEM_FEATURE_COLUMNS)
    assert features.column("item_index").to_pylist() == list(range(2, len(items) + 2))
    assert features.column("item_id").to_pylist() == items
    train_targets = Counter(item for s in expected.values() for item in s[1:-2])
    assert features.column("train_count").to_pylist() == [train_targets[i] for i in items]
    categories = schema.read_vocab(out, schema.CATEGORY_VOCAB)
    assert [categories[c - 2] for c in features.column("category_index").to_pylist()] == features.column(
        "category"
    ).to_pylist()

    spec = schema.FeatureSpec.read(out)
    assert spec == schema.FeatureSpec(
        max_len=MAX_LEN,
        num_items=len(items) + 2,
        num_categories=len(categories) + 2,
        num_users=len(users) + 2,
        ranking_task="cvr",
        split="leave_last_out",
        seed=7,
    )
    stats = json.loads((out / schema.STATS).read_text())
    assert stats == {"manifest_version": schema.FEATURES_MANIFEST_VERSION, **shop["stats"]}  # the counts, versioned
    assert stats["users"] == len(expected) and stats["steps"] == sum(map(len, expected.values()))
    assert stats["dropped_users"]["too_few_steps"] == shop["events"].to_pandas().user_id.nunique() - len(expected)
    assert stats["dropped_events"]["unknown_item"] == 1 and stats["dropped_events"]["unknown_event_type"] == 1
    assert stats["events_read"] == shop["events"].num_rows
    for kind in ("retrieval", "ranking"):
        for split in schema.SPLITS:
            n = sum(1 for _ in tf.data.TFRecordDataset(reader.tfrecord_files(out, kind, split)))
            assert stats["examples"][kind][split] == n
    assert stats["examples"]["retrieval"]["train"] == sum(len(s) - 3 for s in expected.values())
    assert not list(shop["root"].glob("*.tmp-*"))


def _expected_steps(events: pa.Table, known_items: set[str]) -> dict[str, list[tuple[int, int]]]:
    """Each kept user's steps as (event-type flags, time in seconds), computed independently with pandas."""
    df = events.to_pandas()
    df = df[df.event_type.isin(schema.EVENT_TYPES) & df.item_id.isin(known_items)]
    df = df.sort_values(["user_id", "event_ts", "event_seq"])
    out = {}
    for user, group in df.groupby("user_id"):
        steps = []
        for item, event_type, ts in zip(group.item_id, group.event_type, group.event_ts):
            flag = 1 << schema.EVENT_TYPES.index(event_type)
            if steps and item == steps[-1][0]:
                steps[-1][1] |= flag
            else:
                steps.append([item, flag, int(ts.timestamp())])
        if len(steps) >= 3:
            out[user] = [(flags, seconds) for _, flags, seconds in steps]
    return out


def test_examples_carry_the_steps_event_types_and_gaps_from_the_events(shop):
    expected = _expected_steps(shop["events"], set(shop["items"].column("item_id").to_pylist()))
    assert len({flags for steps in expected.values() for flags, _ in steps}) > 1  # the shop has several event kinds
    data, users, _, _ = _by_user(shop["out"], "retrieval", "test")
    for row, user in enumerate(data["user"]):
        steps = expected[users[user - 2]]
        gaps = [schema.NO_GAP] + [b - a for (_, a), (_, b) in zip(steps, steps[1:])]
        window = slice(max(0, len(steps) - 1 - MAX_LEN), len(steps) - 1)
        assert data["hist_types"][row].tolist() == [flags for flags, _ in steps[window]]
        assert data["hist_gaps"][row].tolist() == gaps[window]
        assert data["target_gap"][row] == gaps[-1] >= 0
        assert (data["target_type"][row], data["target_ts"][row]) == steps[-1]
    ranking = reader.load_numpy(shop["out"], "ranking", "test")
    for name in ("hist_types", "hist_gaps"):
        assert [len(v) for v in ranking[name]] == [len(v) for v in ranking["hist_items"]]
    assert "target_ts" not in ranking and "target_type" not in ranking


def test_progress_line_gives_the_key_counts_in_one_short_line(shop):
    stats, line = shop["stats"], summary_line(shop["stats"])
    examples = stats["examples"][schema.RETRIEVAL_DIR]
    assert len(line) < 200 and "\n" not in line
    assert f"{stats['events']:,} events of {stats['users']:,} users on {stats['items']:,} items" in line
    assert f"train {examples['train']:,} / valid {examples['valid']:,} / test {examples['test']:,}" in line
    assert f"{sum(stats['dropped_events'].values()):,} events dropped" in line
    assert sum(stats["dropped_events"].values()) >= 2  # the ghost item and the unknown event type


def test_cvr_ranking_rows_and_noclick_histories(shop):
    data = reader.load_numpy(shop["out"], "ranking", "train")
    assert set(np.unique(data["label"])) <= {0.0, 1.0} and 0 < data["label"].mean() < 1
    for hist, noclick, noclick_cats in zip(data["hist_items"], data["noclick_items"], data["noclick_cats"]):
        assert len(noclick) == len(hist) == len(noclick_cats) and 1 <= len(hist) <= MAX_LEN
        assert np.all(noclick != hist)


def _all_records(out: Path) -> dict:
    records = {}
    for kind in ("retrieval", "ranking"):
        for split in schema.SPLITS:
            files = reader.tfrecord_files(out, kind, split)
            records[(kind, split)] = sorted(r.numpy() for r in tf.data.TFRecordDataset(files))
    return records


def test_same_seed_gives_the_same_output_whatever_the_parallelism(shop, tmp_path):
    again = tmp_path / "again"
    stats = run_features(str(shop["extract"]), str(again), max_len=MAX_LEN, seed=7, beam_args=IN_PROCESS)
    assert stats == shop["stats"]
    assert _all_records(again) == _all_records(shop["out"])
    for name in (schema.ITEM_VOCAB, schema.CATEGORY_VOCAB, schema.USER_VOCAB, schema.FEATURE_SPEC):
        assert (again / name).read_bytes() == (shop["out"] / name).read_bytes()
    assert (
        pq.read_table(again / schema.ITEM_FEATURES)
        .to_pandas()
        .equals(pq.read_table(shop["out"] / schema.ITEM_FEATURES).to_pandas())
    )


# ---------------------------------------------------------------------------------------------
# Bad input: a clear error, and nothing that looks like an output
# ---------------------------------------------------------------------------------------------
def _small_extract(tmp_path, events=None, items=None) -> Path:
    default_events, default_items = random_shop(num_users=6, num_items=8)
    return write_extract(
        tmp_path / "extract",
        events if events is not None else default_events,
        items if items is not None else default_items,
    )


def _assert_fails(tmp_path, extract, match, **kwargs):
    with pytest.raises(Exception, match=match):
        run_features(str(extract), str(tmp_path / "out"), beam_args=IN_PROCESS, **kwargs)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob("*.tmp-*"))


def test_missing_column_is_named(tmp_path):
    events, _ = random_shop(num_users=6, num_items=8)
    extract = _small_extract(tmp_path, events=events.drop_columns(["event_seq"]))
    _assert_fails(tmp_path, extract, r"events: missing column\(s\) \['event_seq'\]")


def test_wrong_type_is_reported(tmp_path):
    events, _ = random_shop(num_users=6, num_items=8)
    events = events.set_column(4, "event_seq", pa.array(["x"] * events.num_rows))
    _assert_fails(tmp_path, _small_extract(tmp_path, events=events), "events: column types do not match")


def test_empty_events_are_refused(tmp_path):
    extract = _small_extract(tmp_path, events=schema.EVENTS.empty_table())
    _assert_fails(tmp_path, extract, "events: .* has no rows")


def test_corrupt_parquet_and_missing_manifest(tmp_path):
    extract = _small_extract(tmp_path)
    (extract / "items.parquet").write_bytes(b"not parquet")
    _assert_fails(tmp_path, extract, "items: .* is not a readable Parquet file")
    (extract / "manifest.json").unlink()
    _assert_fails(tmp_path, extract, "no manifest.json")


def test_nulls_are_reported_even_without_footer_statistics(tmp_path):
    extract = _small_extract(tmp_path)
    events = pq.read_table(extract / "events.parquet")
    ids = events.column("item_id").to_pylist()
    events = events.set_column(1, pa.field("item_id", pa.string()), pa.array([None] + ids[1:]))
    pq.write_table(events, extract / "events.parquet", write_statistics=False)
    _assert_fails(tmp_path, extract, "events: column 'item_id' has 1 null value")


def test_bad_parameters_and_occupied_output(tmp_path):
    extract = _small_extract(tmp_path)
    with pytest.raises(ValueError, match="unknown ranking_task"):
        run_features(str(extract), str(tmp_path / "out"), ranking_task="ctr")
    with pytest.raises(ValueError, match="max_len"):
        run_features(str(extract), str(tmp_path / "out"), max_len=0)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        run_features(str(extract), str(tmp_path / "out"))
    assert (tmp_path / "out" / "keep.txt").exists()


def test_rows_load_in_one_order_whatever_shard_beam_wrote_them_to(shop, tmp_path):
    """Beam writes each user's list of examples whole, to a shard its workers happen to pick: the same lists in
    other shards and another order load identically, so a trainer's batches (and its model) depend on the examples
    and the seed only."""
    import shutil

    copy = tmp_path / "features"
    shutil.copytree(shop["out"], copy)
    for kind in (schema.RETRIEVAL_DIR, schema.RANKING_DIR):
        files = reader.tfrecord_files(copy, kind, "train")
        records = [[r.numpy() for r in tf.data.TFRecordDataset(f)] for f in files]
        lists: dict[int, list[bytes]] = {}  # user -> that user's records, in the job's order
        for record in (r for shard in records for r in shard):
            user = tf.train.Example.FromString(record).features.feature[schema.USER].int64_list.value[0]
            lists.setdefault(user, []).append(record)
        moved_lists = list(lists.values())[::-1]  # other users first, and into other shards
        half = len(moved_lists) // 2
        for path, part in zip(files, (moved_lists[:half], moved_lists[half:]), strict=True):
            with tf.io.TFRecordWriter(path) as writer:
                for record in (r for user_records in part for r in user_records):
                    writer.write(record)
        assert [[r.numpy() for r in tf.data.TFRecordDataset(f)] for f in files] != records  # the files did change
        original, moved = reader.load_numpy(shop["out"], kind, "train"), reader.load_numpy(copy, kind, "train")
        for name, values in original.items():
            assert all(np.array_equal(a, b) for a, b in zip(values, moved[name], strict=True)), (kind, name)


@pytest.mark.parametrize(("kind", "split"), [("retrieval", "valid"), ("ranking", "train")])
def test_a_splits_columns_and_its_users_rows_alone_are_load_numpys(shop, kind, split):
    loaded = reader.load_numpy(shop["out"], kind, split)
    columns = reader.load_columns(shop["out"], kind, split, (schema.TARGET_ITEM,))
    np.testing.assert_array_equal(columns[schema.TARGET_ITEM], loaded[schema.TARGET_ITEM])
    users = np.unique(loaded[schema.USER])[::3]
    rows = np.flatnonzero(np.isin(loaded[schema.USER], users))
    some = reader.load_users(shop["out"], kind, split, users)
    assert set(some) == set(loaded) and len(some[schema.USER]) == len(rows) > 0
    for name, values in loaded.items():
        assert all(np.array_equal(a, b) for a, b in zip(some[name], values[rows], strict=True)), name


@pytest.mark.parametrize("count", [0, 7, 10**6])
def test_a_sample_of_users_read_alone_is_the_sample_of_the_loaded_split(shop, count):
    """reader.load_sample keeps the rows metrics.sample_users keeps of the whole split (every row for 0 or a count
    covering them), in the same order, without reading the other users' rows whole."""
    from components import metrics

    loaded = reader.load_numpy(shop["out"], "retrieval", "valid")
    ids = schema.indexed_vocab(shop["out"], schema.USER_VOCAB)
    rows = metrics.sample_users(ids[loaded[schema.USER]], count)
    sampled = reader.load_sample(shop["out"], "retrieval", "valid", ids, count)
    assert set(sampled) == set(loaded) and len(sampled[schema.USER]) == len(rows) > 0
    assert (len(rows) < len(loaded[schema.USER])) == (count == 7)
    for name, values in loaded.items():
        assert all(np.array_equal(a, b) for a, b in zip(sampled[name], values[rows], strict=True)), name
