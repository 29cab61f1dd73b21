"""Users, the communities their role applies to, and their API tokens, in the database.

The one writer of ``users``, ``user_communities`` and ``api_tokens``. Shared by the
API (routes, the token check), the CLI and the demo. Writes run in
``conn.transaction()``: committed on return on a connection without a transaction,
a savepoint inside a caller's transaction. Only a token's hash is stored
(``core.tokens``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import sql
from psycopg.rows import class_row

from core.access import Role
from core.tokens import hash_token, new_token
from store.rows import Conn, scalar

__all__ = [
    "BUILTIN_ADMIN",
    "TokenInfo",
    "TokenOwner",
    "UserError",
    "UserRecord",
    "add_member",
    "builtin_admin_id",
    "create_token",
    "create_user",
    "find_user",
    "get_user",
    "is_member",
    "list_tokens",
    "list_users",
    "lookup_token",
    "revoke_token",
    "revoke_token_by_hash",
    "token_user",
    "touch_token",
    "update_user",
    "user_scope",
]


# The user that owns tokens made without naming one (the CLI's default, the demo).
BUILTIN_ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    name: str
    role: Role
    all_communities: bool
    communities: list[str]
    created_at: datetime
    updated_at: datetime
    disabled_at: datetime | None


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: int
    name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    user_id: int = 0
    user_name: str = ""


@dataclass(frozen=True, slots=True)
class TokenOwner:
    """A token found by its hash, with its user's role and communities."""

    token: TokenInfo
    role: Role
    all_communities: bool
    communities: list[str]
    disabled: bool
    expired: bool
    # last_used_at is older than a minute: time to write it again.
    stale: bool


class UserError(ValueError):
    """A user that cannot be made as asked: a name taken, a community unknown."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# --- users ----------------------------------------------------------------------------------

_SELECT = sql.SQL(
    "SELECT u.id, u.name, u.role, u.all_communities,"
    " array(SELECT c.community_id FROM user_communities AS c WHERE c.user_id = u.id"
    " ORDER BY c.community_id) AS communities, u.created_at, u.updated_at, u.disabled_at"
    " FROM users AS u"
)


def _user(row: tuple[Any, ...]) -> UserRecord:
    user_id, name, role, everywhere, communities, created, updated, disabled = row
    return UserRecord(
        user_id, name, Role(role), everywhere, communities, created, updated, disabled
    )


def get_user(conn: Conn, user_id: int) -> UserRecord | None:
    row = conn.execute(sql.SQL("{} WHERE u.id = %s").format(_SELECT), (user_id,)).fetchone()
    return None if row is None else _user(row)


def find_user(conn: Conn, name: str) -> UserRecord | None:
    row = conn.execute(sql.SQL("{} WHERE u.name = %s").format(_SELECT), (name,)).fetchone()
    return None if row is None else _user(row)


def list_users(
    conn: Conn, *, within: Collection[str] | None, after: int | None, limit: int
) -> list[UserRecord]:
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
    return [_user(row) for row in conn.execute(query, [*params, limit])]


def user_scope(conn: Conn, user_id: int) -> tuple[bool, list[str]] | None:
    """Whether the user has every community, and their listed ones; None: no such user."""
    row = conn.execute(
        "SELECT u.all_communities,"
        " array(SELECT community_id FROM user_communities WHERE user_id = u.id)"
        " FROM users AS u WHERE u.id = %s",
        (user_id,),
    ).fetchone()
    return None if row is None else (bool(row[0]), list(row[1]))


def is_member(conn: Conn, user_id: int, community_id: str) -> bool:
    """Whether the user is listed in the community (``all_communities`` aside)."""
    return (
        conn.execute(
            "SELECT 1 FROM user_communities WHERE user_id = %s AND community_id = %s",
            (user_id, community_id),
        ).fetchone()
        is not None
    )


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


def add_member(conn: Conn, user_id: int, community_id: str) -> None:
    """List the user in one more community (an administrator creating it)."""
    conn.execute(
        "INSERT INTO user_communities (user_id, community_id) VALUES (%s, %s)",
        (user_id, community_id),
    )


def create_user(
    conn: Conn,
    name: str,
    role: Role,
    communities: Sequence[str] = (),
    *,
    all_communities: bool = False,
) -> UserRecord:
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
) -> UserRecord:
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


def builtin_admin_id(conn: Conn) -> int:
    """The built-in administrator's id, recreated if someone removed it."""
    find = "SELECT id FROM users WHERE name = %s"
    row = conn.execute(find, (BUILTIN_ADMIN,)).fetchone()
    if row is None:
        with conn.transaction():
            conn.execute(
                "INSERT INTO users (name, role, all_communities) VALUES (%s, 'admin', true)"
                " ON CONFLICT (name) DO NOTHING",
                (BUILTIN_ADMIN,),
            )
        row = conn.execute(find, (BUILTIN_ADMIN,)).fetchone()
    assert row is not None  # inserted above, by us or a concurrent caller
    return int(row[0])


