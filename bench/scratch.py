"""A database of a bench run's own, on the server the bench is pointed at."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

__all__ = ["scratch_database"]


@contextmanager
def scratch_database(server_url: str, prefix: str) -> Iterator[str]:
    """The name of a new, empty database on ``server_url``'s server, dropped after
    (sessions still on it are ended)."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
