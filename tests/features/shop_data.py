"""Hand-made extract directories (events.parquet, items.parquet, manifest.json) for the features tests."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components import schema

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def events_table(rows: list[tuple]) -> pa.Table:
    """rows: (user_id, item_id, event_type, minutes after T0, event_seq[, session_id])."""
    columns = {name: [] for name in schema.EVENTS.names}
    for row in rows:
        user, item, event_type, minutes, seq = row[:5]
        columns["user_id"].append(user)
        columns["item_id"].append(item)
        columns["event_type"].append(event_type)
        columns["event_ts"].append(T0 + timedelta(minutes=minutes))
        columns["event_seq"].append(seq)
        columns["session_id"].append(row[5] if len(row) > 5 else None)
    return pa.table(columns, schema=schema.EVENTS)


def items_table(item_ids: list[str], categories: list[str] | None = None) -> pa.Table:
    n = len(item_ids)
    return pa.table(
        {
            "item_id": item_ids,
            "category": categories or [f"c{i % 3}" for i in range(n)],
            "brand": [None if i % 2 else f"b{i}" for i in range(n)],
            "price": [None if i % 4 == 3 else float(i) + 0.5 for i in range(n)],
            "title": [f"t{i}" for i in range(n)],
            "available": [i % 5 != 4 for i in range(n)],
        },
        schema=schema.ITEMS,
    )


def write_extract(directory: Path, events: pa.Table, items: pa.Table, row_group_size: int | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(events, directory / "events.parquet", row_group_size=row_group_size)
    pq.write_table(items, directory / "items.parquet")
    manifest = {"source": "test", "rows": {"events": events.num_rows, "items": items.num_rows}}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def random_shop(
    num_users: int = 40, num_items: int = 25, seed: int = 1, funnel: bool = True
) -> tuple[pa.Table, pa.Table]:
    """A small random shop: Zipf-ish item popularity, view->cart->purchase funnels, repeats and ties."""
    rng = np.random.default_rng(seed)
    item_ids = [f"i{k:03d}" for k in range(num_items)]
    weights = 1.0 / np.arange(1, num_items + 1)
    rows = []
    for u in range(num_users):
        minute, seq = 0, 0
        for _ in range(rng.integers(2, 12)):
            item = item_ids[rng.choice(num_items, p=weights / weights.sum())]
            types = ["view"]
            if funnel and rng.random() < 0.4:
                types.append("cart")
                if rng.random() < 0.6:
                    types.append("purchase")
            if not funnel:
                types = ["purchase"]
            for event_type in types:
                rows.append((f"u{u:03d}", item, event_type, minute, seq))
                seq += 1
                minute += int(rng.integers(0, 2))  # zero steps make timestamp ties
    rng.shuffle(rows)  # extract sorts, but the features job must not rely on row order
    return events_table(rows), items_table(item_ids)
