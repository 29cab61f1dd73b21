"""What the API's pooled connections carry: the role they work as, the request's
transaction, and the caller's communities that row-level security reads.

``sc.communities`` is set with ``set_config(..., true)``: local to the request's
transaction, so it ends with it however the request ends (``api.deps.get_conn``).
"""

from __future__ import annotations

import json

from psycopg import sql

from store.rows import Conn
from store.scoping import Communities

__all__ = [
    "begin",
    "left_over_scope",
    "scope_setting",
    "set_actor",
    "set_communities",
    "set_role",
]


_LEFT_OVER_SCOPE = (
    "SELECT nullif(current_setting('sc.actor', true), ''),"
    " nullif(current_setting('sc.communities', true), '')"
)


def set_role(conn: Conn, role: str) -> None:
    """The session works as ``role`` from here on (a role without BYPASSRLS)."""
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))


def begin(conn: Conn) -> None:
    """Open the request's one transaction on an autocommit connection."""
    conn.execute("BEGIN")


def scope_setting(communities: Communities) -> str:
    """The value of ``sc.communities`` that the row-level security policies read:
    ``*`` for every community, else a JSON array of community ids."""
    if communities is None:
        return "*"
    return json.dumps(sorted(communities))


def set_communities(conn: Conn, communities: Communities) -> None:
    """Row-level security for the rest of this transaction: ``communities`` only
    (None: every community)."""
    conn.execute("SELECT set_config('sc.communities', %s, true)", (scope_setting(communities),))


def left_over_scope(conn: Conn) -> tuple[str | None, str | None] | None:
    """(actor, communities) still set on the session; ``(None, None)`` when clean."""
    return conn.execute(_LEFT_OVER_SCOPE).fetchone()


def set_actor(conn: Conn, actor: str) -> None:
    """Who the audit log names for this session's changes (``sc.actor``)."""
    conn.execute("SELECT set_config('sc.actor', %s, false)", (actor,))
