"""README's "Use your own data" tables say what components/schema.py enforces: columns, order, types, null rules."""

import re
import sys
from pathlib import Path

import pyarrow as pa

from components import schema

README = Path(__file__).resolve().parents[1] / "README.md"
TYPES = {
    pa.string(): "STRING",
    pa.int64(): "INT64",
    pa.float64(): "FLOAT64",
    pa.bool_(): "BOOL",
    pa.timestamp("us", tz="UTC"): "TIMESTAMP",
}


def documented_tables() -> dict[str, list[tuple[str, str, str]]]:
    """{table: [(column, type, null rule)]} from the section's `**name**` headings and the table below each."""
    section = README.read_text().split("## Use your own data", 1)[1].split("\n## ", 1)[0]
    tables, current = {}, None
    for line in section.splitlines():
        heading = re.match(r"^\*\*(events|items|impressions)\*\*", line)
        if heading:
            current = heading.group(1)
            tables[current] = []
        elif current and line.startswith("| ") and not line.startswith(("| column", "|---")):
            column, kind, null = [cell.strip() for cell in line.strip("|").split("|")][:3]
            tables[current].append((column, kind, null))
        elif current and tables[current] and not line.startswith("|"):
            current = None
    return tables


def test_readme_documents_every_contract_table_as_schema_py_defines_it():
    expected = {
        name: [(f.name, TYPES[f.type], "optional" if f.nullable else "required") for f in table_schema]
        for name, table_schema in schema.TABLES.items()
    }
    assert documented_tables() == expected


def test_the_parser_sees_a_drifted_readme(monkeypatch, tmp_path):
    drifted = tmp_path / "README.md"
    drifted.write_text(README.read_text().replace("| price | FLOAT64 | optional |", "| price | FLOAT64 | required |"))
    monkeypatch.setattr(sys.modules[__name__], "README", drifted)
    assert ("price", "FLOAT64", "required") in documented_tables()["items"]
