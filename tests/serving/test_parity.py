"""For the same model and stored history, the server's list is the export's list, item for item (tiny shop)."""

import copy

import pytest

from components import ab
from components.serving.instances import Instance

from .conftest import TOP_K


def test_every_user_gets_the_exported_list(predictor, exported_lists):
    users = sorted(exported_lists)
    served = predictor.predict([Instance(user_id=u) for u in users])
    variants = {p["variant"] for p in served}
    assert variants == {"control", "treatment"}, "both arms must be exercised"
    assert {p["source"] for p in served} >= {"funnel"}
    for user, got in zip(users, served):
        want = exported_lists[user]
        assert got["items"] == want["items"], user
        assert got["scores"] == pytest.approx(want["scores"], rel=1e-5, abs=1e-6), user
        assert (got["source"], got["variant"], got["model_version"]) == (
            want["source"],
            want["variant"],
            want["model_version"],
        ), user


def test_one_user_per_call_gives_the_same_lists(predictor, exported_lists):
    """Batching across requests must not change a list: one user at a time equals the export's large batches."""
    users = sorted(exported_lists)[:25]
    for user in users:
        assert predictor.predict([Instance(user_id=user)])[0]["items"] == exported_lists[user]["items"], user


def test_shorter_lists_are_prefixes_of_the_exported_one(predictor, exported_lists):
    user = min(exported_lists)
    got = predictor.predict([Instance(user_id=user, k=3), Instance(user_id=user, k=TOP_K + 5)])
    assert got[0]["items"] == exported_lists[user]["items"][:3]
    assert got[1]["items"][:TOP_K] == exported_lists[user]["items"] and len(got[1]["items"]) == TOP_K + 5


def test_one_model_for_both_variants_is_one_funnel_call(predictor, exported_lists):
    """Without an earlier blessed model the control arm is the treatment model: a batch of users of both variants
    is one funnel call, each user keeps its variant, and each list is the one the user gets alone (and, for the
    treatment users, the export's)."""
    single = copy.copy(predictor)
    single._arms = {ab.TREATMENT: predictor._arms[ab.TREATMENT], ab.CONTROL: predictor._arms[ab.TREATMENT]}
    calls, funnel = [], single._funnel

    def counting(arm, histories, depth):
        calls.append(len(histories))
        return funnel(arm, histories, depth)

    single._funnel = counting
    users = sorted(exported_lists)[:12]
    together = single.predict([Instance(user_id=u) for u in users])
    assert calls == [len(users)]
    assert [p["variant"] for p in together] == [exported_lists[u]["variant"] for u in users]
    assert {p["variant"] for p in together} == {"control", "treatment"}
    for user, got in zip(users, together):
        assert (
            got["model_version"] == "v1-dien" and got["items"] == single.predict([Instance(user_id=user)])[0]["items"]
        )
        if got["variant"] == "treatment":
            assert got["items"] == exported_lists[user]["items"], user
