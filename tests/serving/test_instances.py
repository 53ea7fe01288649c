"""The request body: what is accepted, and a one-line refusal naming the field for everything else."""

import json

import pytest

from components.serving.instances import Instance, RequestError, parse_body


def parse(payload, max_instances=4, max_k=30):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_body(body, max_instances=max_instances, max_k=max_k)


def test_a_full_instance():
    got = parse({"instances": [{"user_id": "u1", "history": ["a", "b"], "k": 5, "exclude": ["c"]}]})
    assert got == [Instance(user_id="u1", recent=("a", "b"), k=5, exclude=("c",))]


def test_events_are_put_in_time_order_ties_keeping_request_order():
    events = [
        {"item_id": "late", "event_type": "purchase", "event_ts": "2026-11-30T10:05:00Z"},
        {"item_id": "tie1", "event_type": "view", "event_ts": "2026-11-30T10:00:00+00:00"},
        {"item_id": "tie2", "event_type": "cart", "event_ts": "2026-11-30T11:00:00+01:00"},  # the same instant
        {"item_id": "naive", "event_type": "fav", "event_ts": "2026-11-30T09:00:00"},  # naive is UTC
    ]
    got = parse({"instances": [{"user_id": "u", "events": events}]})[0]
    assert got.recent == ("naive", "tie1", "tie2", "late")
    ten = 1_796_032_800  # 2026-11-30T10:00:00Z in seconds
    assert got.recent_events == (("fav", ten - 3600), ("view", ten), ("cart", ten), ("purchase", ten + 300))
    assert parse({"instances": [{"user_id": "u", "history": ["a"]}]})[0].recent_events == ()


def test_vertex_parameters_are_allowed_beside_instances():
    assert parse({"instances": [{"user_id": "u"}], "parameters": {}})[0].user_id == "u"


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"{not json", "body: not valid JSON"),
        (b"", "body: not valid JSON"),
        (b"\xff\xfe", "body: not valid JSON"),
        ([1, 2], "body: must be a JSON object"),
        ({"instance": []}, "body.instance: unknown field"),
        ({}, "instances: missing"),
        ({"instances": {"user_id": "u"}}, "instances: must be a list, got object"),
        ({"instances": []}, "instances: empty"),
        ({"instances": ["u1"]}, 'instances[0]: must be an object with a user_id, got string "u1"'),
        ({"instances": [{}]}, "instances[0].user_id: missing"),
        ({"instances": [{"user_id": 7}]}, "instances[0].user_id: must be a non-empty string, got number 7"),
        ({"instances": [{"user_id": ""}]}, "instances[0].user_id: must be a non-empty string"),
        ({"instances": [{"user_id": "u", "histroy": []}]}, "instances[0].histroy: unknown field"),
        ({"instances": [{"user_id": "u", "history": "i1"}]}, "instances[0].history: must be a list of item id strings"),
        (
            {"instances": [{"user_id": "u", "history": ["a", 3]}]},
            "instances[0].history[1]: must be a non-empty item id",
        ),
        (
            {"instances": [{"user_id": "u", "history": [], "events": []}]},
            "instances[0]: give history or events, not both",
        ),
        (
            {"instances": [{"user_id": "u", "k": 0}]},
            "instances[0].k: must be an integer from 1 to 30 (the export depth), got 0",
        ),
        ({"instances": [{"user_id": "u", "k": 31}]}, "instances[0].k: must be an integer from 1 to 30"),
        (
            {"instances": [{"user_id": "u", "k": "5"}]},
            'instances[0].k: must be an integer from 1 to 30 (the export depth), got "5"',
        ),
        ({"instances": [{"user_id": "u", "k": True}]}, "instances[0].k: must be an integer"),
        ({"instances": [{"user_id": "u", "k": 2.0}]}, "instances[0].k: must be an integer"),
        (
            {"instances": [{"user_id": "u", "exclude": [None]}]},
            "instances[0].exclude[0]: must be a non-empty item id string, got null",
        ),
        (
            {"instances": [{"user_id": "u"}, {"user_id": "v", "events": {}}]},
            "instances[1].events: must be a list of event objects",
        ),
        (
            {"instances": [{"user_id": "u", "events": [{"item_id": "a", "event_type": "view"}]}]},
            "instances[0].events[0].event_ts: missing",
        ),
        (
            {
                "instances": [
                    {"user_id": "u", "events": [{"item_id": "a", "event_type": "click", "event_ts": "2026-11-30"}]}
                ]
            },
            'instances[0].events[0].event_type: must be one of view, cart, fav, purchase, got "click"',
        ),
        (
            {
                "instances": [
                    {"user_id": "u", "events": [{"item_id": "a", "event_type": "view", "event_ts": 1764500000}]}
                ]
            },
            "instances[0].events[0].event_ts: must be an ISO-8601 time string",
        ),
        (
            {
                "instances": [
                    {"user_id": "u", "events": [{"item_id": "a", "event_type": "view", "event_ts": "yesterday"}]}
                ]
            },
            'instances[0].events[0].event_ts: "yesterday" is not an ISO-8601 time',
        ),
        (
            {
                "instances": [
                    {
                        "user_id": "u",
                        "events": [{"item_id": "a", "event_type": "view", "event_ts": "2026-11-30", "price": 3}],
                    }
                ]
            },
            "instances[0].events[0].price: unknown field",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_field(payload, message):
    with pytest.raises(RequestError) as raised:
        parse(payload)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value) and raised.value.status == 400


def test_too_many_instances_is_413():
    with pytest.raises(RequestError, match=r"instances: 5 instances, at most 4 per request") as raised:
        parse({"instances": [{"user_id": f"u{i}"} for i in range(5)]})
    assert raised.value.status == 413
