"""The warehouse sources of `make pipeline-run SOURCE=...`, parsed in one place.

    synthetic:<preset> | amazon:<csv> | taobao:<csv>
    events:<csv or parquet>[,items:<csv or parquet>][,event_map=<from>:<to>[,<from>:<to>...]]
    ga4:<file or folder>[,items:<csv or parquet>][,user_key=user_id|user_pseudo_id]

Paths cannot contain commas. The GA4 user key travels on the warehouse URI (`?user_key=`), because the extract,
which reads the export, chooses the user column; see components.extract.ga4.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from components import schema
from components.warehouse.ga4 import USER_KEYS

KINDS = ("synthetic", "amazon", "taobao", "events", "ga4")
USAGE = (
    "synthetic:<preset>, amazon:<path>, taobao:<path>, events:<path>[,items:<path>][,event_map=from:to,...] "
    "or ga4:<file or folder>[,items:<path>][,user_key=user_id|user_pseudo_id]"
)


class SourceError(ValueError):
    """A SOURCE string that does not parse: says which part and what is expected."""


@dataclasses.dataclass(frozen=True)
class Source:
    kind: str
    path: str  # a preset name for synthetic
    items_path: str | None = None
    event_map: dict[str, str] = dataclasses.field(default_factory=dict)
    user_key: str | None = None

    def warehouse_uri(self, warehouse: str | Path) -> str:
        """The extract's URI of the DuckDB warehouse built from this source."""
        return f"duckdb://{warehouse}" + (f"?user_key={self.user_key}" if self.user_key else "")


def parse(source: str) -> Source:
    """The Source a SOURCE string names (kind, path and options), refused with the usage when malformed."""
    kind, sep, rest = source.partition(":")
    if not sep or kind not in KINDS or not rest:
        raise SourceError(f"source {source!r} must be one of {USAGE}")
    path, *options = rest.split(",")
    if kind in ("synthetic", "amazon", "taobao"):
        if options:
            raise SourceError(f"source {source!r}: {kind} takes no options (and its path no comma)")
        return Source(kind, path)
    items_path, event_map, user_key, in_map = None, {}, None, False
    for option in options:
        name, is_key, value = option.partition("=")
        if option.startswith("items:"):
            items_path, in_map = option[len("items:") :], False
        elif kind == "events" and is_key and name == "event_map":
            in_map = True
            _add_mapping(event_map, value, source)
        elif kind == "events" and in_map and not is_key:
            _add_mapping(event_map, option, source)
        elif kind == "ga4" and is_key and name == "user_key":
            if value not in USER_KEYS:
                raise SourceError(f"source {source!r}: user_key={value!r}, expected one of {list(USER_KEYS)}")
            user_key = value
        else:
            raise SourceError(f"source {source!r}: unexpected option {option!r}; expected {USAGE}")
    if items_path == "":
        raise SourceError(f"source {source!r}: items: names no file")
    return Source(kind, path, items_path, event_map, user_key)


def _add_mapping(event_map: dict[str, str], pair: str, source: str) -> None:
    raw, sep, target = pair.partition(":")
    if not sep or not raw or target not in schema.EVENT_TYPES:
        raise SourceError(
            f"source {source!r}: event_map entry {pair!r} must be <type in the file>:<one of "
            f"{'|'.join(schema.EVENT_TYPES)}>"
        )
    if raw in event_map and event_map[raw] != target:
        raise SourceError(f"source {source!r}: event_map maps {raw!r} twice ({event_map[raw]}, {target})")
    event_map[raw] = target


def resolved(source: Source) -> str:
    """The source as a string with absolute paths and what shapes the warehouse's content (not user_key, which
    only the extract reads): the record that tells whether an existing warehouse was built from it."""
    if source.kind == "synthetic":
        return f"synthetic:{source.path}"
    parts = [f"{source.kind}:{Path(source.path).resolve()}"]
    if source.items_path:
        parts.append(f"items:{Path(source.items_path).resolve()}")
    if source.event_map:
        parts.append("event_map=" + ",".join(f"{k}:{v}" for k, v in sorted(source.event_map.items())))
    return ",".join(parts)
