"""The connections every store function takes (one spelling of their types for the
whole package: synchronous for the API, the CLI and the pipeline's threads,
asynchronous for the fire-panel bridge), and the reads many of them make: rows as
records, one value."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg import sql
from psycopg.abc import Params
from psycopg.rows import class_row

__all__ = ["AsyncConn", "Conn", "first_record", "records", "scalar"]

Conn = psycopg.Connection[Any]
AsyncConn = psycopg.AsyncConnection[Any]

T = TypeVar("T")
# What Connection.execute takes as a statement.
Statement = LiteralString | bytes | sql.SQL | sql.Composed


def scalar(conn: Conn, kind: Callable[[Any], T], query: Statement, params: Params) -> T | None:
    """The first column of ``query``'s first row as ``kind`` (e.g. ``int``); None when
    there is no row."""
    row = conn.execute(query, params).fetchone()
    return None if row is None else kind(row[0])


def records(conn: Conn, record: type[T], query: Statement, params: Params) -> list[T]:
    """``query``'s rows as ``record``s, built from their columns by name."""
    with conn.cursor(row_factory=class_row(record)) as cur:
        return cur.execute(query, params).fetchall()


def first_record(conn: Conn, record: type[T], query: Statement, params: Params) -> T | None:
    """``query``'s first row as a ``record``; None when there is none."""
    with conn.cursor(row_factory=class_row(record)) as cur:
        return cur.execute(query, params).fetchone()
