"""The local warehouse: a DuckDB file with the tables of schema.TABLES, written atomically.

Why atomic: a reader (extract, a benchmark) must never open a half-built warehouse, so the file is built
under a temporary name in the target directory and renamed over the target only when complete.
Beside a warehouse that is reused (ensure_warehouse), `<name>.source.json` records what it was built from.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pyarrow as pa

from components import atomic, schema
from components.warehouse import events_file, ga4, loaders, sources, synthetic

DUCKDB_TYPES = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
}
URI_PREFIX = "duckdb://"


def duckdb_path(uri: str) -> Path:
    """The file of a `duckdb:///abs/path.duckdb` URI (a bare path is accepted too)."""
    path = uri[len(URI_PREFIX) :] if uri.startswith(URI_PREFIX) else uri
    if not path:
        raise ValueError(f"warehouse URI {uri!r} names no file; expected duckdb:///abs/path/shop.duckdb")
    return Path(path)


def connect(path: str | Path, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """A connection whose TIMESTAMPTZ values come back in UTC, as schema.EVENTS expects (no progress bar in logs)."""
    if read_only and not Path(path).is_file():
        raise FileNotFoundError(f"no DuckDB warehouse at {path}")
    con = duckdb.connect(str(path), read_only=read_only)
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    return con


def create_table_sql(name: str, table_schema: pa.Schema, if_not_exists: bool = False) -> str:
    """DuckDB DDL for an Arrow schema from components.schema (warehouse tables and the export's tables)."""
    columns = ", ".join(
        f'"{field.name}" {DUCKDB_TYPES[field.type]}{"" if field.nullable else " NOT NULL"}' for field in table_schema
    )
    return f'CREATE TABLE {"IF NOT EXISTS " if if_not_exists else ""}"{name}" ({columns})'


class WarehouseWriter:
    """Creates the tables in a temporary DuckDB file, appends Arrow chunks, and renames it into place on commit."""

    def __init__(self, out_path: str | Path, tables: Iterable[str] = ("events", "items")):
        self.out_path = Path(out_path)
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_path = self.out_path.with_name(f".{self.out_path.name}.{uuid.uuid4().hex}.tmp")
        self.tables = tuple(tables)
        self.con = connect(self.tmp_path, read_only=False)
        for name in self.tables:
            self.con.execute(create_table_sql(name, schema.TABLES[name]))

    def append(self, name: str, table: pa.Table) -> None:
        """Appends a chunk to a declared table, checked against its contract first (schema.validate_table)."""
        if name not in self.tables:
            raise ValueError(f"table {name!r} was not declared; declared: {self.tables}")
        chunk = schema.validate_table(table, schema.TABLES[name], name)
        self.con.register("_chunk", chunk)
        try:
            self.con.execute(f'INSERT INTO "{name}" SELECT * FROM _chunk')
        finally:
            self.con.unregister("_chunk")

    def counts(self) -> dict[str, int]:
        """The rows of every declared table so far."""
        return {name: self.con.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0] for name in self.tables}

    def commit(self) -> dict[str, int]:
        """Checkpoints the temporary file and renames it into place, so readers see a whole warehouse; returns the
        counts."""
        counts = self.counts()
        self.con.execute("CHECKPOINT")
        self.con.close()
        os.replace(self.tmp_path, self.out_path)
        return counts

    def abort(self) -> None:
        """Drops the temporary file (and its WAL): a failed build leaves no warehouse that looks whole."""
        self.con.close()
        for path in (self.tmp_path, self.tmp_path.with_name(self.tmp_path.name + ".wal")):
            path.unlink(missing_ok=True)

    def __enter__(self) -> WarehouseWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def table_counts(path: str | Path) -> dict[str, int]:
    """Row counts of the warehouse tables present in a DuckDB file."""
    con = connect(path)
    try:
        present = {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        return {
            name: con.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0]
            for name in schema.TABLES
            if name in present
        }
    finally:
        con.close()


