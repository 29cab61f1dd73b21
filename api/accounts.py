"""Users: a role and the communities it applies to. Shared by the API and the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from api.registry_schemas import UserPublic
from core.access import Role

__all__ = ["UserError", "create_user", "find_user", "get_user", "list_users", "update_user"]

Conn = psycopg.Connection[Any]

_SELECT = sql.SQL(
    "SELECT u.id, u.name, u.role, u.all_communities,"
    " array(SELECT c.community_id FROM user_communities AS c WHERE c.user_id = u.id"
    " ORDER BY c.community_id) AS communities, u.created_at, u.updated_at, u.disabled_at"
    " FROM users AS u"
)


class UserError(ValueError):
    """A user that cannot be made as asked: a name taken, a community unknown."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def get_user(conn: Conn, user_id: int) -> UserPublic | None:
    with conn.cursor(row_factory=class_row(UserPublic)) as cur:
        return cur.execute(sql.SQL("{} WHERE u.id = %s").format(_SELECT), (user_id,)).fetchone()


def find_user(conn: Conn, name: str) -> UserPublic | None:
    with conn.cursor(row_factory=class_row(UserPublic)) as cur:
        return cur.execute(sql.SQL("{} WHERE u.name = %s").format(_SELECT), (name,)).fetchone()


def list_users(
    conn: Conn, *, within: frozenset[str] | None, after: int | None, limit: int
) -> list[UserPublic]:
    """Users by id; ``within``: only users all of whose communities are among these."""
    where: list[sql.Composable] = [sql.SQL("u.id > %s")]
    params: list[object] = [after or 0]
    if within is not None:
        where.append(
            sql.SQL(
                "NOT u.all_communities"
                " AND EXISTS (SELECT 1 FROM user_communities AS c WHERE c.user_id = u.id)"
                " AND NOT EXISTS (SELECT 1 FROM user_communities AS c"
                " WHERE c.user_id = u.id AND NOT c.community_id = ANY(%s))"
            )
        )
        params.append(sorted(within))
    query = sql.SQL("{} WHERE {} ORDER BY u.id LIMIT %s").format(
        _SELECT, sql.SQL(" AND ").join(where)
    )
    with conn.cursor(row_factory=class_row(UserPublic)) as cur:
        return cur.execute(query, [*params, limit]).fetchall()


def _set_communities(conn: Conn, user_id: int, communities: Sequence[str]) -> None:
    wanted = sorted(set(communities))
    known = {r[0] for r in conn.execute("SELECT id FROM communities WHERE id = ANY(%s)", (wanted,))}
    unknown = [c for c in wanted if c not in known]
    if unknown:
        raise UserError("communities", f"unknown community {unknown[0]!r}")
    conn.execute(
        "DELETE FROM user_communities WHERE user_id = %s AND NOT community_id = ANY(%s)",
        (user_id, wanted),
    )
    conn.execute(
        "INSERT INTO user_communities (user_id, community_id)"
        " SELECT %s, c FROM unnest(%s::text[]) AS c ON CONFLICT DO NOTHING",
        (user_id, wanted),
    )


def create_user(
    conn: Conn,
    name: str,
    role: Role,
    communities: Sequence[str] = (),
    *,
    all_communities: bool = False,
) -> UserPublic:
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO users (name, role, all_communities) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO NOTHING RETURNING id",
            (name, role.value, all_communities),
        ).fetchone()
        if row is None:
            raise UserError("name", f"user {name!r} already exists")
        _set_communities(conn, int(row[0]), communities)
    created = get_user(conn, int(row[0]))
    assert created is not None
    return created


def update_user(
    conn: Conn,
    user_id: int,
    *,
    role: Role | None = None,
    communities: Sequence[str] | None = None,
    all_communities: bool | None = None,
    disabled: bool | None = None,
) -> UserPublic:
    with conn.transaction():
        conn.execute(
            "UPDATE users SET role = coalesce(%s, role),"
            " all_communities = coalesce(%s, all_communities),"
            " disabled_at = CASE WHEN %s::boolean IS NULL THEN disabled_at"
            " WHEN %s::boolean THEN coalesce(disabled_at, now()) ELSE NULL END,"
            " updated_at = now() WHERE id = %s",
            (role.value if role else None, all_communities, disabled, disabled, user_id),
        )
        if communities is not None:
            _set_communities(conn, user_id, communities)
    updated = get_user(conn, user_id)
    assert updated is not None
    return updated
