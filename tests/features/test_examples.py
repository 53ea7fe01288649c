"""examples.BlockEncoder equals the per-user encoder of features v2 (reference_examples.py) record for record."""

import numpy as np
import pytest

from components import schema
from components.features import examples as E
from components.features import sequences as S
from components.features import tfexample as tfx
from components.features.vocab import VocabCounts, build_vocabulary

from .reference_examples import add_user_counts, reference_user_examples
from .shop_data import items_table

NUM_ITEMS = 5_000  # item and category indices of one and two varint bytes


def _users(num_users=40, seed=3):
    """Users of 3..300 steps over a large catalogue: multi-byte varints, entries longer than 127 bytes, repeats
    (seen lists shorter than histories), purchases without views, and times far from the epoch."""
    rng = np.random.default_rng(seed)
    popular = rng.integers(0, NUM_ITEMS, size=30)
    out = []
    for u in range(num_users):
        n = int(rng.choice([3, 4, 5, 20, 300])) if u else 3
        steps = np.zeros(n, S.STEP_DTYPE)
        steps["item"] = np.where(rng.random(n) < 0.5, rng.choice(popular, n), rng.integers(0, NUM_ITEMS, n))
        steps["flags"] = rng.choice([S.VIEW, S.PURCHASE, S.VIEW | S.PURCHASE, S.VIEW | 2], size=n)
        steps["ts"] = 1_700_000_000 * 10**6 + np.cumsum(rng.integers(0, 10**11, size=n))
        out.append((f"user{u}", steps))
    return out


def _vocab(users, split):
    counts = VocabCounts.empty()
    for user_id, steps in users:
        add_user_counts(counts, user_id, steps["item"], steps["item"][split(steps)["train"]])
    catalogue = items_table([f"i{k:05d}" for k in range(NUM_ITEMS)])
    return build_vocabulary(counts, catalogue)


SPLITS = {
    "leave_last_out": S.split_fn("leave_last_out"),
    "capped": S.split_fn("leave_last_out", 7),
    "time": S.split_fn("time", 0, cut_us=1_700_000_000 * 10**6 + 5 * 10**12, window_us=2 * 10**12),
}


@pytest.fixture(scope="module")
def shop():
    users = _users()
    return users, _vocab(users, SPLITS["leave_last_out"])


@pytest.mark.parametrize("task", ["cvr", "next_item"])
@pytest.mark.parametrize(("split_name", "max_len"), [("leave_last_out", 1), ("capped", 4), ("time", 200)])
def test_block_encoder_gives_the_reference_records_in_user_order(shop, task, split_name, max_len, tmp_path):
    (users, vocab), split = shop, SPLITS[split_name]
    sampler = vocab.sampler()
    expected: dict = {}
    for user_id, steps in users:
        for where, records in reference_user_examples(
            user_id, steps, vocab, sampler, ranking_task=task, max_len=max_len, seed=5, split=split
        ).items():
            expected.setdefault(where, []).extend(records)
    encoder = E.BlockEncoder(vocab, sampler, ranking_task=task, max_len=max_len, seed=5, split=split)
    got: dict = {}
    for block in (users[:1], users[1:17], users[17:]):  # blocks of any size give the same records
        blocks, _ = encoder.encode([u for u, _ in block], [s for _, s in block])
        for where, (framed, count) in blocks.items():
            (tmp_path / "block.tfrecord").write_bytes(framed)
            assert tfx.count_frames(str(tmp_path / "block.tfrecord")) == count  # both CRCs of every record hold
            got.setdefault(where, []).extend(tfx.records(framed))
    assert set(got) == set(expected)
    for where in expected:
        assert len(got[where]) == len(expected[where]), where
        assert got[where] == expected[where], where
    assert sum(len(r) for r in expected.values()) > 100


