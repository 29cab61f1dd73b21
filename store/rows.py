"""The connections every store function takes (one spelling of their types for the
whole package: synchronous for the API, the CLI and the pipeline's threads,
asynchronous for the fire-panel bridge), and the one-value lookup many of them make."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg import sql
from psycopg.abc import Params

__all__ = ["AsyncConn", "Conn", "scalar"]

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
