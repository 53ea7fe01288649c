"""BigQuery's own naming rules for projects, datasets and tables, checked before a name reaches a client or SQL.

A project id has 6 to 30 lower-case letters, digits and hyphens, starts with a letter and does not end with a
hyphen; a dataset name has up to 1,024 letters, digits and underscores; a table name up to 1,024 UTF-8 bytes
of letters, marks, numbers, connectors (underscore), dashes and spaces (Unicode L, M, N, Pc, Pd, Zs).
Legacy domain-scoped project ids (example.com:project) are not accepted: `bigquery://project.dataset` cannot
hold them unambiguously.
"""

from __future__ import annotations

import re
import unicodedata

URI_PREFIX = "bigquery://"
_PROJECT = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
_DATASET = re.compile(r"[A-Za-z0-9_]{1,1024}")
_TABLE_CATEGORIES = ("L", "M", "N", "Pc", "Pd", "Zs")
_TABLE_BYTES = 1024


def validate_project(project: str) -> str:
    """The project id if BigQuery would accept it; refused here with the rule, before any query is sent."""
    if not _PROJECT.fullmatch(project):
        raise ValueError(
            f"BigQuery project id {project!r} must be 6-30 lower-case letters, digits or hyphens, "
            "start with a letter and not end with a hyphen"
        )
    return project


def validate_dataset(dataset: str) -> str:
    """The dataset name if BigQuery would accept it; refused here with the rule, before any query is sent."""
    if not _DATASET.fullmatch(dataset):
        raise ValueError(f"BigQuery dataset name {dataset!r} must be 1-1024 letters, digits or underscores")
    return dataset


def validate_table(table: str) -> str:
    """The table name if BigQuery would accept it (length in bytes, allowed Unicode categories); refused otherwise."""
    if (
        not table
        or len(table.encode()) > _TABLE_BYTES
        or not all(unicodedata.category(c).startswith(_TABLE_CATEGORIES) for c in table)
    ):
        raise ValueError(
            f"BigQuery table name {table!r} must be 1-1024 bytes of letters, marks, numbers, "
            "underscores, dashes or spaces"
        )
    return table


def parse_dataset_uri(uri: str) -> tuple[str, str]:
    """(project, dataset) of `bigquery://project.dataset`, both checked."""
    project, sep, dataset = uri[len(URI_PREFIX) :].partition(".") if uri.startswith(URI_PREFIX) else ("", "", "")
    if not sep:
        raise ValueError(f"{uri!r} must be bigquery://project.dataset")
    return validate_project(project), validate_dataset(dataset)
