"""split=time through run_features: the window boundaries, users without train events, the default cut."""

import json

from components import schema
from components.features import reader
from components.features.pipeline import run_features
from components.features.sequences import MIN_STEPS, min_steps

from .shop_data import events_table, items_table, write_extract

IN_PROCESS = ["--runner=FnApiRunner"]
DAY = 24 * 60  # minutes; T0 of shop_data is 2024-01-01T00:00Z
CUT = "2024-01-03T00:00:00+00:00"  # valid = Jan 3, test = Jan 4


def _events():
    rows = [
        # u1: train steps, a step at exactly the cut (valid), a step at exactly cut + d (test), one after the test
        ("u1", "i0", "view", 0, 0),
        ("u1", "i1", "view", 1, 1),
        ("u1", "i2", "view", 2 * DAY - 1, 2),
        ("u1", "i3", "view", 2 * DAY, 3),
        ("u1", "i4", "view", 3 * DAY, 4),
        ("u1", "i0", "view", 4 * DAY, 5),
        # u2: no train event at all, two steps in the test window (first is history only)
        ("u2", "i1", "view", 3 * DAY + 10, 0),
        ("u2", "i2", "view", 3 * DAY + 20, 1),
        # u3: one train step and one test step: two steps, dropped by leave-last-out, counted by the time split
        ("u3", "i3", "view", 10, 0),
        ("u3", "i4", "purchase", 3 * DAY + 30, 1),
    ]
    return events_table(rows), items_table([f"i{k}" for k in range(5)])


def _targets(out, split):
    data = reader.load_numpy(out, "retrieval", split)
    users, items = schema.read_vocab(out, schema.USER_VOCAB), schema.read_vocab(out, schema.ITEM_VOCAB)
    return sorted((users[u - 2], items[t - 2]) for u, t in zip(data["user"], data["target_item"]))


def test_time_split_windows_and_users_without_train_events(tmp_path):
    extract = write_extract(tmp_path / "extract", *_events())
    stats = run_features(
        str(extract), str(tmp_path / "f"), max_len=4, beam_args=IN_PROCESS, split="time", split_cut=CUT
    )
    out = tmp_path / "f"
    assert _targets(out, "train") == [("u1", "i1"), ("u1", "i2")]
    assert _targets(out, "valid") == [("u1", "i3")]  # the event at exactly T is valid, not train
    assert _targets(out, "test") == [("u1", "i4"), ("u2", "i2"), ("u3", "i4")]  # at exactly T + d: test
    assert stats["users"] == 3 and "too_few_steps" not in stats.get("dropped_users", {})
    window = stats["split_window"]
    assert window["valid"] == [CUT, "2024-01-04T00:00:00+00:00"]
    assert window["test"] == ["2024-01-04T00:00:00+00:00", "2024-01-05T00:00:00+00:00"]
    assert schema.FeatureSpec.read(out).split == "time"
    assert min_steps("time") == 2 and min_steps("leave_last_out") == MIN_STEPS


def test_time_split_default_cut_ends_the_test_window_at_the_extract_window_end(tmp_path):
    extract = write_extract(tmp_path / "extract", *_events())
    manifest = json.loads((extract / "manifest.json").read_text())
    manifest["window_end"] = "2024-01-05T00:00:00+00:00"  # as a window_days extract writes it
    (extract / "manifest.json").write_text(json.dumps(manifest))
    stats = run_features(str(extract), str(tmp_path / "f"), max_len=4, beam_args=IN_PROCESS, split="time")
    assert stats["split_window"]["cut"] == CUT
    assert _targets(tmp_path / "f", "test") == [("u1", "i4"), ("u2", "i2"), ("u3", "i4")]
