"""Loaders for public interaction formats into the warehouse tables (schema.EVENTS, schema.ITEMS).

Both formats carry one timestamp per row at coarse resolution, so `event_seq` is the row's position in the file:
every later sort by (event_ts, event_seq) keeps the file order where timestamps tie, as the data sets intend.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv

from components import schema
from components.warehouse import timestamps

AMAZON_COLUMNS = {
    "user_id": pa.string(),
    "item_id": pa.string(),
    "timestamp": pa.int64(),
    "cate_id": pa.string(),
    "attr_ids": pa.string(),
}
TAOBAO_COLUMNS = {
    "user_id": pa.string(),
    "item_id": pa.string(),
    "category_id": pa.string(),
    "behavior_type": pa.string(),
    "timestamp": pa.int64(),
}
TAOBAO_EVENT_TYPES = {"pv": "view", "cart": "cart", "fav": "fav", "buy": "purchase"}


class LoaderError(ValueError):
    """A public-format file that cannot be read as that format: names the file and the problem."""


def read_csv(path: str | Path, columns: dict[str, pa.DataType], header: bool = True) -> pa.Table:
    """Reads a (possibly gzipped) CSV with exactly these columns and types; empty fields are errors."""
    path = Path(path)
    if not path.is_file():
        raise LoaderError(f"{path}: no such file")
    names = list(columns)
    read_options = csv.ReadOptions(column_names=None if header else names, block_size=1 << 24)
    convert = csv.ConvertOptions(
        column_types=columns, include_columns=names, strings_can_be_null=True, quoted_strings_can_be_null=True
    )
    try:
        table = csv.read_csv(path, read_options=read_options, convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowKeyError, OSError, EOFError) as err:
        raise LoaderError(f"{path}: not a valid CSV with columns {names}: {err}") from err
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise LoaderError(f"{path}: missing column(s) {missing}; expected header {','.join(names)}")
    if table.num_rows == 0:
        raise LoaderError(f"{path}: no rows")
    for name in names:
        nulls = table.column(name).null_count
        if nulls:
            raise LoaderError(f"{path}: column {name!r} has {nulls} empty value(s)")
    return table.select(names)


def first_row_per_item(table: pa.Table) -> pa.Table:
    """One row per item_id: its first occurrence in file order."""
    _, first = np.unique(table.column("item_id").to_numpy(zero_copy_only=False), return_index=True)
    return table.take(pa.array(np.sort(first)))


def amazon_brands(attr_ids: pa.ChunkedArray, cate_ids: pa.ChunkedArray) -> pa.Array:
    """The brand of each item from its `attr_ids` (brand id, then the category path), or null.

    The preprocessed 5-core files list an optional brand id followed by the category path ending at the leaf
    `cate_id`. A leading token that is no leaf and never appears later in any item's list is a brand: category tokens do
    (every top-level category also appears after some brand), brand tokens never do. On Beauty this finds
    435 brands for 7,492 of the 12,101 items.
    """
    token_lists = pc.split_pattern(pc.utf8_trim_whitespace(attr_ids), " ").to_pylist()
    category_tokens = {token for tokens in token_lists for token in tokens[1:]} | set(cate_ids.to_pylist())
    return pa.array(
        [tokens[0] if tokens and tokens[0] and tokens[0] not in category_tokens else None for tokens in token_lists],
        pa.string(),
    )


def load_amazon(path: str | Path) -> tuple[pa.Table, pa.Table]:
    """Amazon 5-core CSV (`user_id,item_id,timestamp,cate_id,attr_ids`): every row is a purchase."""
    raw = read_csv(path, AMAZON_COLUMNS)
    n = raw.num_rows
    events = pa.Table.from_arrays(
        [
            raw["user_id"],
            raw["item_id"],
            pa.array(np.full(n, "purchase", dtype=object), pa.string()),
            timestamps.from_unix_seconds(raw["timestamp"], f"{path}: column 'timestamp'"),
            pa.array(np.arange(n, dtype=np.int64)),
            pa.nulls(n, pa.string()),
        ],
        schema=schema.EVENTS,
    )
    # Brands are judged over the whole catalogue, so compute them before keeping one row per item.
    catalogue = first_row_per_item(raw)
    items = pa.Table.from_arrays(
        [
            catalogue["item_id"],
            catalogue["cate_id"],
            amazon_brands(catalogue["attr_ids"], catalogue["cate_id"]),
            pa.nulls(catalogue.num_rows, pa.float64()),
            pa.nulls(catalogue.num_rows, pa.string()),
            pa.array(np.ones(catalogue.num_rows, dtype=bool)),
        ],
        schema=schema.ITEMS,
    )
    return events, items


def load_taobao(path: str | Path) -> tuple[pa.Table, pa.Table]:
    """Taobao UserBehavior CSV (`user_id,item_id,category_id,behavior_type,timestamp`, no header in the original
    release; a header line with these names is accepted too). pv -> view, cart, fav, buy -> purchase."""
    raw = read_csv(path, TAOBAO_COLUMNS, header=has_header(path, "user_id"))
    behaviour = raw["behavior_type"]
    unknown = pc.unique(
        pc.filter(behaviour, pc.invert(pc.is_in(behaviour, pa.array(list(TAOBAO_EVENT_TYPES)))))
    ).to_pylist()
    if unknown:
        raise LoaderError(
            f"{path}: unknown behavior_type value(s) {unknown[:10]}; expected {sorted(TAOBAO_EVENT_TYPES)}"
        )
    codes = pc.index_in(behaviour, value_set=pa.array(list(TAOBAO_EVENT_TYPES)))
    event_type = pa.array(list(TAOBAO_EVENT_TYPES.values()), pa.string()).take(codes)
    n = raw.num_rows
    events = pa.Table.from_arrays(
        [
            raw["user_id"],
            raw["item_id"],
            event_type,
            timestamps.from_unix_seconds(raw["timestamp"], f"{path}: column 'timestamp'"),
            pa.array(np.arange(n, dtype=np.int64)),
            pa.nulls(n, pa.string()),
        ],
        schema=schema.EVENTS,
    )
    catalogue = first_row_per_item(raw)
    items = pa.Table.from_arrays(
        [
            catalogue["item_id"],
            catalogue["category_id"],
            pa.nulls(catalogue.num_rows, pa.string()),
            pa.nulls(catalogue.num_rows, pa.float64()),
            pa.nulls(catalogue.num_rows, pa.string()),
            pa.array(np.ones(catalogue.num_rows, dtype=bool)),
        ],
        schema=schema.ITEMS,
    )
    return events, items


def has_header(path: str | Path, first_column: str) -> bool:
    """True when the file's first line starts with the name of the first column."""
    opener = gzip.open if Path(path).suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
            return handle.readline().strip().startswith(first_column)
    except (OSError, EOFError) as err:
        raise LoaderError(f"{path}: cannot read: {err}") from err
