"""``/api/v1/users`` and ``/tokens`` (administrators), ``/me`` (everyone): people, their
role and communities, and their bearer tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, HTTPException, Query, status

from api.answers import found_or_404
from api.auth import Principal
from api.cursors import LimitQuery, id_page
from api.deps import ConnDep, SettingsDep, page_size
from api.problems import body_error
from api.registry_schemas import (
    TokenCreate,
    TokenCreated,
    TokenPublic,
    UserCreate,
    UserPatch,
    UserPublic,
    UsersPublic,
)
from api.scope import Authorized, OwnTokenId, TokenId, UserId
from store import accounts

__all__ = ["me_router", "router", "tokens_router"]

router = APIRouter(prefix="/users", tags=["users"])
tokens_router = APIRouter(prefix="/tokens", tags=["users"])
me_router = APIRouter(prefix="/me", tags=["users"])


def user_public(record: accounts.UserRecord) -> UserPublic:
    return UserPublic.model_validate(record, from_attributes=True)


def token_public(token: accounts.TokenInfo) -> TokenPublic:
    return TokenPublic.model_validate(token, from_attributes=True)


def _within_scope(
    principal: Principal, communities: Sequence[str] | None, everywhere: bool | None
) -> None:
    """A scoped administrator hands out only their own communities."""
    if principal.communities is None:
        return
    if everywhere:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="only an administrator of every community may grant every community",
        )
    for community in communities or ():
        if community not in principal.communities:
            raise body_error("communities", f"unknown community {community!r}")


@router.get("")
def users(
    conn: ConnDep,
    settings: SettingsDep,
    principal: Authorized,
    limit: LimitQuery = None,
    after: Annotated[int | None, Query(ge=0)] = None,
) -> UsersPublic:
    size = page_size(settings, limit)
    rows = accounts.list_users(conn, within=principal.communities, after=after, limit=size + 1)
    data, cursor = id_page(rows, size, user_public)
    return UsersPublic(data=data, next_cursor=cursor)


@router.post("", status_code=status.HTTP_201_CREATED)
def add_user(conn: ConnDep, principal: Authorized, body: UserCreate) -> UserPublic:
    """Create a user with a role and communities; then give them a token."""
    _within_scope(principal, body.communities, body.all_communities)
    try:
        created = accounts.create_user(
            conn, body.name, body.role, body.communities, all_communities=body.all_communities
        )
    except accounts.UserError as exc:
        if exc.field == "name":
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
        raise body_error(exc.field, str(exc)) from None
    return user_public(created)


def _user(conn: psycopg.Connection[Any], user_id: int) -> UserPublic:
    found = found_or_404(accounts.get_user(conn, user_id), f"no user {user_id}")
    return user_public(found)


@router.get("/{user_id}")
def user(conn: ConnDep, _p: Authorized, user_id: UserId) -> UserPublic:
    return _user(conn, user_id)


@router.patch("/{user_id}")
def change_user(
    conn: ConnDep, principal: Authorized, user_id: UserId, body: UserPatch
) -> UserPublic:
    """Change role or communities, or disable (a disabled user's tokens stop working)."""
    _within_scope(principal, body.communities, body.all_communities)
    _user(conn, user_id)
    try:
        updated = accounts.update_user(conn, user_id, **dict(body))
    except accounts.UserError as exc:
        raise body_error(exc.field, str(exc)) from None
    return user_public(updated)


def _token_public(conn: psycopg.Connection[Any], user_id: int) -> list[TokenPublic]:
    return [token_public(t) for t in accounts.list_tokens(conn, user_id)]


def _new_token(conn: psycopg.Connection[Any], user_id: int, body: TokenCreate) -> TokenCreated:
    try:
        secret = accounts.create_token(conn, body.name, body.expires_at, user_id=user_id)
    except ValueError as exc:
        field = "expires_at" if "expires_at" in str(exc) else "name"
        raise body_error(field, str(exc)) from None
    newest = max(_token_public(conn, user_id), key=lambda t: t.id)
    return TokenCreated(**newest.model_dump(), token=secret)


@router.get("/{user_id}/tokens")
def user_tokens(conn: ConnDep, _p: Authorized, user_id: UserId) -> list[TokenPublic]:
    """The user's tokens, revoked and expired ones included. Never the secrets."""
    return _token_public(conn, user_id)


@router.post("/{user_id}/tokens", status_code=status.HTTP_201_CREATED)
def add_user_token(
    conn: ConnDep, _p: Authorized, user_id: UserId, body: TokenCreate
) -> TokenCreated:
    """A bearer token for the user, shown once."""
    _user(conn, user_id)
    return _new_token(conn, user_id, body)


@tokens_router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke(conn: ConnDep, _p: Authorized, token_id: TokenId) -> None:
    accounts.revoke_token(conn, token_id)


@me_router.get("")
def me(conn: ConnDep, principal: Authorized) -> UserPublic:
    """Who this token belongs to: name, role, communities."""
    return _user(conn, principal.user_id)


@me_router.get("/tokens")
def my_tokens(conn: ConnDep, principal: Authorized) -> list[TokenPublic]:
    return _token_public(conn, principal.user_id)


@me_router.post("/tokens", status_code=status.HTTP_201_CREATED)
def add_my_token(conn: ConnDep, principal: Authorized, body: TokenCreate) -> TokenCreated:
    """Another token for yourself (a second device, a script), shown once."""
    return _new_token(conn, principal.user_id, body)


@me_router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_mine(conn: ConnDep, _p: Authorized, token_id: OwnTokenId) -> None:
    accounts.revoke_token(conn, token_id)