def test_block_encoder_counts_the_capped_users_and_targets(shop):
    users, vocab = shop
    encoder = E.BlockEncoder(vocab, vocab.sampler(), ranking_task="cvr", max_len=4, seed=0, split=SPLITS["capped"])
    _, capped = encoder.encode([u for u, _ in users], [s for _, s in users])
    lengths = [len(s) for _, s in users]
    assert capped == {
        "capped/users": sum(n - 3 > 7 for n in lengths),
        "capped/train_targets": sum(max(0, n - 3 - 7) for n in lengths),
    }


def test_varints_match_the_scalar_encoder():
    values = np.array([0, 1, 127, 128, 16_383, 16_384, 2**21, 2**35 + 7, 2**63 - 1, -1, -(2**40)], np.int64)
    data, offsets = tfx.varints(values)
    assert data.tobytes() == b"".join(tfx.signed_varint(int(v)) for v in values)
    assert [data[a:b].tobytes() for a, b in zip(offsets[:-1], offsets[1:])] == [
        tfx.signed_varint(int(v)) for v in values
    ]


def test_length_table_headers_prefix_the_entries():
    key = tfx.Int64ListKey(schema.HIST_ITEMS)
    table = tfx.LengthTable(key.header)
    table.ensure(40_000)
    for n in (0, 1, 127, 128, 32_768, 32_769, 40_000):
        payload = bytes(range(256)) * (n // 256) + bytes(n % 256)
        header = table.data[table.offsets[n] : table.offsets[n + 1]].tobytes()
        assert header + payload == key.entry(payload)


def test_vocab_counts_of_a_block_equal_the_users_one_by_one(shop):
    users, _ = shop
    split = SPLITS["capped"]
    one = VocabCounts.empty()
    for user_id, steps in users:
        add_user_counts(one, user_id, steps["item"], steps["item"][split(steps)["train"]])
    block = VocabCounts.empty()
    for part in (users[:5], users[5:]):
        steps = np.concatenate([s for _, s in part])
        offsets = np.cumsum([0] + [len(s) for _, s in part])
        train = np.concatenate([split(s)["train"] + a for (_, s), a in zip(part, offsets)])
        block.add_block([u for u, _ in part], np.diff(offsets), steps["item"], steps["item"][train])
    n = max(len(one.item_steps), len(block.item_steps))
    assert np.array_equal(_fit(one.item_steps, n), _fit(block.item_steps, n))
    assert np.array_equal(_fit(one.item_train_targets, n), _fit(block.item_train_targets, n))
    assert one.user_steps == block.user_steps


def _fit(counts, n):
    out = np.zeros(n, np.int64)
    out[: len(counts)] = counts
    return out


@pytest.mark.parametrize("task", ["cvr", "next_item"])
def test_users_whose_draws_need_their_generator_again_give_the_reference_records(shop, task):
    """All the popularity on one item: excluding it leaves no mass, so sample_excluding draws again from the user's
    generator (uniform over the others); the block encoder redraws those users alone and must still agree."""
    users, vocab = shop
    popular = int(vocab.item_of_row[users[0][1]["item"][0]])
    weights = np.zeros(vocab.num_items)
    weights[popular] = 1.0
    sampler = S.PopularitySampler(weights)
    split = SPLITS["leave_last_out"]
    expected: dict = {}
    for user_id, steps in users:
        for where, records in reference_user_examples(
            user_id, steps, vocab, sampler, ranking_task=task, max_len=3, seed=2, split=split
        ).items():
            expected.setdefault(where, []).extend(records)
    encoder = E.BlockEncoder(vocab, sampler, ranking_task=task, max_len=3, seed=2, split=split)
    blocks, _ = encoder.encode([u for u, _ in users], [s for _, s in users])
    assert {where: tfx.records(framed) for where, (framed, _) in blocks.items()} == expected
    stuck = sum(int((vocab.item_of_row[s["item"]] == popular).sum()) for _, s in users)
    assert stuck > 0  # some steps were redrawn