def build_warehouse(source: str, out_path: str | Path, seed: int = 0) -> dict[str, int]:
    """Writes the warehouse for `source` to out_path; returns row counts per table.

    The seed matters for synthetic sources only (public data is loaded as is). A GA4 export becomes the one table
    ga4.TABLE, which the extract reads through its GA4 queries.
    """
    parsed = sources.parse(source)
    kind, arg = parsed.kind, parsed.path
    if kind == "ga4":
        return write_ga4_warehouse(arg, out_path, parsed.items_path)
    if kind == "synthetic":
        world = synthetic.make_world(arg, seed)
        with WarehouseWriter(out_path, ("events", "items", "impressions")) as writer:
            writer.append("items", synthetic.items_table(world))
            for chunk in synthetic.iter_chunks(world):
                writer.append("events", chunk.events)
                writer.append("impressions", chunk.impressions)
            return writer.commit()
    if kind == "events":
        events, items = events_file.load_events_file(arg, parsed.items_path, parsed.event_map)
    else:
        events, items = loaders.load_amazon(arg) if kind == "amazon" else loaders.load_taobao(arg)
    with WarehouseWriter(out_path, ("events", "items")) as writer:
        writer.append("items", items)
        writer.append("events", events)
        return writer.commit()


def write_ga4_warehouse(export_path: str | Path, out_path: str | Path, items_path: str | Path | None = None) -> dict:
    """A warehouse holding the GA4 export as loaded by ga4.load, and a catalogue file (if given) as the contract's
    `items` table, which the GA4 extract then reads instead of deriving the catalogue; same write-then-rename rule."""
    with WarehouseWriter(out_path, ("items",) if items_path else ()) as writer:
        rows = ga4.load(writer.con, export_path)
        if items_path:
            writer.append("items", events_file.load_items_file(items_path))
        return {ga4.TABLE: rows, **writer.commit()}


class SourceMismatch(ValueError):
    """An existing warehouse was built from another source than the one asked for."""


def source_record(source: str, seed: int = 0) -> dict:
    """What a warehouse is built from: the source (a file as an absolute path, with its size and mtime) and,
    for a synthetic shop, the seed."""
    parsed = sources.parse(source)
    if parsed.kind == "synthetic":
        return {"source": source, "seed": seed}
    files = [Path(parsed.path)] + ([Path(parsed.items_path)] if parsed.items_path else [])
    if parsed.kind == "ga4":  # a folder of daily files counts file by file
        files = ga4.export_files(parsed.path)[1] + ([Path(parsed.items_path)] if parsed.items_path else [])
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"source {source!r}: no file {missing[0]}")
    stats = [p.resolve().stat() for p in files]
    return {
        "source": sources.resolved(parsed),
        "size": sum(st.st_size for st in stats),
        "mtime_ns": max(st.st_mtime_ns for st in stats),
    }


def record_path(out_path: str | Path) -> Path:
    """Where the warehouse's source record goes: beside it, as <name>.source.json."""
    return Path(out_path).with_suffix(".source.json")


def ensure_warehouse(source: str, out_path: str | Path, seed: int = 0) -> dict[str, int] | None:
    """Builds the warehouse at out_path unless the one there was built from this very source (None then).

    A source file that changed since (size or mtime) is loaded again; a warehouse of another source or seed,
    or one with no record of its source, is refused with SourceMismatch rather than silently reused or replaced.
    """
    out_path = Path(out_path)
    wanted = source_record(source, seed)
    if out_path.exists():
        try:
            built = json.loads(record_path(out_path).read_text())
        except (OSError, json.JSONDecodeError):
            raise SourceMismatch(
                f"{out_path} has no readable record of its source ({record_path(out_path).name}): "
                f"delete it to build the warehouse of {wanted['source']} there"
            ) from None
        if built == wanted:
            return None
        if (built.get("source"), built.get("seed")) != (wanted["source"], wanted.get("seed")):
            was = str(built.get("source")) + (f" (seed {built['seed']})" if "seed" in built else "")
            asked = wanted["source"] + (f" (seed {wanted['seed']})" if "seed" in wanted else "")
            raise SourceMismatch(
                f"{out_path} holds the warehouse of {was}, not {asked}: "
                "write to another folder, or delete it to rebuild"
            )
    counts = build_warehouse(source, out_path, seed)
    atomic.write_json(record_path(out_path), wanted)
    return counts
