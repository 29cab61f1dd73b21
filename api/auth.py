"""The dependency that turns a bearer token into a principal: who is asking, with the
role and communities of the token's user.

Tokens are made, listed and revoked in ``store.accounts`` (the CLI and the demo
make them too); ``core.tokens`` says what one is and how it is hashed. Tokens made
without naming a user belong to the built-in ``admin`` (migration 0004).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import ConnDep
from core.access import Role
from store.accounts import TokenInfo, lookup_token, touch_token

__all__ = [
    "CurrentPrincipal",
    "CurrentToken",
    "Principal",
    "TokenInfo",
    "require_token",
]


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
    found = lookup_token(conn, credentials.credentials)
    if found is None:
        raise _unauthorized("unknown bearer token", invalid=True)
    token = found.token
    principal = Principal(
        token.id,
        token.name,
        token.created_at,
        token.expires_at,
        token.revoked_at,
        token.last_used_at,
        user_id=token.user_id,
        user_name=token.user_name,
        role=found.role,
        communities=None if found.all_communities else frozenset(found.communities),
    )
    if principal.revoked_at is not None:
        raise _unauthorized("bearer token revoked", invalid=True)
    if found.expired:
        raise _unauthorized("bearer token expired", invalid=True)
    if found.disabled:
        raise _unauthorized("the token's user is disabled", invalid=True)
    if found.stale:
        touch_token(conn, principal.id)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(require_token)]
# The name routes written before users existed use; the same principal.
CurrentToken = CurrentPrincipal
