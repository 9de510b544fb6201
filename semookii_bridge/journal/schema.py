"""The tables both journals keep, defined once: each column's name, kind and constraint, written out as the
SQL of SQLite or of PostgreSQL. Each backend adds only its own indexes (and PostgreSQL its lease and member
tables); the commands table's columns are `protocol.COLUMNS`, in that order."""

from __future__ import annotations

from typing import Literal

Dialect = Literal["sqlite", "postgres"]
TYPES: dict[Dialect, dict[str, str]] = {
    "sqlite": {"text": "TEXT", "bytes": "BLOB", "real": "REAL", "int": "INTEGER"},
    "postgres": {"text": "TEXT", "bytes": "BYTEA", "real": "DOUBLE PRECISION", "int": "INTEGER"},
}
ONE_ROW = "PRIMARY KEY CHECK (id = 1)"
TABLES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "commands": (
        ("request_id", "text", "PRIMARY KEY"),
        ("target_kind", "text", "NOT NULL"),
        ("target_id", "text", ""),
        ("command", "bytes", "NOT NULL"),
        ("status", "text", "NOT NULL"),
        ("received_at", "real", "NOT NULL"),
        ("deadline", "real", "NOT NULL"),
        ("delivery_hash", "text", ""),
        ("command_id", "text", ""),
        ("task_id", "text", ""),
        ("track_until", "real", ""),
        ("response_topic", "text", ""),
        ("correlation", "bytes", ""),
        ("updated_at", "real", "NOT NULL"),
        ("results", "bytes", ""),
        ("error", "bytes", ""),
        ("announced", "int", "NOT NULL DEFAULT 0"),
    ),
    "api_calls": (("day", "text", "PRIMARY KEY"), ("used", "int", "NOT NULL")),
    "clock": (
        ("id", "int", ONE_ROW),
        ("boot_id", "text", ""),
        ("offset", "real", "NOT NULL"),
        ("high", "real", "NOT NULL"),
    ),
    "limiter": (
        ("id", "int", ONE_ROW),
        ("tokens", "real", "NOT NULL"),
        ("stamp", "real", "NOT NULL"),
        ("paused_until", "real", "NOT NULL"),
        ("banned_until", "real", "NOT NULL"),
    ),
    "plans": (
        ("target", "text", "PRIMARY KEY"),
        ("plan_id", "text", "NOT NULL"),
        ("body", "bytes", "NOT NULL"),
        ("status", "text", "NOT NULL"),
        ("next_index", "int", "NOT NULL"),
        ("sent", "int", "NOT NULL"),
        ("missed", "int", "NOT NULL"),
        ("error", "bytes", ""),
        ("updated_at", "real", "NOT NULL"),
    ),
}
"""The commands, the quota's calls per day, the timeline's anchor, the rate limiter's bucket and each target's
dispatch plan (its columns are `protocol.PLAN_COLUMNS`, in that order)."""


def create_tables(dialect: Dialect) -> str:
    """`CREATE TABLE IF NOT EXISTS` for every table, in `dialect` (names quoted: `offset` is a keyword)."""
    types = TYPES[dialect]
    return "".join(
        f"CREATE TABLE IF NOT EXISTS {table} ("
        + ", ".join(f'"{name}" {types[kind]} {constraint}'.rstrip() for name, kind, constraint in columns)
        + ");\n"
        for table, columns in TABLES.items()
    )
