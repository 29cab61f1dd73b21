"""Bearer tokens: create, list, revoke, and the dependency that turns one into a principal.

A token is ``sc_`` + 32 random bytes (base64url). Only its SHA-256 is stored. A fast
hash is right here: bcrypt/argon2 exist to slow down guessing low-entropy passwords,
and nobody can guess 256 random bits however fast the hash is. Looking the token up
by its hash (a unique index) also means no byte-by-byte comparison of the secret
happens in our code, so the check leaks nothing through timing.

Every token belongs to a user (``api/accounts.py``), whose role and communities it
carries. Tokens made without naming a user belong to the built-in ``admin``, as the
tokens made before users existed do (migration 0004).

The token functions take a plain psycopg connection so the CLI can call them.
They run in ``conn.transaction()``: committed on return on a connection without a
transaction, a savepoint inside a caller's transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import psycopg
from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg.rows import class_row

from api.deps import ConnDep
from core.access import Role

__all__ = [
    "BUILTIN_ADMIN",
    "TOKEN_PREFIX",
    "CurrentPrincipal",
    "CurrentToken",
    "Principal",
    "TokenInfo",
    "builtin_admin_id",
    "create_token",
    "hash_token",
    "list_tokens",
    "require_token",
    "revoke_token",
]

TOKEN_PREFIX = "sc_"  # noqa: S105 a prefix that marks our tokens in logs and scanners, not a secret
# 32 bytes = 256 bits of entropy.
_TOKEN_BYTES = 32
# The user that owns tokens made without naming one (the CLI's default, the demo).
BUILTIN_ADMIN = "admin"

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
class Principal(TokenInfo):
    """Who is asking: the token, its user, the user's role and communities."""

    role: Role = Role.VIEWER
    # None: every community (present and future); otherwise exactly these.
    communities: frozenset[str] | None = frozenset()

    @property
    def actor(self) -> str:
        return f"user:{self.user_name}"

    def sees(self, community_id: str | None) -> bool:
        """Whether the community is one of the user's. None (global things) is everyone's."""
        if community_id is None or self.communities is None:
            return True
        return community_id in self.communities


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def builtin_admin_id(conn: psycopg.Connection[Any]) -> int:
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


def create_token(
    conn: psycopg.Connection[Any],
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
    token = TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)
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


def revoke_token(conn: psycopg.Connection[Any], token_id: int) -> bool:
    """Revoke by id (see ``list_tokens``); False if no such active token."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
            (token_id,),
        )
        return cur.rowcount == 1


def list_tokens(conn: psycopg.Connection[Any], user_id: int | None = None) -> list[TokenInfo]:
    """Tokens (of one user, or all), revoked and expired ones included, oldest first.
    Never the secrets."""
    with conn.cursor(row_factory=class_row(TokenInfo)) as cur:
        cur.execute(_LIST, {"user": user_id})
        return cur.fetchall()


_bearer = HTTPBearer(auto_error=False, description="A token from `smartcommunity token create`")


def _unauthorized(detail: str, *, invalid: bool) -> HTTPException:
    # RFC 6750 section 3: no error code when no credentials were sent at all.
    challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": challenge}
    )


def require_token(
    conn: ConnDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The principal of this request, or 401 with ``WWW-Authenticate: Bearer``."""
    if credentials is None:
        raise _unauthorized("missing bearer token", invalid=False)
    row = conn.execute(_LOOKUP, (hash_token(credentials.credentials),)).fetchone()
    if row is None:
        raise _unauthorized("unknown bearer token", invalid=True)
    (token_id, name, created_at, expires_at, revoked_at, last_used_at) = row[:6]
    (user_id, user_name, role, everywhere, communities, disabled, expired, stale) = row[6:14]
    principal = Principal(
        token_id,
        name,
        created_at,
        expires_at,
        revoked_at,
        last_used_at,
        user_id=user_id,
        user_name=user_name,
        role=Role(role),
        communities=None if everywhere else frozenset(communities),
    )
    if principal.revoked_at is not None:
        raise _unauthorized("bearer token revoked", invalid=True)
    if expired:
        raise _unauthorized("bearer token expired", invalid=True)
    if disabled:
        raise _unauthorized("the token's user is disabled", invalid=True)
    if stale:
        conn.execute(_TOUCH, (principal.id,))
    return principal


CurrentPrincipal = Annotated[Principal, Depends(require_token)]
# The name routes written before users existed use; the same principal.
CurrentToken = CurrentPrincipal