# --- tokens ---------------------------------------------------------------------------------

_LIST = (
    "SELECT t.id, t.name, t.created_at, t.expires_at, t.revoked_at, t.last_used_at,"
    " t.user_id, u.name AS user_name FROM api_tokens AS t JOIN users AS u ON u.id = t.user_id"
    " WHERE %(user)s::bigint IS NULL OR t.user_id = %(user)s ORDER BY t.id"
)
# The actor of every change this request makes: the audit triggers read sc.actor.
# Local to the request's transaction (api.deps.get_conn): it ends with it.
_LOOKUP = (
    "SELECT t.id, t.name, t.created_at, t.expires_at, t.revoked_at, t.last_used_at,"
    " u.id, u.name, u.role, u.all_communities,"
    " array(SELECT c.community_id FROM user_communities AS c WHERE c.user_id = u.id),"
    " u.disabled_at IS NOT NULL AS disabled,"
    " t.expires_at IS NOT NULL AND t.expires_at <= now() AS expired,"
    " t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute' AS stale,"
    " set_config('sc.actor', 'user:' || u.name, true)"
    " FROM api_tokens AS t JOIN users AS u ON u.id = t.user_id WHERE t.token_hash = %s"
)
# Writing last_used_at on every request would turn every read into a write;
# once a minute is precise enough to see which tokens are in use.
_TOUCH = (
    "UPDATE api_tokens SET last_used_at = now() WHERE id = %s"
    " AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')"
)


def create_token(
    conn: Conn,
    name: str,
    expires_at: datetime | None = None,
    *,
    user_id: int | None = None,
) -> str:
    """Store a new token named ``name`` for a user (default: the built-in admin) and
    return it; it cannot be shown again."""
    if not name.strip():
        raise ValueError("a token needs a name saying who or what uses it")
    if len(name) > 200:
        raise ValueError("a token name has at most 200 characters")
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware")
        if expires_at <= datetime.now(UTC):
            raise ValueError("expires_at is in the past")
    owner = builtin_admin_id(conn) if user_id is None else user_id
    token = new_token()
    with conn.transaction():
        row = conn.execute(
            "SELECT disabled_at IS NULL FROM users WHERE id = %s", (owner,)
        ).fetchone()
        if row is None or not row[0]:
            raise ValueError(f"no active user with id {owner}")
        conn.execute(
            "INSERT INTO api_tokens (name, token_hash, expires_at, user_id)"
            " VALUES (%s, %s, %s, %s)",
            (name, hash_token(token), expires_at, owner),
        )
    return token


def revoke_token(conn: Conn, token_id: int) -> bool:
    """Revoke by id (see ``list_tokens``); False if no such active token."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
            (token_id,),
        )
        return cur.rowcount == 1


def revoke_token_by_hash(conn: Conn, token: str) -> None:
    """Revoke the token itself (a run's own token, when the run ends)."""
    with conn.transaction():
        conn.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE token_hash = %s", (hash_token(token),)
        )


def list_tokens(conn: Conn, user_id: int | None = None) -> list[TokenInfo]:
    """Tokens (of one user, or all), revoked and expired ones included, oldest first.
    Never the secrets."""
    with conn.cursor(row_factory=class_row(TokenInfo)) as cur:
        cur.execute(_LIST, {"user": user_id})
        return cur.fetchall()


def token_user(conn: Conn, token_id: int) -> int | None:
    """The user a token belongs to; None: no such token."""
    return scalar(conn, int, "SELECT user_id FROM api_tokens WHERE id = %s", (token_id,))


def lookup_token(conn: Conn, token: str) -> TokenOwner | None:
    """The token and its user, and (as a side effect the audit triggers need) the
    transaction's ``sc.actor`` set to that user. None: no such token."""
    row = conn.execute(_LOOKUP, (hash_token(token),)).fetchone()
    if row is None:
        return None
    (token_id, name, created_at, expires_at, revoked_at, last_used_at) = row[:6]
    (user_id, user_name, role, everywhere, communities, disabled, expired, stale) = row[6:14]
    info = TokenInfo(
        token_id,
        name,
        created_at,
        expires_at,
        revoked_at,
        last_used_at,
        user_id=user_id,
        user_name=user_name,
    )
    return TokenOwner(info, Role(role), everywhere, list(communities), disabled, expired, stale)


def touch_token(conn: Conn, token_id: int) -> None:
    conn.execute(_TOUCH, (token_id,))
