"""The prediction request body, parsed and checked: every refusal is one line naming the field.

    {"instances": [{"user_id": "u1",
                    "history": ["i3", "i9"],                                   # or, richer:
                    "events": [{"item_id": "i3", "event_type": "view", "event_ts": "2026-11-30T10:00:00Z"}],
                    "k": 10, "exclude": ["i5"]}]}

`history` and `events` are what the user did after the stored history (not yet in the warehouse), oldest first;
events are put in time order (ties keep their order in the request), as the warehouse orders a user's events, and
their event types and times reach the ranker (history items have neither: unknown to it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

from components import schema

FIELDS = ("user_id", "history", "events", "k", "exclude")
EVENT_FIELDS = ("item_id", "event_type", "event_ts")


class RequestError(ValueError):
    """A request the server refuses; `status` is the HTTP status, the message names the field."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Instance:
    user_id: str
    recent: tuple[str, ...] = ()  # item ids after the stored history, oldest first
    k: int | None = None  # None: the model's top_k
    exclude: tuple[str, ...] = ()
    # given as events: each recent item's (event type, time in seconds since the epoch); empty for `history`
    recent_events: tuple[tuple[str, int], ...] = ()


def parse_body(body: bytes, *, max_instances: int, max_k: int) -> list[Instance]:
    """The instances of a request body; RequestError for anything malformed."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(f"body: not valid JSON ({err})") from None
    if not isinstance(payload, dict):
        raise RequestError(f'body: must be a JSON object {{"instances": [...]}}, got {_kind(payload)}')
    unknown = sorted(set(payload) - {"instances", "parameters"})
    if unknown:
        raise RequestError(f"body.{unknown[0]}: unknown field (expected instances)")
    if "instances" not in payload:
        raise RequestError("instances: missing")
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise RequestError(f"instances: must be a list, got {_kind(instances)}")
    if not instances:
        raise RequestError("instances: empty; give at least one instance")
    if len(instances) > max_instances:
        raise RequestError(f"instances: {len(instances)} instances, at most {max_instances} per request", status=413)
    return [parse_instance(raw, f"instances[{i}]", max_k) for i, raw in enumerate(instances)]


def parse_instance(raw, where: str, max_k: int) -> Instance:
    if not isinstance(raw, dict):
        raise RequestError(f"{where}: must be an object with a user_id, got {_kind(raw)}")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise RequestError(f"{where}.{unknown[0]}: unknown field (expected one of {', '.join(FIELDS)})")
    if "user_id" not in raw:
        raise RequestError(f"{where}.user_id: missing")
    user_id = raw["user_id"]
    if not isinstance(user_id, str) or not user_id:
        raise RequestError(f"{where}.user_id: must be a non-empty string, got {_kind(user_id)}")
    if "history" in raw and "events" in raw:
        raise RequestError(f"{where}: give history or events, not both")
    events: tuple[tuple[str, int], ...] = ()
    if "events" in raw:
        ordered = _events(raw["events"], f"{where}.events")
        recent, events = tuple(item for item, _, _ in ordered), tuple((kind, ts) for _, kind, ts in ordered)
    else:
        recent = _ids(raw.get("history", []), f"{where}.history")
    k = raw.get("k")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= max_k):
        raise RequestError(f"{where}.k: must be an integer from 1 to {max_k} (the export depth), got {json.dumps(k)}")
    exclude = _ids(raw.get("exclude", []), f"{where}.exclude")
    return Instance(user_id=user_id, recent=recent, k=k, exclude=exclude, recent_events=events)


def _ids(values, where: str) -> tuple[str, ...]:
    if not isinstance(values, list):
        raise RequestError(f"{where}: must be a list of item id strings, got {_kind(values)}")
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value:
            raise RequestError(f"{where}[{i}]: must be a non-empty item id string, got {_kind(value)}")
    return tuple(values)


def _events(values, where: str) -> list[tuple[str, str, int]]:
    """The events as (item id, event type, time in whole seconds since the epoch), in time order."""
    if not isinstance(values, list):
        raise RequestError(f"{where}: must be a list of event objects, got {_kind(values)}")
    events = []
    for i, raw in enumerate(values):
        at = f"{where}[{i}]"
        if not isinstance(raw, dict):
            raise RequestError(f"{at}: must be an object with {', '.join(EVENT_FIELDS)}, got {_kind(raw)}")
        unknown = sorted(set(raw) - set(EVENT_FIELDS))
        if unknown:
            raise RequestError(f"{at}.{unknown[0]}: unknown field (expected {', '.join(EVENT_FIELDS)})")
        missing = [f for f in EVENT_FIELDS if f not in raw]
        if missing:
            raise RequestError(f"{at}.{missing[0]}: missing")
        item_id, event_type, event_ts = raw["item_id"], raw["event_type"], raw["event_ts"]
        if not isinstance(item_id, str) or not item_id:
            raise RequestError(f"{at}.item_id: must be a non-empty item id string, got {_kind(item_id)}")
        if event_type not in schema.EVENT_TYPES:
            raise RequestError(
                f"{at}.event_type: must be one of {', '.join(schema.EVENT_TYPES)}, got {json.dumps(event_type)}"
            )
        events.append((_timestamp(event_ts, f"{at}.event_ts"), item_id, event_type))
    ordered = sorted(events, key=lambda e: e[0])  # stable: ties keep request order
    return [(item, kind, int(at.timestamp() // 1)) for at, item, kind in ordered]


def _timestamp(value, where: str) -> dt.datetime:
    """An ISO-8601 time; naive means UTC, as in the warehouse."""
    if not isinstance(value, str):
        raise RequestError(f"{where}: must be an ISO-8601 time string such as 2026-11-30T10:00:00Z, got {_kind(value)}")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise RequestError(f"{where}: {json.dumps(value)} is not an ISO-8601 time") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)


def _kind(value) -> str:
    """How a wrong value is named in a message: its JSON type, and the value when it is short."""
    kinds = {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }
    kind = kinds.get(type(value), type(value).__name__)
    text = json.dumps(value) if not isinstance(value, (dict, list)) else ""
    return f"{kind} {text}" if text and len(text) <= 40 else kind
