"""Bearer tokens: create, list, revoke, and the dependency that checks them.

A token is ``sc_`` + 32 random bytes (base64url). Only its SHA-256 is stored. A fast
hash is right here: bcrypt/argon2 exist to slow down guessing low-entropy passwords,
and nobody can guess 256 random bits however fast the hash is. Looking the token up
by its hash (a unique index) also means no byte-by-byte comparison of the secret
happens in our code, so the check leaks nothing through timing.

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

__all__ = [
    "TOKEN_PREFIX",
    "CurrentToken",
    "TokenInfo",
    "create_token",
    "hash_token",
    "list_tokens",
    "require_token",
    "revoke_token",
]

TOKEN_PREFIX = "sc_"  # noqa: S105 a prefix that marks our tokens in logs and scanners, not a secret
# 32 bytes = 256 bits of entropy.
_TOKEN_BYTES = 32

_LIST = (
    "SELECT id, name, created_at, expires_at, revoked_at, last_used_at FROM api_tokens ORDER BY id"
)
_LOOKUP = (
    "SELECT id, name, created_at, expires_at, revoked_at, last_used_at,"
    " expires_at IS NOT NULL AND expires_at <= now() AS expired,"
    " last_used_at IS NULL OR last_used_at < now() - interval '1 minute' AS stale"
    " FROM api_tokens WHERE token_hash = %s"
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


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def create_token(
    conn: psycopg.Connection[Any], name: str, expires_at: datetime | None = None
) -> str:
    """Store a new token named ``name`` and return it; it cannot be shown again."""
    if not name.strip():
        raise ValueError("a token needs a name saying who or what uses it")
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware")
        if expires_at <= datetime.now(UTC):
            raise ValueError("expires_at is in the past")
    token = TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)
    with conn.transaction():
        conn.execute(
            "INSERT INTO api_tokens (name, token_hash, expires_at) VALUES (%s, %s, %s)",
            (name, hash_token(token), expires_at),
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


def list_tokens(conn: psycopg.Connection[Any]) -> list[TokenInfo]:
    """All tokens, revoked and expired ones included, oldest first. Never the secrets."""
    with conn.cursor(row_factory=class_row(TokenInfo)) as cur:
        cur.execute(_LIST)
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
) -> TokenInfo:
    """The token of this request, or 401 with ``WWW-Authenticate: Bearer``."""
    if credentials is None:
        raise _unauthorized("missing bearer token", invalid=False)
    row = conn.execute(_LOOKUP, (hash_token(credentials.credentials),)).fetchone()
    if row is None:
        raise _unauthorized("unknown bearer token", invalid=True)
    *fields, expired, stale = row
    token = TokenInfo(*fields)
    if token.revoked_at is not None:
        raise _unauthorized("bearer token revoked", invalid=True)
    if expired:
        raise _unauthorized("bearer token expired", invalid=True)
    if stale:
        conn.execute(_TOUCH, (token.id,))
    return token


CurrentToken = Annotated[TokenInfo, Depends(require_token)]
